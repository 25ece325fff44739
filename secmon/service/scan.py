"""The scan flow: rules over a time window on the cluster -> findings -> incidents -> queued alerts.

Query composition lives in `detect/` (pure), execution in `store/`; this module
only wires them and records the run.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from secmon.alert.outbox import EnqueueReport, enqueue
from secmon.config import Settings
from secmon.errors import RequestRefused, SecmonError, StoreUnavailable
from secmon.incidents import exceptions, records
from secmon.incidents.grouping import Policy
from secmon.model import Finding, ScanSummary, ScanWindow, stable_id
from secmon.service.common import actor, audit, audit_doc, indices_of
from secmon.service.train import score_scan
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.store.search import (
    Refused,
    RequestCount,
    aggregate_each,
    every_hit_if_few,
    group_counts,
    matches_each,
    sorted_matches,
)
from secmon.types import iso, parse_duration, utcnow

if TYPE_CHECKING:  # detect (pySigma, 0.18 s of imports) is imported where scans use it, not by `collect`
    from elasticsearch import Elasticsearch
    from secmon.detect.sigma.load import CompiledRule, RuleSet
    from secmon.detect.plan import Fresh


def rule_findings(es: Elasticsearch, indices: Indices, rule: CompiledRule, start: datetime, end: datetime,
                  ingested: ScanWindow | None = None) -> list[Finding]:
    """Run one rule over [start, end) on the cluster on its own; only bursts that reach into the window count.

    The per-rule path: `run_rules` gives the same findings in a handful of requests for all
    rules (the tests hold the two equal). With `ingested` (an event.ingested window), only
    bursts holding an event ingested in it count.
    """
    from secmon.detect import plan
    from secmon.detect.windowing.findings import findings as rule_hit_findings

    query = plan.rule_window_query(rule, start, end)
    fields = plan.fetch_fields(rule, ingested or ScanWindow(start, end))
    hits: list[Mapping[str, Any]]
    if rule.kind == "single":
        # Every match counts (threshold 1), so there is nothing to narrow; fetching all matches
        # also keeps the ones that lack a group-by field.
        hits = list(sorted_matches(es, indices.events_pattern(), query, fields, plan.long_fields(rule)))
    else:
        candidates = plan.candidate_groups(rule, group_counts(es, indices.events_pattern(), query,
                                                              plan.group_fields(rule)))
        if not candidates:
            return []
        narrowed = plan.narrowed_query(rule, query, candidates)
        hits = plan.in_groups(rule, sorted_matches(es, indices.events_pattern(), narrowed, fields,
                                                   plan.long_fields(rule)), candidates)
    # Grouping and windows are pure code in detect/, shared with offline scans and rule examples.
    new = plan.new_event_ids(hits, ingested) if ingested else None
    return rule_hit_findings(rule, hits, start, new=new)


@dataclass(frozen=True)
class RuleRun:
    findings: tuple[Finding, ...]
    failures: tuple[tuple[str, str], ...]  # (rule id, reason): one failing rule never stops the others
    requests: int = 0  # search requests sent to Elasticsearch
    with_ids: int = 0  # hits fetched with their ids (the costly part of a fetch: store/search.RequestCount)


def run_rules(es: Elasticsearch, indices: Indices, rules: Sequence[CompiledRule], window: ScanWindow,
              in_process: bool = True) -> RuleRun:
    """Every rule over the window: the findings whose bursts contain an event of the window.

    A handful of requests whatever the number of rules (detect/plan.py): the probe says
    which rules have new matches, then one _msearch fetches the hits of those only, around their
    new matches and in their candidate groups; a single rule over an event.ingested window needs
    its new matches only, which an in-process window already holds (plan.window_only). The probe is one search when the window holds
    few events (read once and matched in-process, detect/inwindow.py; not with
    `in_process=False`), otherwise an _msearch of size-0 searches, one per rule. A correlation over
    an event.ingested window fetches its context without ids, then in one more _msearch the ids its
    findings read (`_idless_findings`). A rule whose query the node refuses fails alone: each search
    of an _msearch has its own answer.
    """
    from secmon.detect import inwindow, plan
    from secmon.detect.windowing.findings import findings as rule_hit_findings

    index = indices.events_pattern()
    count = RequestCount()
    failures: list[tuple[str, str]] = []
    decided: dict[int, Fresh | None] = {}
    documents: dict[int, list[Mapping[str, Any]]] = {}  # of the rules whose hits the window's documents give
    matched_documents: dict[int, list[Mapping[str, Any]]] = {}  # the window's documents each decided rule matched
    try:
        body = inwindow.window_search(rules, window) if in_process and rules else None
        few = every_hit_if_few(es, index, body, count) if body is not None else None
        if few is not None:
            matched = inwindow.match_documents(rules, few)
            decided, matched_documents = matched.fresh, matched.documents
            if inwindow.builds_hits(rules, window):
                documents = {n: found for n, found in matched.documents.items() if plan.window_only(rules[n], window)}
        rest = [n for n in range(len(rules)) if n not in decided]
        answers = aggregate_each(es, index, [plan.probe_search(rules[n], window) for n in rest], count)
    except RequestRefused as exc:  # the request as a whole (too large): every rule failed for that reason
        return RuleRun((), tuple((rule.id, str(exc)) for rule in rules), count.sent)
    # Any other SecmonError is the cluster's (unreachable, shards gone): it fails the scan (exit 5), so that
    # no watermark moves past a window whose rules did not run; they are not "broken rules" (exit 4).
    for n, answer in zip(rest, answers):
        if isinstance(answer, Refused):
            failures.append((rules[n].id, f"Elasticsearch refused the rule's search: {answer.reason}"))
        else:
            decided[n] = plan.read_probe(rules[n], answer)
    findings: list[Finding] = []
    for n, found in documents.items():  # their new matches are all they need (plan.window_only): no fetch
        if found:
            built = inwindow.rule_hits(rules[n], found)
            findings += rule_hit_findings(rules[n], built, None, new=frozenset(str(h["_id"]) for h in built))
    fresh = [(n, rule, seen) for n, rule in enumerate(rules)
             if n not in documents and (seen := decided.get(n)) is not None and plan.worth_fetching(rule, seen)]
    # Correlations over an event.ingested window: their context without ids, then the few ids they read.
    idless = [(rule, seen, matched_documents.get(n, [])) for n, rule, seen in fresh if plan.idless(rule, window)]
    with_ids = [(rule, seen) for n, rule, seen in fresh if not plan.idless(rule, window)]
    if idless:
        outcome = _idless_findings(es, index, window, idless, count)
        findings += outcome.findings
        failures += outcome.failures
        with_ids += outcome.unsettled
    searches = [(plan.fetch_query(rule, window, seen), plan.fetch_fields(rule, window), plan.long_fields(rule))
                for rule, seen in with_ids]
    answered = 0
    try:
        for (rule, _), hits in zip(with_ids, matches_each(es, index, searches, count)):
            answered += 1
            if isinstance(hits, Refused):
                failures.append((rule.id, f"Elasticsearch refused the rule's search: {hits.reason}"))
                continue
            findings += rule_hit_findings(rule, hits, plan.findings_start(window),
                                          new=plan.new_event_ids(hits, window))
    except RequestRefused as exc:  # refused as a whole: the rules not answered yet failed for that reason
        failures += [(rule.id, str(exc)) for rule, _ in with_ids[answered:]]
    return RuleRun(tuple(findings), tuple(failures), count.sent, count.with_ids)


ID_ROUNDS = 3  # rounds of ids at most (one, nearly always); then the context is fetched with ids


@dataclass(frozen=True)
class _Idless:
    findings: list[Finding]
    failures: list[tuple[str, str]]
    unsettled: list[tuple[CompiledRule, Fresh]]  # the rules whose context is fetched again, with ids


def _idless_findings(es: Elasticsearch, index: str, window: ScanWindow,
                     rules: Sequence[tuple[CompiledRule, Fresh, list[Mapping[str, Any]]]], count: RequestCount
                     ) -> _Idless:
    """The correlations' findings from their context fetched without ids, and the ids they read
    (detect/windowing/idless.py): the findings of a fetch with ids, for a fraction of its cost."""
    from secmon.detect import plan
    from secmon.detect.windowing import idless
    from secmon.detect.windowing.findings import findings as rule_hit_findings

    found: list[Finding] = []
    failures: list[tuple[str, str]] = []
    unsettled: list[tuple[CompiledRule, Fresh]] = []
    # (rule, fresh, hits, the @timestamp ranges whose hits need their ids)
    pending: list[tuple[CompiledRule, Fresh, list[dict[str, Any]], list[tuple[str, str]]]] = []

    def settle(rule: CompiledRule, seen: Fresh, hits: list[dict[str, Any]]) -> None:
        new = plan.new_event_ids(hits, window) or frozenset()
        result = rule_hit_findings(rule, hits, None, new=new)
        times = idless.wanted(hits, result, new, plan.group_fields(rule))
        if times:
            pending.append((rule, seen, hits, idless.spans(hits, times)))
        else:
            found.extend(result)

    searches = [(plan.fetch_query(rule, window, seen), plan.fetch_fields(rule, window), plan.long_fields(rule))
                for rule, seen, _ in rules]
    answered = 0
    try:
        for (rule, seen, documents), hits in zip(rules, matches_each(es, index, searches, count, ids=False)):
            answered += 1
            if isinstance(hits, Refused):
                failures.append((rule.id, f"Elasticsearch refused the rule's search: {hits.reason}"))
            else:
                unnamed = idless.provisional(hits)
                new = plan.new_event_ids(unnamed, window) or frozenset()
                settle(rule, seen, idless.known(unnamed, new, documents, plan.narrowing_field(rule)))
    except RequestRefused:  # refused as a whole (too large): those not answered are fetched with ids
        unsettled += [(rule, seen) for rule, seen, _ in rules[answered:]]
    for _ in range(ID_ROUNDS):
        if not pending:
            break
        asked, pending = pending, []
        searches = [(plan.ids_query(rule, window, seen, spans), plan.fetch_fields(rule, window),
                     plan.long_fields(rule)) for rule, seen, _, spans in asked]
        answered = 0
        try:
            for (rule, seen, hits, spans), fetched in zip(asked, matches_each(es, index, searches, count)):
                answered += 1
                named = None if isinstance(fetched, Refused) else idless.fill(hits, spans, fetched)
                if named is None:
                    unsettled.append((rule, seen))  # refused, or the index changed: fetched with ids
                else:
                    settle(rule, seen, named)
        except RequestRefused:
            unsettled += [(rule, seen) for rule, seen, _, _ in asked[answered:]]
    unsettled += [(rule, seen) for rule, seen, _, _ in pending]
    return _Idless(found, failures, unsettled)


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
    """Rules over the window -> incidents and their queued notifications, durable when this returns.

    Sends nothing: delivery is its own flow (`service.deliver`), so a scan and a
    delivery running at once can never send one alert twice.
    """
    indices = indices_of(settings)
    # No `check(es)` (GET /) here: the CLI checks before it scans, the scheduler once at start (`setup`), and
    # an unreachable node fails the scan's first request all the same, as StoreUnavailable naming the host.
    scan_id = stable_id("scan", iso(now), iso(options.start), iso(options.end), options.field)
    try:
        summary = _scan(es, settings, indices, options, now, scan_id)
    except SecmonError as exc:  # the audit trail shows failed runs too
        _audit_failure(es, indices, settings, options, scan_id, exc)
        raise
    _record_scan(es, indices, summary, options, utcnow(), actor(settings))
    return summary


def _scan(es: Elasticsearch, settings: Settings, indices: Indices, options: ScanOptions, now: datetime,
          scan_id: str) -> ScanSummary:
    from secmon.detect.sigma.load import load_rules, unmapped_note

    paths = list(options.rule_paths) or [settings.resolve(p) for p in settings.rules]
    ruleset: RuleSet = load_rules(paths, options.unmapped)
    exclusions = exceptions.load(es, indices, now)
    rules = [replace(rule, query=exceptions.exclude_query(rule.query, rule.id, exclusions))
             for rule in ruleset.rules]
    failures = [(p.where, p.reason) for p in ruleset.problems]
    run = run_rules(es, indices, rules, ScanWindow(options.start, options.end, options.field))
    anomalies = score_scan(es, settings, paths, ScanWindow(options.start, options.end, options.field))
    run = replace(run, findings=run.findings + anomalies.findings, failures=run.failures + anomalies.failures)
    failures += run.failures
    known = {a.id for a in settings.agencies}
    unknown = sorted({f.agency for f in run.findings} - known)
    findings = [f for f in run.findings if f.agency in known]
    suppressed = [f for f in findings if exceptions.is_suppressed(f, exclusions)]
    findings = [f for f in findings if not exceptions.is_suppressed(f, exclusions)]
    policy = Policy(parse_duration(settings.incidents.quiet_period),
                    parse_duration(settings.incidents.renotify_interval) if settings.incidents.renotify_interval
                    else None, user=f"scan:{options.trigger}",
                    window=f"{options.field}:{iso(options.start)}:{iso(options.end)}")
    queued: list[EnqueueReport] = []
    recorded = records.record(es, indices, findings, policy, now,
                              lambda told: queued.append(enqueue(es, indices, settings, told, now)), scan_id)
    notes = [f"events of agency {a!r} matched, but it is not in the config: no incident raised" for a in unknown]
    notes += anomalies.notes
    notes += unmapped_note(ruleset)
    notes += [f"no alert: {why}" for report in queued for why in report.unrouted]
    below = sum(report.below_floor for report in queued)
    if below:
        notes.append(f"{below} notifications are below every recipient's severity floor: no email")
    unrendered = sum(report.render_failed for report in queued)
    if unrendered:
        notes.append(f"{unrendered} alerts could not be rendered: queued as failed (secmon alerts outbox)")
    if suppressed:
        notes.append(f"{len(suppressed)} findings suppressed by `secmon exceptions` suppressions")
    applied = sum(1 for e in exclusions if e.kind == "exception")
    if applied:
        notes.append(f"{applied} exceptions in force were applied to the rules' queries")
    return ScanSummary(
        id=scan_id, started=now, window_from=options.start, window_to=options.end,
        rules_run=len(ruleset.rules), rules_failed=tuple(failures),
        incidents=recorded.incidents, new_incident_ids=tuple(i.id for i in recorded.new),
        deliveries_sent=0, deliveries_pending=0, notes=tuple(notes), suppressed=len(suppressed),
        notifications=len(recorded.notifications), unknown_agencies=tuple(unknown), requests=run.requests)


def _audit_failure(es: Elasticsearch, indices: Indices, settings: Settings, options: ScanOptions, scan_id: str,
                   exc: SecmonError) -> None:
    try:
        audit(es, indices, "scan", "failure", utcnow(),
              {"scan_id": scan_id, "window_from": iso(options.start), "window_to": iso(options.end),
               "window_field": options.field, "trigger": options.trigger, "error": str(exc)},
              user=actor(settings), message=str(exc))
    except SecmonError:
        pass  # Elasticsearch itself is what failed: the error reaches the caller all the same


def _record_scan(es: Elasticsearch, indices: Indices, s: ScanSummary, options: ScanOptions, finished: datetime,
                 user: str) -> None:
    outcome = "failure" if s.rules_failed or not s.rules_run else "success"
    doc = {"@timestamp": iso(s.started),
           "event": {"start": iso(s.started), "end": iso(finished), "outcome": outcome,
                     "duration": int((finished - s.started).total_seconds() * 1e9)},
           "secmon": {"window_from": iso(s.window_from), "window_to": iso(s.window_to), "window_field": options.field,
                      "rules_run": s.rules_run, "rules_failed": len(s.rules_failed),
                      "failures": [{"rule": r, "reason": why} for r, why in s.rules_failed],
                      "incidents": len(s.incidents), "new_incidents": len(s.new_incident_ids),
                      "notifications": s.notifications, "suppressed": s.suppressed, "requests": s.requests,
                      "trigger": options.trigger},
           "host": {"hostname": socket.gethostname()}, "user": {"name": user}}
    entry = audit_doc("scan", outcome, finished,
                      {"scan_id": s.id, "window_from": iso(s.window_from), "window_to": iso(s.window_to),
                       "window_field": options.field, "rules_run": s.rules_run, "rules_failed": len(s.rules_failed),
                       "new_incidents": len(s.new_incident_ids), "notifications": s.notifications}, user=user)
    # The scan record and its audit entry in one bulk (one request, not two): neither waits for the other,
    # and an item the node refuses still fails the scan, as the two separate writes did.
    with reporting(es, "record the scan run"):
        answer = es.bulk(operations=[{"index": {"_index": indices.scans, "_id": s.id}}, doc,
                                     {"create": {"_index": indices.audit}}, entry])
    refused = [result for item in answer["items"] for result in item.values() if result.get("error")]
    if refused:
        error = refused[0]["error"]
        raise StoreUnavailable(f"Elasticsearch refused to record the scan run in {refused[0].get('_index')}: "
                               f"{error.get('type')}: {error.get('reason')}")
