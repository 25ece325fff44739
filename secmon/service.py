"""Wiring: build components from settings and run the jobs the CLI and scheduler call.

Each job takes its client and clock as arguments (nothing connects at import
or construction time) and returns a summary; printing is the caller's business.
"""

from __future__ import annotations

import getpass
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from elasticsearch import Elasticsearch

from secmon import ingest
from secmon.alert.outbox import DeliveryReport, deliver_pending, enqueue
from secmon.config import Settings
from secmon.errors import SecmonError
from secmon.incidents import store as incident_store
from secmon.model import Finding, ScanSummary, stable_id
from secmon.normalize.pipeline import Pipeline
from secmon.store.client import check, reporting
from secmon.store.indices import Indices
from secmon.store.search import group_counts, iso, sorted_matches, window_filter
from secmon.store.templates import TemplateChange, install_templates
from secmon.store.writer import WriteStats

if TYPE_CHECKING:  # detect (pySigma, 0.18 s of imports) is imported where scans use it, not by `collect`
    from secmon.detect.rules.load import CompiledRule, RuleSet

DEFAULT_SCHEDULER_TZ = "Asia/Ho_Chi_Minh"
AGENCY_FIELD = "organization.id"
SAMPLE_IDS = 20
MAX_NARROWING_GROUPS = 500


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def audit(es: Elasticsearch, indices: Indices, action: str, outcome: str, now: datetime,
          details: dict[str, Any], agency: str | None = None, message: str = "") -> None:
    doc = {"@timestamp": iso(now), "event": {"action": action, "outcome": outcome},
           "user": {"name": getpass.getuser()}, "host": {"hostname": socket.gethostname()},
           "secmon": {"details": details, "command": action}, "message": message}
    if agency:
        doc["organization"] = {"id": agency}
    with reporting(es, "write the audit trail"):
        es.index(index=indices.audit, document=doc)


# --- setup --------------------------------------------------------------------------------

def setup(es: Elasticsearch, settings: Settings, now: datetime) -> tuple[str, list[TemplateChange]]:
    version = check(es)
    indices = Indices(settings.elasticsearch.index_prefix)
    changes = install_templates(es, indices)
    audit(es, indices, "setup", "success", now, {"templates": [c.name for c in changes if c.changed]})
    return version, changes


# --- collect ------------------------------------------------------------------------------

def pipeline(settings: Settings, pipeline_id: str) -> Pipeline:
    return ingest.find_pipeline(settings, pipeline_id)


def collect_file(es: Elasticsearch, settings: Settings, path: Path, agency_id: str, source: str,
                 now: datetime, year: int | None = None, options: ingest.CollectOptions | None = None,
                 progress: Callable[[int], None] | None = None) -> WriteStats:
    """Ship one log file (or EVTX file) to its end; see secmon.ingest for checkpoints and the spool."""
    return list(collect_files(es, settings, [path], agency_id, source, now, year, options,
                              (lambda _: progress) if progress else None))[0][1]


def collect_files(es: Elasticsearch, settings: Settings, paths: list[Path], agency_id: str, source: str,
                  now: datetime, year: int | None = None, options: ingest.CollectOptions | None = None,
                  progress_for: Callable[[Path], Callable[[int], None] | None] | None = None
                  ) -> Iterator[tuple[Path, WriteStats]]:
    """Ship log files one after the other, yielding each one's counts as it is done."""
    reports = ingest.collect_inputs(es, settings, list(paths), agency_id, source, now, year,
                                    options or ingest.CollectOptions(), progress_for)
    by_name = {str(path): path for path in paths}
    for name, report in reports:  # driven to its end, so that its final refresh runs
        _audit_collect(es, settings, report, {"file": name, "source": source}, now, agency_id)
        yield by_name[name], report.stats


def collect_stream(es: Elasticsearch, settings: Settings, stream: BinaryIO, agency_id: str, source: str,
                   now: datetime, year: int | None = None, options: ingest.CollectOptions | None = None
                   ) -> WriteStats:
    """Ship a stream (stdin) to its end."""
    report = ingest.collect_once(es, settings, None, agency_id, source, now, year,
                                 options or ingest.CollectOptions(), stream=stream)
    _audit_collect(es, settings, report, {"file": "-", "source": source}, now, agency_id)
    return report.stats


def collect_follow(es: Elasticsearch, settings: Settings, spec: ingest.FollowSpec, agency_id: str, source: str,
                   now: datetime, stop: threading.Event, options: ingest.CollectOptions, year: int | None = None
                   ) -> ingest.CollectReport:
    """Collect files by glob and syslog until `stop` is set."""
    report = ingest.follow(es, settings, spec, agency_id, source, now, stop, options, year)
    try:
        _audit_collect(es, settings, report, {"files": list(spec.patterns), "source": source, "follow": True},
                       utcnow(), agency_id)
    except SecmonError as exc:  # stopping while Elasticsearch is down: the audit entry is all that is lost
        report.notes.append(f"audit entry not written: {exc}")
    return report


def _audit_collect(es: Elasticsearch, settings: Settings, report: ingest.CollectReport, details: dict[str, Any],
                   now: datetime, agency_id: str) -> None:
    stats = report.stats
    audit(es, Indices(settings.elasticsearch.index_prefix), "collect", "success", now,
          {**details, "events": stats.events, "dead_letters": stats.dead_letters + stats.rejected,
           "skipped": stats.skipped}, settings.agency(agency_id).id)


# --- scan ---------------------------------------------------------------------------------

def rule_findings(es: Elasticsearch, indices: Indices, rule: CompiledRule, start: datetime, end: datetime
                  ) -> list[Finding]:
    """Run one rule over [start, end) on the cluster.

    The search starts one timespan earlier so that a burst crossing `start` is
    seen whole and keeps its identity; only bursts that reach into the window
    are reported.
    """
    from secmon.detect.rules.compile import and_
    from secmon.detect.rules.findings import findings as rule_hit_findings

    fields = (AGENCY_FIELD, *rule.group_by)
    query = and_([window_filter(start - rule.timespan, end), rule.query])
    if rule.kind == "single":
        # Every match counts (threshold 1), so there is nothing to narrow; fetching all matches
        # also keeps the ones that lack a group-by field.
        hits = list(sorted_matches(es, indices.events_pattern(), query, (AGENCY_FIELD, *rule.fields)))
        return rule_hit_findings(rule, hits, start, AGENCY_FIELD)
    candidates = [key for key, count in group_counts(es, indices.events_pattern(), query, fields)
                  if count >= rule.threshold]
    if not candidates:
        return []
    narrowed = query
    if len(candidates) <= MAX_NARROWING_GROUPS:  # beyond that the bool query costs more than it saves
        narrowed = and_([query, {"bool": {"should": [and_([{"term": {f: key[f]}} for f in fields])
                                                     for key in candidates], "minimum_should_match": 1}}])
    wanted = {tuple(str(key[f]) for f in fields) for key in candidates}
    hits = [hit for hit in sorted_matches(es, indices.events_pattern(), narrowed, (AGENCY_FIELD, *rule.fields))
            if all(f in hit["fields"] for f in fields)
            and tuple(str(hit["fields"][f][0]) for f in fields) in wanted]
    # Grouping and windows are pure code in detect/, shared with offline scans and rule examples.
    return rule_hit_findings(rule, hits, start, AGENCY_FIELD)


@dataclass(frozen=True)
class ScanOptions:
    start: datetime
    end: datetime
    rule_paths: tuple[Path, ...] = ()
    deliver: bool = True
    trigger: str = "cli"


def scan(es: Elasticsearch, settings: Settings, options: ScanOptions, now: datetime) -> ScanSummary:
    indices = Indices(settings.elasticsearch.index_prefix)
    check(es)
    paths = list(options.rule_paths) or [settings.resolve(p) for p in settings.rules]
    from secmon.detect.rules.load import load_rules

    ruleset: RuleSet = load_rules(paths)
    scan_id = stable_id("scan", iso(now), iso(options.start), iso(options.end))
    failures = [(p.where, p.reason) for p in ruleset.problems]
    findings: list[Finding] = []
    for rule in ruleset.rules:
        try:
            findings += rule_findings(es, indices, rule, options.start, options.end)
        except SecmonError as exc:  # one failing rule never stops the others
            failures.append((rule.id, str(exc)))
    known = {a.id for a in settings.agencies}
    unknown = sorted({f.agency for f in findings} - known)
    findings = [f for f in findings if f.agency in known]
    recorded = incident_store.record(es, indices, findings, scan_id, now)
    new = [r.incident for r in recorded if r.is_new]
    enqueue(es, indices, settings, new, now)
    report = deliver_pending(es, indices, settings.smtp, now) if options.deliver else DeliveryReport(0, 0, 0, ())
    notes = [f"events of agency {a!r} matched, but it is not in the config: no incident raised" for a in unknown]
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
           "host": {"hostname": socket.gethostname()}, "user": {"name": getpass.getuser()}}
    with reporting(es, "record the scan run"):
        es.index(index=indices.scans, id=s.id, document=doc, refresh="wait_for")
    audit(es, indices, "scan", doc["event"]["outcome"], finished,
          {"scan_id": s.id, "window_from": iso(s.window_from), "window_to": iso(s.window_to),
           "new_incidents": len(s.new_incident_ids)})


def deliver(es: Elasticsearch, settings: Settings, now: datetime) -> DeliveryReport:
    return deliver_pending(es, Indices(settings.elasticsearch.index_prefix), settings.smtp, now)
