"""The triage flow: what analysts do with incidents (list, show, ack, close, reopen) and with
exceptions and suppressions. Every change is audited with who made it and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from secmon.config import Settings
from secmon.incidents import exceptions, lifecycle, records
from secmon.incidents.exceptions import Exclusion
from secmon.incidents.grouping import State
from secmon.service.common import actor, audit, indices_of
from secmon.store.client import reporting
from secmon.types import iso

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

Action = Literal["ack", "close", "reopen"]
MAX_EVENTS = 50


@dataclass(frozen=True)
class Shown:
    state: State
    events: tuple[dict[str, Any], ...]  # the incident's sample events as stored (_id, _index, _source)
    more_events: int  # sample ids the incident has beyond those shown


def show(es: Elasticsearch, settings: Settings, ident: str) -> Shown:
    indices = indices_of(settings)
    state, _ = records.get(es, indices, ident)
    ids = list(state.incident.finding.sample_event_ids)
    events: list[dict[str, Any]] = []
    if ids:
        with reporting(es, "read the incident's events"):
            response = es.search(index=indices.events_pattern(state.incident.finding.agency),
                                 query={"ids": {"values": ids[:MAX_EVENTS]}}, size=MAX_EVENTS,
                                 sort=[{"@timestamp": "asc"}], ignore_unavailable=True, allow_no_indices=True)
        events = response["hits"]["hits"]
    return Shown(state, tuple(events), max(0, len(ids) - MAX_EVENTS))


def transition(es: Elasticsearch, settings: Settings, ident: str, action: Action, note: str, now: datetime,
               resolution: str = "") -> State:
    indices = indices_of(settings)
    user = actor(settings)
    state, version = records.get(es, indices, ident)
    before = state.incident.status
    if action == "ack":
        changed = lifecycle.acknowledge(state, user, note, now)
    elif action == "close":
        changed = lifecycle.close(state, user, resolution, note, now)
    else:
        changed = lifecycle.reopen(state, user, note, now)
    records.save(es, indices, changed, version)
    audit(es, indices, f"incident-{action}", "success", now,
          {"incident_id": changed.incident.id, "from": before, "to": changed.incident.status,
           "resolution": changed.incident.resolution, "note": note},
          agency=changed.incident.finding.agency, user=user)
    return changed


def add_exclusion(es: Elasticsearch, settings: Settings, kind: Literal["exception", "suppression"], rule: str,
                  agency: str, conditions: Sequence[tuple[str, str]], expires: datetime, reason: str,
                  now: datetime) -> Exclusion:
    if agency != exceptions.ANY:
        settings.agency(agency)  # an unknown agency is an error, not an exception that never applies
    indices = indices_of(settings)
    item = exceptions.new(kind, rule, agency, conditions, expires, reason, actor(settings), now)
    exceptions.save(es, indices, item)
    audit(es, indices, f"{kind}-add", "success", now,
          {"id": item.id, "rule": rule, "conditions": [f"{f}={v}" for f, v in conditions],
           "expires": iso(expires), "reason": reason},
          agency=None if agency == exceptions.ANY else agency, user=item.author)
    return item


def remove_exclusion(es: Elasticsearch, settings: Settings, ident: str, reason: str, now: datetime) -> Exclusion:
    indices = indices_of(settings)
    item = exceptions.remove(es, indices, ident)
    audit(es, indices, f"{item.kind}-remove", "success", now,
          {"id": item.id, "rule": item.rule, "reason": reason},
          agency=None if item.agency == exceptions.ANY else item.agency, user=actor(settings))
    return item


def list_exclusions(es: Elasticsearch, settings: Settings, now: datetime, include_expired: bool
                    ) -> list[Exclusion]:
    return exceptions.load(es, indices_of(settings), None if include_expired else now)
