"""Where a scheduled scan's node time goes: the library's rules over 5-minute event.ingested windows.

    python bench/rules/scan_profile.py [--events 200000] [--windows 12] [--keep PREFIX]

Loads one day of the rules benchmark's events (bench/rules/library.py `load_day`: real lines,
normalized, event.ingested per 2,000-event batch) under a scratch prefix, or reuses PREFIX, then
for each of --windows windows of 5 minutes spread over the day measures the node's query and
fetch time on the shards (index search stats before/after, request cache cleared) of:

- probes: the node probe, one size-0 search per rule in _msearch (plan.probe_search);
- probes without aggregations: the same searches, size 0, no aggregations;
- window only: as many searches of the window's range alone (the fixed cost of a search);
- window read: the one search the in-process probe sends (inwindow.window_search);
- fetch: the fetch of the rules that matched (plan.fetch_query), the same for both probes.

And, over one window, each rule's probe alone (sequentially, no concurrency): the ten costliest.
Writes bench/results/scan-profile.json and .md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "rules"))

import library  # noqa: E402
from elasticsearch import Elasticsearch  # noqa: E402

from secmon.detect.rules import inwindow, plan  # noqa: E402
from secmon.detect.rules.load import load_rules  # noqa: E402
from secmon.model import ScanWindow  # noqa: E402
from secmon.store.indices import Indices  # noqa: E402
from secmon.store.search import Refused, RequestCount, aggregate_each, every_hit_if_few, matches_each  # noqa: E402


def shard_ms(es: Elasticsearch, pattern: str) -> tuple[int, int]:
    found = es.indices.stats(index=pattern, metric="search")["_all"]["total"]["search"]
    return int(found["query_time_in_millis"]), int(found["fetch_time_in_millis"])


def measured(es: Elasticsearch, pattern: str, work: Any) -> tuple[dict[str, int], Any]:
    es.indices.clear_cache(index=pattern, request=True)
    before = shard_ms(es, pattern)
    result = work()
    after = shard_ms(es, pattern)
    return {"query_ms": after[0] - before[0], "fetch_ms": after[1] - before[1]}, result


def msearch(es: Elasticsearch, pattern: str, bodies: list[dict[str, Any]]) -> None:
    for at in range(0, len(bodies), 100):
        lines: list[dict[str, Any]] = []
        for body in bodies[at:at + 100]:
            lines += [{"index": pattern}, body]
        es.msearch(searches=lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events in the day")
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--keep", help="reuse (and keep) the events of this prefix, loaded by an earlier run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scan-profile")
    args = parser.parse_args()
    es = Elasticsearch(args.es_url, request_timeout=600)
    prefix = args.keep or f"bench-sp{os.getpid()}"
    indices = Indices(prefix)
    pattern = indices.events_pattern()
    day = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - library.DAY
    if not args.keep:
        library.load_day(es, indices, args.events, day, library.DAY, library.DATASETS)
    else:
        day = datetime.fromtimestamp(es.search(index=pattern, size=0, aggs={"t": {"min": {"field": "@timestamp"}}})[
            "aggregations"]["t"]["value"] / 1000, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    rules = load_rules([ROOT / "rules"]).rules
    rows: list[dict[str, Any]] = []
    try:
        for k in range(args.windows):
            start = day + timedelta(minutes=5 * round(k * 288 / args.windows))
            window = ScanWindow(start, start + library.TICK, "event.ingested")
            events = int(es.count(index=pattern, query=plan.window_filter(window.start, window.end, window.field))[
                "count"])
            row: dict[str, Any] = {"window": start.isoformat(), "events": events}
            count = RequestCount()
            row["probes"], answers = measured(es, pattern, lambda window=window: aggregate_each(
                es, pattern, [plan.probe_search(rule, window) for rule in rules], count))
            row["probes_without_aggregations"], _ = measured(es, pattern, lambda window=window: msearch(
                es, pattern, [{k: v for k, v in plan.probe_search(rule, window).items() if k != "aggs"}
                              for rule in rules]))
            row["window_only"], _ = measured(es, pattern, lambda window=window: msearch(
                es, pattern, [{"size": 0, "query": plan.window_filter(window.start, window.end, window.field)}] *
                len(rules)))
            body = inwindow.window_search(rules, window)
            assert body is not None
            started = time.process_time()
            row["window_read"], hits = measured(es, pattern, lambda body=body: every_hit_if_few(es, pattern, body,
                                                                                                count))
            decided = inwindow.probe_documents(rules, hits or [])
            row["in_process_cpu_s"] = round(time.process_time() - started, 2)
            fresh = [(rule, seen) for rule, answer in zip(rules, answers)
                     if not isinstance(answer, Refused) and (seen := plan.read_probe(rule, answer))
                     and plan.worth_fetching(rule, seen)]
            row["rules_matched"] = len(fresh)
            node = {n for n, (rule, answer) in enumerate(zip(rules, answers))
                    if not isinstance(answer, Refused) and plan.read_probe(rule, answer)}
            row["in_process_agrees"] = node == {n for n, seen in decided.items() if seen is not None}
            row["fetch"], _ = measured(es, pattern, lambda window=window, fresh=fresh: list(matches_each(
                es, pattern, [(plan.fetch_query(r, window, s), plan.fetch_fields(r, window), plan.long_fields(r))
                              for r, s in fresh], count)))
            rows.append(row)
            print(json.dumps(row), flush=True)
        busy = max(rows, key=lambda r: r["events"])
        window = ScanWindow(datetime.fromisoformat(busy["window"]),
                            datetime.fromisoformat(busy["window"]) + library.TICK, "event.ingested")
        alone = []
        es.indices.clear_cache(index=pattern, request=True)
        for rule in rules:
            before = shard_ms(es, pattern)
            es.search(index=pattern, body=plan.probe_search(rule, window), request_cache=False)
            after = shard_ms(es, pattern)
            alone.append({"rule": rule.title, "kind": rule.kind, "query_ms": after[0] - before[0]})
    finally:
        if not args.keep:
            es.indices.delete(index=f"{prefix}*", ignore_unavailable=True, allow_no_indices=True)
    write(args, rows, alone, len(rules))


def write(args: argparse.Namespace, rows: list[dict[str, Any]], alone: list[dict[str, Any]], rules: int) -> None:
    parts = ("probes", "probes_without_aggregations", "window_only", "window_read", "fetch")
    busy = [r for r in rows if r["events"]]
    quiet = [r for r in rows if not r["events"]]

    def med(group: list[dict[str, Any]], part: str) -> float:
        return float(statistics.median(r[part]["query_ms"] + r[part]["fetch_ms"] for r in group)) if group else 0.0

    summary = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "load": os.getloadavg()[0],
               "events_per_day": args.events, "rules": rules, "windows": rows,
               "medians_ms": {p: {"with_events": med(busy, p), "empty": med(quiet, p)} for p in parts},
               "probe_alone_total_ms": sum(a["query_ms"] for a in alone),
               "probe_alone_top": sorted(alone, key=lambda a: -a["query_ms"])[:10]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    lines = [f"# Where a scan's node time goes ({rules} rules, {args.events:,} events a day)", "",
             f"`python bench/rules/scan_profile.py` on {summary['date']}, load average {summary['load']:.1f}; "
             f"{len(busy)} windows of 5 minutes with events, {len(quiet)} empty. Shard query + fetch ms (index "
             "search stats), medians:", "", "| part | window with events | empty window |", "|---|---:|---:|"]
    lines += [f"| {p} | {summary['medians_ms'][p]['with_events']:,.0f} | {summary['medians_ms'][p]['empty']:,.0f} |"
              for p in parts]
    lines += ["", f"Each rule's probe alone, one after another, over the busiest window: "
              f"{summary['probe_alone_total_ms']:,} ms in all; the costliest: "
              + "; ".join(f"{a['rule']} ({a['kind']}) {a['query_ms']} ms" for a in summary["probe_alone_top"]), ""]
    args.out.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
