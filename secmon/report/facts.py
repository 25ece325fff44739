"""A month's numbers, computed from the documents the service read. Pure.

Definitions (the report's "how to read" section says the same in words):
- an incident belongs to the month in which its activity started (`event.start`, local time);
- time to acknowledge / to close: from the incident's `opened` step (else its creation) to
  its first `acknowledged` / `closed` step in `secmon.history`; incidents without that step
  are not measured, and are counted as such;
- alerts are the outbox documents about the month's incidents, whenever they were sent;
- scan coverage is the share of the month inside the union of the scan runs' windows.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from secmon.model import Severity
from secmon.report.month import Month
from secmon.store.fields import Incident
from secmon.types import parse_iso

SEVERITIES = tuple(s.value for s in Severity)
STATUSES = ("open", "acknowledged", "closed")
TOP = 10
NO_ENTITY = "(none)"

Ranked = tuple[tuple[str, int], ...]  # (key, count), most first


def pick(source: Mapping[str, Any], dotted: str) -> Any:
    """`source['a']['b']` for 'a.b'; None when a step is missing."""
    node: Any = source
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _listed(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


@dataclass(frozen=True)
class IncidentRecord:
    """What the report reads of one incident document."""

    id: str
    agency: str
    rule: str
    severity: str
    status: str
    resolution: str
    detector: str
    techniques: tuple[str, ...]
    entity: str
    events: int
    first_seen: datetime
    opened: datetime | None
    acknowledged: datetime | None
    closed: datetime | None

    @staticmethod
    def from_source(source: Mapping[str, Any]) -> IncidentRecord:
        history = pick(source, Incident.HISTORY) or []
        steps: dict[str, datetime] = {}
        for step in history if isinstance(history, list) else [history]:
            action, at = step.get("action"), step.get("at")
            if isinstance(action, str) and isinstance(at, str) and action not in steps:
                steps[action] = parse_iso(at)
        created = pick(source, Incident.CREATED)
        return IncidentRecord(
            id=str(pick(source, Incident.ID) or ""), agency=str(pick(source, Incident.AGENCY) or ""),
            rule=str(pick(source, Incident.RULE_NAME) or pick(source, Incident.RULE_ID) or ""),
            severity=str(pick(source, Incident.SEVERITY) or "informational"),
            status=str(pick(source, Incident.STATUS) or "open"),
            resolution=str(pick(source, Incident.RESOLUTION) or ""),
            detector=str(pick(source, Incident.DETECTOR) or "rule"),
            techniques=_listed(pick(source, Incident.TECHNIQUE)),
            entity=", ".join(_listed(pick(source, Incident.GROUP))) or NO_ENTITY,
            events=int(pick(source, Incident.COUNT) or 0),
            first_seen=parse_iso(str(pick(source, Incident.TIME))),
            opened=steps.get("opened") or (parse_iso(created) if isinstance(created, str) else None),
            acknowledged=steps.get("acknowledged"), closed=steps.get("closed"))


@dataclass(frozen=True)
class Durations:
    """Minutes from opening to a lifecycle step, over the incidents that reached it."""

    measured: int = 0
    mean: float | None = None
    median: float | None = None
    longest: float | None = None

    @staticmethod
    def of(minutes: Sequence[float]) -> Durations:
        if not minutes:
            return Durations()
        return Durations(len(minutes), statistics.fmean(minutes), statistics.median(minutes), max(minutes))


@dataclass(frozen=True)
class EntityRow:
    entity: str
    agency: str
    incidents: int
    events: int


@dataclass(frozen=True)
class IncidentSummary:
    total: int = 0
    events: int = 0
    by_severity: Ranked = ()  # every severity, in severity order (zeros kept: a table compares months)
    by_status: Ranked = ()
    by_resolution: Ranked = ()
    by_rule: Ranked = ()
    by_technique: Ranked = ()
    by_agency: Ranked = ()
    entities: tuple[EntityRow, ...] = ()
    per_day: tuple[tuple[date, tuple[int, ...]], ...] = ()  # each day of the month: counts in SEVERITIES order
    to_acknowledge: Durations = Durations()
    to_close: Durations = Durations()
    open_unacknowledged: int = 0

    def severity(self, name: str) -> int:
        return dict(self.by_severity).get(name, 0)


def _ranked(counter: Counter[str], limit: int | None = TOP) -> Ranked:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


def _minutes(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds() / 60)


def summarize(records: Iterable[IncidentRecord], month: Month, timezone: str) -> IncidentSummary:
    items = list(records)
    zone = ZoneInfo(timezone)
    first_day = month.start(timezone).date()
    days = [first_day + timedelta(days=i) for i in range(month.days())]
    daily: dict[date, Counter[str]] = {day: Counter() for day in days}
    entities: dict[tuple[str, str], list[int]] = {}
    for item in items:
        day = item.first_seen.astimezone(zone).date()
        if day in daily:
            daily[day][item.severity] += 1
        row = entities.setdefault((item.entity, item.agency), [0, 0])
        row[0] += 1
        row[1] += item.events
    to_ack = [m for m in (_minutes(i.opened, i.acknowledged) for i in items) if m is not None]
    to_close = [m for m in (_minutes(i.opened, i.closed) for i in items) if m is not None]
    severities = Counter(i.severity for i in items)
    top_entities = sorted(entities.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:TOP]
    return IncidentSummary(
        total=len(items), events=sum(i.events for i in items),
        by_severity=tuple((s, severities.get(s, 0)) for s in SEVERITIES),
        by_status=tuple((s, sum(1 for i in items if i.status == s)) for s in STATUSES),
        by_resolution=_ranked(Counter(i.resolution for i in items if i.status == "closed" and i.resolution), None),
        by_rule=_ranked(Counter(i.rule for i in items)),
        by_technique=_ranked(Counter(t for i in items for t in i.techniques)),
        by_agency=_ranked(Counter(i.agency for i in items), None),
        entities=tuple(EntityRow(entity, agency, n, events) for (entity, agency), (n, events) in top_entities),
        per_day=tuple((day, tuple(daily[day].get(s, 0) for s in SEVERITIES)) for day in days),
        to_acknowledge=Durations.of(to_ack), to_close=Durations.of(to_close),
        open_unacknowledged=sum(1 for i in items if i.status == "open" and i.acknowledged is None))


# --- alerts -------------------------------------------------------------------------------------

DELIVERY_STATUSES = ("sent", "failed", "pending", "sending")


@dataclass(frozen=True)
class AlertSummary:
    by_status: Ranked = ()  # DELIVERY_STATUSES order, then any other
    by_agency: tuple[tuple[str, int, int, int], ...] = ()  # (agency, sent, failed, not yet)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.by_status)

    def count(self, status: str) -> int:
        return dict(self.by_status).get(status, 0)

    @property
    def waiting(self) -> int:
        return self.total - self.count("sent") - self.count("failed")


def alert_summary(counts: Mapping[tuple[str, str], int]) -> AlertSummary:
    """From (agency, status) -> alerts."""
    statuses: Counter[str] = Counter()
    agencies: dict[str, Counter[str]] = {}
    for (agency, status), n in counts.items():
        statuses[status] += n
        agencies.setdefault(agency, Counter())[status] += n
    order = [s for s in DELIVERY_STATUSES if s in statuses] + sorted(set(statuses) - set(DELIVERY_STATUSES))
    rows = tuple((agency, c["sent"], c["failed"], sum(c.values()) - c["sent"] - c["failed"])
                 for agency, c in sorted(agencies.items()))
    return AlertSummary(tuple((s, statuses[s]) for s in order), rows)


# --- scan coverage -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Watermark:
    job: str
    value: datetime | None
    lag_seconds: float | None
    outcome: str


@dataclass(frozen=True)
class Coverage:
    start: datetime
    end: datetime
    covered: tuple[tuple[datetime, datetime], ...] = ()  # merged windows inside the month
    runs: int = 0
    failed_runs: int = 0  # runs in which a rule failed, or no rule ran
    failing_rules: Ranked = ()
    watermarks: tuple[Watermark, ...] = field(default=())

    @property
    def gaps(self) -> tuple[tuple[datetime, datetime], ...]:
        holes, at = [], self.start
        for low, high in self.covered:
            if low > at:
                holes.append((at, low))
            at = max(at, high)
        if at < self.end:
            holes.append((at, self.end))
        return tuple(holes)

    @property
    def percent(self) -> float:
        total = (self.end - self.start).total_seconds()
        done = sum((high - low).total_seconds() for low, high in self.covered)
        return 100.0 * done / total if total else 0.0


@dataclass(frozen=True)
class ScanRun:
    window_from: datetime
    window_to: datetime
    rules_run: int
    failed_rules: tuple[str, ...]


def coverage(runs: Iterable[ScanRun], start: datetime, end: datetime, watermarks: Sequence[Watermark] = ()
             ) -> Coverage:
    items = list(runs)
    clipped = sorted((max(r.window_from, start), min(r.window_to, end)) for r in items
                     if r.window_to > start and r.window_from < end)
    merged: list[tuple[datetime, datetime]] = []
    for low, high in clipped:
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        elif high > low:
            merged.append((low, high))
    failing = Counter(rule for r in items for rule in r.failed_rules)
    return Coverage(start, end, tuple(merged), len(items), sum(1 for r in items if r.failed_rules or not r.rules_run),
                    _ranked(failing), tuple(watermarks))


# --- the month ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonthlyFacts:
    month: Month
    timezone: str
    agency: str | None  # None: every agency (the centre's report)
    agency_name: str
    generated: datetime
    incidents: IncidentSummary
    previous: IncidentSummary  # the month before, for month-over-month change
    anomalies: IncidentSummary  # the month's incidents raised by anomaly detectors
    alerts: AlertSummary
    previous_alerts: AlertSummary
    coverage: Coverage
    events: Ranked = ()  # events collected in the month, per agency


def change(now: float | None, before: float | None) -> tuple[float | None, float | None]:
    """(difference, percent) from `before` to `now`; None where it cannot be said."""
    if now is None or before is None:
        return None, None
    return now - before, (100.0 * (now - before) / before) if before else None
