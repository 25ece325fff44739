"""Persist incidents. The same finding twice is one incident, written once.

The id derives from (rule, agency, group, first event), so a re-run finds the
document already there. A burst that grew since (more events, later last_seen)
updates the stored incident; an unchanged one is not written at all, so a
repeated scan changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from elasticsearch import Elasticsearch

from secmon.errors import StoreUnavailable
from secmon.model import Finding, Incident, Severity
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.types import iso


@dataclass(frozen=True)
class Recorded:
    incident: Incident
    is_new: bool
    changed: bool


def to_doc(finding: Finding, scan_id: str, created: datetime) -> dict[str, Any]:
    techniques = [t.split(".", 1)[1].upper() for t in finding.tags if t.startswith("attack.t")]
    return {
        "@timestamp": iso(finding.first_seen),
        "organization": {"id": finding.agency},
        "rule": {"id": finding.rule_id, "name": finding.rule_title, "description": finding.description},
        "event": {"kind": "alert", "severity": finding.severity.rank, "start": iso(finding.first_seen),
                  "end": iso(finding.last_seen), "count": finding.count, "created": iso(created)},
        "secmon": {"severity": finding.severity.value, "status": "open",
                   "group": [f"{k}={v}" for k, v in finding.group], "group_fields": [k for k, _ in finding.group],
                   "sample_event_ids": list(finding.sample_event_ids), "scan_id": scan_id, "detector": "rule"},
        "threat": {"technique": {"id": techniques}},
        "tags": list(finding.tags),
    }


def from_doc(incident_id: str, doc: dict[str, Any]) -> Incident:
    group = tuple(tuple(item.split("=", 1)) for item in doc["secmon"]["group"])
    finding = Finding(
        rule_id=doc["rule"]["id"], rule_title=doc["rule"]["name"], severity=Severity(doc["secmon"]["severity"]),
        agency=doc["organization"]["id"], group=group,  # type: ignore[arg-type]
        first_seen=datetime.fromisoformat(doc["event"]["start"].replace("Z", "+00:00")),
        last_seen=datetime.fromisoformat(doc["event"]["end"].replace("Z", "+00:00")),
        count=doc["event"]["count"], sample_event_ids=tuple(doc["secmon"]["sample_event_ids"]),
        tags=tuple(doc.get("tags", ())), description=doc["rule"].get("description", ""),
    )
    created = datetime.fromisoformat(doc["event"]["created"].replace("Z", "+00:00"))
    return Incident(incident_id, finding, doc["secmon"]["status"], created)


def record(es: Elasticsearch, indices: Indices, findings: Iterable[Finding], scan_id: str, now: datetime
           ) -> list[Recorded]:
    findings = list(findings)
    if not findings:
        return []
    ids = [f.incident_id for f in findings]
    with reporting(es, "read existing incidents"):
        if es.indices.exists(index=indices.incidents):
            found = es.mget(index=indices.incidents, ids=ids)["docs"]
        else:
            found = [{"found": False} for _ in ids]
    operations: list[dict[str, Any]] = []
    recorded = []
    for finding, existing in zip(findings, found):
        if existing.get("found"):
            old = existing["_source"]
            same = old["event"]["end"] == iso(finding.last_seen) and old["event"]["count"] == finding.count
            if not same:
                operations += [{"update": {"_index": indices.incidents, "_id": finding.incident_id}},
                               {"doc": {"event": {"end": iso(finding.last_seen), "count": finding.count},
                                        "secmon": {"sample_event_ids": list(finding.sample_event_ids)}}}]
            incident = from_doc(finding.incident_id, old)
            recorded.append(Recorded(Incident(incident.id, finding, incident.status, incident.created), False, not same))
        else:
            operations += [{"create": {"_index": indices.incidents, "_id": finding.incident_id}},
                           to_doc(finding, scan_id, now)]
            recorded.append(Recorded(Incident(finding.incident_id, finding, "open", now), True, True))
    if operations:
        with reporting(es, "store incidents"):
            response = es.bulk(operations=operations, refresh="wait_for")
        if response.get("errors"):
            failed = [item for item in response["items"] if next(iter(item.values())).get("error")]
            first = next(iter(failed[0].values()))["error"]
            message = f"{len(failed)} incidents were not stored: {first.get('type')}: {first.get('reason')}"
            raise StoreUnavailable(message)
    return recorded


def search(es: Elasticsearch, indices: Indices, *, agency: str | None = None, since: datetime | None = None,
           until: datetime | None = None, limit: int = 100) -> list[Incident]:
    filters: list[dict[str, Any]] = []
    if agency:
        filters.append({"term": {"organization.id": agency}})
    if since or until:
        bounds = {**({"gte": iso(since)} if since else {}), **({"lt": iso(until)} if until else {})}
        filters.append({"range": {"event.end": bounds}})
    with reporting(es, "search incidents"):
        response = es.search(index=indices.incidents, query={"bool": {"filter": filters}}, size=limit,
                             sort=[{"event.start": "asc"}, {"rule.id": "asc"}], ignore_unavailable=True)
    return [from_doc(hit["_id"], hit["_source"]) for hit in response["hits"]["hits"]]
