"""The report flow: read a month (and the month before) from the indices -> facts -> an HTML document.

`monthly_report(es, settings, month, agency, lang)` is the one entry point; the CLI
writes its HTML or PDF, and a scheduler job can mail it through the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from secmon.config import Settings
from secmon.report import facts as f
from secmon.report import queries
from secmon.report.month import Month
from secmon.service.common import indices_of
from secmon.store.client import reporting
from secmon.store.fields import JobState, Scan
from secmon.store.indices import Indices
from secmon.store.search import every_source
from secmon.types import DEFAULT_TIMEZONE, parse_iso, utcnow

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

MAX_INCIDENTS = 200_000  # per month read for a report; beyond it the report says how many it left out
MAX_SCANS = 100_000


@dataclass(frozen=True)
class MonthlyReport:
    facts: f.MonthlyFacts
    language: str
    title: str
    html: str
    notes: tuple[str, ...]  # what the report could not include (said in the document too)

    def pdf(self) -> bytes:
        from secmon.report.pdf import (
            to_pdf,  # WeasyPrint (and pango) only when a PDF is asked for
        )

        return to_pdf(self.html)


def monthly_report(es: Elasticsearch, settings: Settings, month: Month | str, agency: str | None = None,
                   lang: str | None = None, now: datetime | None = None) -> MonthlyReport:
    """The month's report for every agency (or one), in `lang` (default: the agency's language, else vi)."""
    from secmon.report.document import render  # Jinja2 and matplotlib only for reports

    month = Month.parse(month) if isinstance(month, str) else month
    known = settings.agency(agency) if agency else None
    timezone = known.timezone if known else DEFAULT_TIMEZONE
    language = lang or (known.language if known else "vi")
    facts, notes = month_facts(es, indices_of(settings), month, known.id if known else None,
                               known.name if known else "", timezone, now or utcnow())
    title, html = render(facts, language, notes)
    return MonthlyReport(facts, language, title, html, notes)


def month_facts(es: Elasticsearch, indices: Indices, month: Month, agency: str | None, agency_name: str,
                timezone: str, now: datetime) -> tuple[f.MonthlyFacts, tuple[str, ...]]:
    start, end = month.start(timezone), month.end(timezone)
    notes: list[str] = []
    records = _incidents(es, indices, month, agency, timezone, notes)
    before = _incidents(es, indices, month.previous(), agency, timezone, notes)
    summary = f.summarize(records, month, timezone)
    facts = f.MonthlyFacts(
        month=month, timezone=timezone, agency=agency, agency_name=agency_name, generated=now,
        incidents=summary, previous=f.summarize(before, month.previous(), timezone),
        anomalies=f.summarize([r for r in records if r.detector == "anomaly"], month, timezone),
        alerts=_alerts(es, indices, [r.id for r in records]), previous_alerts=_alerts(es, indices, [r.id for r in before]),
        coverage=_coverage(es, indices, start, end, notes), events=_events(es, indices, start, end, agency))
    return facts, tuple(notes)


def _incidents(es: Elasticsearch, indices: Indices, month: Month, agency: str | None, timezone: str,
               notes: list[str]) -> list[f.IncidentRecord]:
    query = queries.incidents(month.start(timezone), month.end(timezone), agency)
    sources, total = every_source(es, indices.incidents, query, queries.INCIDENT_SOURCE, MAX_INCIDENTS)
    if total > len(sources):
        notes.append(f"{month}: {total} incidents, of which the first {len(sources)} are counted here")
    return [f.IncidentRecord.from_source(s) for s in sources]


def _alerts(es: Elasticsearch, indices: Indices, incident_ids: list[str]) -> f.AlertSummary:
    counts: dict[tuple[str, str], int] = {}
    for i in range(0, len(incident_ids), queries.MAX_TERMS):
        query, aggs = queries.alerts_by_agency_and_status(incident_ids[i:i + queries.MAX_TERMS])
        with reporting(es, "count the month's alerts"):
            response = es.search(index=indices.alerts, query=query, aggs=aggs, size=0, ignore_unavailable=True)
        for agency in response.get("aggregations", {}).get("agency", {}).get("buckets", []):
            for status in agency["status"]["buckets"]:
                key = (agency["key"], status["key"])
                counts[key] = counts.get(key, 0) + status["doc_count"]
    return f.alert_summary(counts)


def _coverage(es: Elasticsearch, indices: Indices, start: datetime, end: datetime, notes: list[str]) -> f.Coverage:
    sources, total = every_source(es, indices.scans, queries.scans(start, end), queries.SCAN_SOURCE, MAX_SCANS)
    if total > len(sources):
        notes.append(f"{total} scan runs overlap the month, of which the first {len(sources)} are counted here")
    runs = [f.ScanRun(parse_iso(f.pick(s, Scan.WINDOW_FROM)), parse_iso(f.pick(s, Scan.WINDOW_TO)),
                      int(f.pick(s, Scan.RULES_RUN) or 0), _failed_rules(s)) for s in sources]
    return f.coverage(runs, start, end, _watermarks(es, indices))


def _failed_rules(source: dict[str, Any]) -> tuple[str, ...]:
    failures = f.pick(source, Scan.FAILED_RULE.rsplit(".", 1)[0]) or []
    name = Scan.FAILED_RULE.rsplit(".", 1)[1]
    return tuple(str(item.get(name)) for item in failures if isinstance(item, dict) and item.get(name))


def _watermarks(es: Elasticsearch, indices: Indices) -> tuple[f.Watermark, ...]:
    """The scheduler's scan watermarks and lag, where a scheduler keeps them (`{prefix}-state`)."""
    index = f"{indices.prefix}-{JobState.TEMPLATE}"  # Indices.state, once the scheduler's branch is in
    with reporting(es, "read the scheduler's watermarks"):
        response = es.search(index=index, query=queries.job_states(), size=100, ignore_unavailable=True)
    marks = []
    for hit in response["hits"]["hits"]:
        s = hit["_source"]
        value = f.pick(s, JobState.WATERMARK)
        marks.append(f.Watermark(str(f.pick(s, JobState.JOB)), parse_iso(value) if value else None,
                                 f.pick(s, JobState.LAG), str(f.pick(s, JobState.LAST_OUTCOME) or "")))
    return tuple(sorted(marks, key=lambda m: m.job))


def _events(es: Elasticsearch, indices: Indices, start: datetime, end: datetime, agency: str | None) -> f.Ranked:
    query, aggs = queries.events_per_agency(start, end)
    with reporting(es, "count the month's events"):
        response = es.search(index=indices.events_pattern(agency or "*"), query=query, aggs=aggs, size=0,
                             ignore_unavailable=True, allow_no_indices=True)
    buckets = response.get("aggregations", {}).get("agency", {}).get("buckets", [])
    return tuple((b["key"], b["doc_count"]) for b in buckets)

