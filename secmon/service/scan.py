"""The scan flow: rules over a time window on the cluster -> findings -> incidents -> queued alerts.

Query composition lives in `detect/` (pure), execution in `store/`; this module
only wires them and records the run.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from elasticsearch import Elasticsearch

from secmon.alert.outbox import DeliveryReport, deliver_pending, enqueue
from secmon.config import Settings
from secmon.errors import SecmonError
from secmon.incidents import store as incident_store
from secmon.model import Finding, ScanSummary, ScanWindow, stable_id
from secmon.service.common import audit, indices_of, operator
from secmon.store.client import check, reporting
from secmon.store.indices import Indices
from secmon.store.search import group_counts, sorted_matches
from secmon.types import iso, utcnow

if TYPE_CHECKING:  # detect (pySigma, 0.18 s of imports) is imported where scans use it, not by `collect`
    from secmon.detect.rules.load import CompiledRule, RuleSet


def rule_findings(es: Elasticsearch, indices: Indices, rule: CompiledRule, start: datetime, end: datetime
                  ) -> list[Finding]:
    """Run one rule over [start, end) on the cluster; only bursts that reach into the window count."""
    from secmon.detect.rules import plan
    from secmon.detect.rules.findings import findings as rule_hit_findings

    query = plan.rule_window_query(rule, start, end)
    if rule.kind == "single":
        # Every match counts (threshold 1), so there is nothing to narrow; fetching all matches
        # also keeps the ones that lack a group-by field.
        hits = list(sorted_matches(es, indices.events_pattern(), query, plan.hit_fields(rule)))
        return rule_hit_findings(rule, hits, start)
    candidates = plan.candidate_groups(rule, group_counts(es, indices.events_pattern(), query,
                                                          plan.group_fields(rule)))
    if not candidates:
        return []
    narrowed = plan.narrowed_query(rule, query, candidates)
    hits = plan.in_groups(rule, sorted_matches(es, indices.events_pattern(), narrowed, plan.hit_fields(rule)),
                          candidates)
    # Grouping and windows are pure code in detect/, shared with offline scans and rule examples.
    return rule_hit_findings(rule, hits, start)


@dataclass(frozen=True)
class RuleRun:
    findings: tuple[Finding, ...]
    failures: tuple[tuple[str, str], ...]  # (rule id, reason): one failing rule never stops the others
    requests: int = 0  # search requests sent to Elasticsearch


def run_rules(es: Elasticsearch, indices: Indices, rules: Sequence[CompiledRule], window: ScanWindow) -> RuleRun:
    """Every rule over the window: the findings whose bursts contain an event of the window."""
    start, end = window.start, window.end
    if window.field == "event.ingested":
        span = _event_time_span(es, indices, window)
        if span is None:
            return RuleRun((), ())
        start, end = span
    findings: list[Finding] = []
    failures: list[tuple[str, str]] = []
    for rule in rules:
        try:
            findings += rule_findings(es, indices, rule, start, end)
        except SecmonError as exc:  # one failing rule never stops the others
            failures.append((rule.id, str(exc)))
    return RuleRun(tuple(findings), tuple(failures))


def _event_time_span(es: Elasticsearch, indices: Indices, window: ScanWindow) -> tuple[datetime, datetime] | None:
    """The @timestamp range of the events ingested in the window (None: nothing arrived)."""
    from secmon.detect.rules.plan import window_filter

    with reporting(es, "find the events ingested since the last scan"):
        response = es.search(index=indices.events_pattern(), size=0, ignore_unavailable=True, allow_no_indices=True,
                             query=window_filter(window.start, window.end, window.field),
                             aggs={"first": {"min": {"field": "@timestamp"}}, "last": {"max": {"field": "@timestamp"}}})
    aggs = response.get("aggregations", {})
    if not aggs or aggs["first"].get("value") is None:
        return None
    first = datetime.fromtimestamp(aggs["first"]["value"] / 1000, timezone.utc)
    last = datetime.fromtimestamp(aggs["last"]["value"] / 1000, timezone.utc)
    return first, last + timedelta(milliseconds=1)


@dataclass(frozen=True)
class ScanOptions:
    start: datetime
    end: datetime
    rule_paths: tuple[Path, ...] = ()
    deliver: bool = True
    trigger: str = "cli"
    field: Literal["@timestamp", "event.ingested"] = "@timestamp"  # see model.ScanWindow
    unmapped: Literal["skip", "run"] = "skip"  # rules whose logsource secmon does not map (load.load_rules)


def scan(es: Elasticsearch, settings: Settings, options: ScanOptions, now: datetime) -> ScanSummary:
    indices = indices_of(settings)
    check(es)
    paths = list(options.rule_paths) or [settings.resolve(p) for p in settings.rules]
    from secmon.detect.rules.load import load_rules, unmapped_note

    ruleset: RuleSet = load_rules(paths, options.unmapped)
    scan_id = stable_id("scan", iso(now), iso(options.start), iso(options.end))
    failures = [(p.where, p.reason) for p in ruleset.problems]
    run = run_rules(es, indices, ruleset.rules, ScanWindow(options.start, options.end, options.field))
    failures += run.failures
    findings = list(run.findings)
    known = {a.id for a in settings.agencies}
    unknown = sorted({f.agency for f in findings} - known)
    findings = [f for f in findings if f.agency in known]
    recorded = incident_store.record(es, indices, findings, scan_id, now)
    new = [r.incident for r in recorded if r.is_new]
    enqueue(es, indices, settings, new, now)
    report = deliver_pending(es, indices, settings.smtp, now) if options.deliver else DeliveryReport(0, 0, 0, ())
    notes = [f"events of agency {a!r} matched, but it is not in the config: no incident raised" for a in unknown]
    notes += unmapped_note(ruleset)
    notes += [f"alert delivery failed: {e}" for e in report.errors]
    summary = ScanSummary(
        id=scan_id, started=now, window_from=options.start, window_to=options.end,
        rules_run=len(ruleset.rules), rules_failed=tuple(failures),
        incidents=tuple(r.incident for r in recorded), new_incident_ids=tuple(i.id for i in new),
        deliveries_sent=report.sent, deliveries_pending=report.pending + report.failed, notes=tuple(notes))
    _record_scan(es, indices, summary, options.trigger, utcnow())
    return summary


def _record_scan(es: Elasticsearch, indices: Indices, s: ScanSummary, trigger: str, finished: datetime) -> None:
    doc = {"@timestamp": iso(s.started),
           "event": {"start": iso(s.started), "end": iso(finished), "outcome": "failure" if s.rules_failed else "success",
                     "duration": int((finished - s.started).total_seconds() * 1e9)},
           "secmon": {"window_from": iso(s.window_from), "window_to": iso(s.window_to), "rules_run": s.rules_run,
                      "rules_failed": len(s.rules_failed),
                      "failures": [{"rule": r, "reason": why} for r, why in s.rules_failed],
                      "incidents": len(s.incidents), "new_incidents": len(s.new_incident_ids),
                      "deliveries_sent": s.deliveries_sent, "deliveries_pending": s.deliveries_pending,
                      "trigger": trigger},
           "host": {"hostname": socket.gethostname()}, "user": {"name": operator()}}
    with reporting(es, "record the scan run"):
        es.index(index=indices.scans, id=s.id, document=doc, refresh="wait_for")
    audit(es, indices, "scan", doc["event"]["outcome"], finished,
          {"scan_id": s.id, "window_from": iso(s.window_from), "window_to": iso(s.window_to),
           "new_incidents": len(s.new_incident_ids)})
