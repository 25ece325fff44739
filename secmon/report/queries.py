"""The searches a monthly report makes, composed here (pure); the service runs them and hands back documents.

Field names come from `store/fields.py`; `tests/unit/test_report.py` checks every
field these bodies name against the index templates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from secmon.store.fields import Alert, Event, Incident, JobState, Scan
from secmon.types import iso

INCIDENT_SOURCE = [Incident.ID, Incident.AGENCY, Incident.RULE_ID, Incident.RULE_NAME, Incident.SEVERITY,
                   Incident.STATUS, Incident.RESOLUTION, Incident.DETECTOR, Incident.TECHNIQUE, Incident.GROUP,
                   Incident.COUNT, Incident.TIME, Incident.CREATED, Incident.HISTORY]
INCIDENT_SORT = [{Incident.TIME: "asc"}, {Incident.ID: "asc"}]
SCAN_SOURCE = [Scan.WINDOW_FROM, Scan.WINDOW_TO, Scan.RULES_RUN, Scan.FAILED_RULE]
MAX_TERMS = 10_000  # incident ids per alerts query


def _range(field: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {"range": {field: {"gte": iso(start), "lt": iso(end)}}}


def incidents(start: datetime, end: datetime, agency: str | None) -> dict[str, Any]:
    """Incidents whose activity started in [start, end) (of one agency)."""
    filters = [_range(Incident.TIME, start, end)]
    if agency:
        filters.append({"term": {Incident.AGENCY: agency}})
    return {"bool": {"filter": filters}}


def alerts_by_agency_and_status(incident_ids: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(query, aggregations): the alerts about these incidents, counted per (agency, status)."""
    query = {"terms": {Alert.INCIDENT: incident_ids}}
    aggs = {"agency": {"terms": {"field": Alert.AGENCY, "size": 1000},
                       "aggs": {"status": {"terms": {"field": Alert.STATUS, "size": 10}}}}}
    return query, aggs


def scans(start: datetime, end: datetime) -> dict[str, Any]:
    """Scan runs whose window overlaps [start, end)."""
    return {"bool": {"filter": [{"range": {Scan.WINDOW_FROM: {"lt": iso(end)}}},
                                {"range": {Scan.WINDOW_TO: {"gt": iso(start)}}}]}}


def events_per_agency(start: datetime, end: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    return (_range(Event.TIME, start, end),
            {"agency": {"terms": {"field": Event.AGENCY, "size": 1000}}})


def job_states() -> dict[str, Any]:
    """The scheduler's job documents (watermark, lag, last outcome), when a scheduler wrote them."""
    return {"term": {JobState.KIND: "job"}}


def fields_named(body: Any) -> set[str]:
    """Every field a query or aggregation body names (for the structural test)."""
    found: set[str] = set()
    if isinstance(body, dict):
        for key, value in body.items():
            if key in ("term", "terms", "range") and isinstance(value, dict) and "field" not in value:
                found |= set(value)  # a query clause: {field: value}; an aggregation says "field"
            elif key == "field" and isinstance(value, str):
                found.add(value)
            found |= fields_named(value)
    elif isinstance(body, list):
        for item in body:
            if isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), str):
                found.add(next(iter(item)))  # a sort clause: {field: order}
            found |= fields_named(item)
    return found
