"""Frozen domain objects that pass between the stages.

An ECS event itself stays a plain mapping: its shape is defined by ECS and by
the pipelines in `pipelines/`, not by Python classes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Mapping


class Severity(str, Enum):
    """Sigma `level` values, lowest first."""

    INFORMATIONAL = "informational"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


def stable_id(*parts: object) -> str:
    """A deterministic id: the same inputs give the same document id in any process.

    Re-running a scan or re-shipping a file must overwrite, never duplicate.
    """
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8"))
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class Event:
    """One normalized ECS document, with the id it is stored under."""

    id: str
    doc: Mapping[str, Any]
    index: str = ""  # filled in when the event comes back from Elasticsearch


@dataclass(frozen=True)
class DeadLetter:
    """A raw input that could not become an event, and why."""

    id: str
    raw: str
    reason: str
    pipeline: str
    source: str  # file path, syslog peer, ...
    offset: int | None
    agency: str


@dataclass(frozen=True)
class Finding:
    """What one rule found in one scan window, before deduplication."""

    rule_id: str
    rule_title: str
    severity: Severity
    agency: str
    group: tuple[tuple[str, str], ...]  # (field, value) pairs the rule grouped by
    first_seen: datetime
    last_seen: datetime
    count: int
    sample_event_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""

    @property
    def incident_id(self) -> str:
        # The start of the burst identifies it: a second scan over the same data
        # finds the same first event and therefore the same incident.
        return stable_id("incident", self.rule_id, self.agency, self.group, self.first_seen.isoformat())


@dataclass(frozen=True)
class Incident:
    id: str
    finding: Finding
    status: str = "open"
    created: datetime | None = None


@dataclass(frozen=True)
class Delivery:
    """One alert email to one agency about one or more incidents (the outbox entry)."""

    id: str
    incident_ids: tuple[str, ...]
    agency: str
    recipients: tuple[str, ...]
    language: str
    subject: str
    body: str
    status: str = "pending"  # pending -> sent
    attempts: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class ScanSummary:
    id: str
    started: datetime
    window_from: datetime
    window_to: datetime
    rules_run: int
    rules_failed: tuple[tuple[str, str], ...]  # (rule id, reason)
    incidents: tuple[Incident, ...]
    new_incident_ids: tuple[str, ...]
    deliveries_sent: int
    deliveries_pending: int
    notes: tuple[str, ...] = field(default=())
