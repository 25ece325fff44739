"""Frozen domain objects that pass between the stages.

An ECS event itself stays a plain mapping: its shape is defined by ECS and by
the pipelines in `pipelines/`, not by Python classes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal, Mapping, NamedTuple

from secmon.types import DeliveryKind, DeliveryStatus, Detector, IncidentStatus


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


class Event(NamedTuple):
    """One normalized ECS document, with the id it is stored under.

    A NamedTuple, not a frozen dataclass: the collector makes one a line, and a frozen dataclass's
    `__init__` (one `object.__setattr__` a field) was about a quarter of the instructions a line spends
    between the document and its id (bench/ingest/instructions.py); `tuple.__new__(Event, (id, doc))`
    makes one in a single call. Immutable all the same. (Its `index` field, never filled, went: it
    would have shadowed `tuple.index`.)
    """

    id: str
    doc: Mapping[str, Any]


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
    length: int | None = None  # bytes of the record as written, when `raw` is only its head


@dataclass(frozen=True)
class Contribution:
    """One feature's part in an anomaly: what it was, what is usual, how much it set the window apart."""

    feature: str
    actual: float
    typical: float | None  # the entity's own median over the baseline (None: the entity has no history)
    percentile: float  # where `actual` falls among the baseline windows of every entity (0-100)
    share: float  # this feature's share of the isolation (the shares of a window add up to 1)


@dataclass(frozen=True)
class Explanation:
    """Why an anomaly detector raised a window: its score, the features behind it, values never seen."""

    score: float
    threshold: float
    model: str  # detector:agency of the model that scored it ("*": the centre-wide model)
    contributions: tuple[Contribution, ...]
    new_values: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (feature, values new or rare to the baseline)
    query: str = ""  # a Kibana (KQL) query showing the window's raw events
    note: str = ""
    # Scored by the centre-wide model because the agency has too little baseline of its own:
    # said in every rendering (in the reader's language, so a flag rather than a sentence).
    centre_wide: bool = False


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
    translations: tuple[tuple[str, str, str], ...] = ()  # (language, title, description) beyond English
    detector: Detector = "rule"
    # Events of the burst inside the scan's window (the rest is context seen by earlier scans):
    # what this finding adds to its incident's count. None: all of them (`count`).
    new_count: int | None = None
    explanation: Explanation | None = None  # anomaly findings: why the window was raised
    # A single rule's matches less than its timespan (suppression) apart are one burst: a finding
    # that comes this close to an incident's activity continues it, even where a scan saw only part
    # of the burst (incidents/grouping.py). Zero: only overlapping bursts are one.
    joins: timedelta = timedelta(0)

    @property
    def group_key(self) -> str:
        """What one open incident stands for: (detector, rule, agency, group)."""
        return stable_id("group", self.detector, self.rule_id, self.agency, self.group)

    @property
    def incident_id(self) -> str:
        # The start of the burst identifies a new incident: a second scan over the same data
        # finds the same first event and therefore the same id (a create that meets it is success).
        return stable_id("incident", self.rule_id, self.agency, self.group, self.first_seen.isoformat())

    def title(self, language: str) -> str:
        return next((t for lang, t, _ in self.translations if lang == language), self.rule_title)

    def text(self, language: str) -> str:
        return next((d for lang, _, d in self.translations if lang == language and d), self.description)


@dataclass(frozen=True)
class Change:
    """One step of an incident's lifecycle: who did what, when and why."""

    at: datetime
    action: str  # opened, grew, escalated, acknowledged, closed, reopened
    user: str
    note: str = ""
    status: IncidentStatus = "open"


@dataclass(frozen=True)
class Incident:
    """One open-or-closed case per (detector, rule, agency, group): its merged findings and lifecycle.

    `finding` is the merged view: first and last seen over the whole episode,
    the event count, and the highest severity seen.
    """

    id: str
    finding: Finding
    status: IncidentStatus = "open"
    created: datetime | None = None
    occurrences: int = 1  # disjoint bursts folded into it
    resolution: str = ""  # with status closed: true_positive, benign or false_positive
    updated: datetime | None = None
    history: tuple[Change, ...] = ()


NotificationReason = Literal["opened", "escalated", "reminder"]


@dataclass(frozen=True)
class Notification:
    """Why an incident must be told now. `key` makes it idempotent: the same reason twice is one email."""

    incident: Incident
    reason: NotificationReason
    key: str  # "opened", "severity:high", "reminder:3": part of the outbox ids


@dataclass(frozen=True)
class Delivery:
    """One email to one recipient (an outbox document), rendered when queued, so a resend is the same email."""

    id: str
    kind: DeliveryKind
    agencies: tuple[str, ...]
    recipient: str
    language: str
    timezone: str
    subject: str
    text: str
    html: str
    message_id: str  # derived from the id: a resend after a crash carries the same Message-ID
    incident_ids: tuple[str, ...] = ()
    status: DeliveryStatus = "pending"
    attempts: int = 0
    queued: datetime | None = None  # when queued or re-queued by `secmon alerts retry`: max_age counts from here
    next_attempt: datetime | None = None
    sent_at: datetime | None = None
    last_error: str = ""
    smtp_code: int | None = None
    digest_id: str = ""  # an alert folded into an overflow digest by the hourly cap: that digest's id


@dataclass(frozen=True)
class ScanWindow:
    """What a scan covers: events whose `field` is in [start, end).

    `@timestamp` for a scan by event time (the CLI's --from/--to); `event.ingested` for the
    scheduler, which scans what reached Elasticsearch since its watermark, however old the events.
    Bursts and correlations are always evaluated on @timestamp, with context before and after.
    """

    start: datetime
    end: datetime
    field: Literal["@timestamp", "event.ingested"] = "@timestamp"


@dataclass(frozen=True)
class InputReport:
    """What an offline scan (`scan --input`) read from one file: nothing passed over unsaid."""

    path: str
    reader: str  # how it was read: "evtx, windows-evtx", "json, windows-evtx", "json, ECS", a pipeline id
    events: int  # became events and were matched
    dead_letters: int  # could not become events (unreadable, rejected by the pipeline): not matched
    skipped: int = 0  # dropped on purpose by the pipeline (a header line, a drop condition)
    reasons: tuple[tuple[str, int], ...] = ()  # dead-letter reasons, most frequent first, with their counts
    first: str = ""  # where the first dead letter is (line or offset)
    lost: int = 0  # events known lost in damaged EVTX data
    url_undecodable: int = 0  # events whose URL could not be decoded exactly (tagged url_undecodable), matched


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
    suppressed: int = 0  # findings dropped by suppressions in force
    notifications: int = 0  # notifications queued (new incidents, escalations, reminders)
    unknown_agencies: tuple[str, ...] = ()  # matched events of agencies not in the config
    requests: int = 0  # search requests the rules cost
    inputs: tuple[InputReport, ...] = ()  # offline scans: what was read from each file
