"""Our rule library over a day of one agency: secmon's scan against the ElastAlert-2 way.

    python bench/rules/library.py [--events 1000000] [--runs 3] [--ea-every 1]

It starts its own local node (`SECMON_ES_HOME=/tmp/es-bench SECMON_ES_PORT=9255 scripts/es-local start`)
and wipes it at the end (`--keep-node` to skip both and use a running node at --es-url).

1. Data: every real line of loghub Linux.log (linux-auth), web_scanner_accesslogs (apache-access) and
   EVTX-ATTACK-SAMPLES jsonl (windows-evtx) from ../shared/datasets is normalized once by secmon's own
   Normalizer; each source is then repeated, in its original order, until the sources hold --events
   together (in proportion to their line counts), spread evenly over one UTC day (the copies get their
   own @timestamp, process.pid and id), and shipped by secmon's BulkWriter (2,000 per `_bulk`) into
   one agency of a bench index prefix; then a refresh.
2. secmon: `service.rule_findings` for every rule of rules/ over the 24 h (the scan code path,
   without recording incidents or mail): the requests it makes and the wall time, median of --runs.
3. ElastAlert 2's way: one search per rule per 5-minute window (288 windows), the rule's compiled
   query AND the window range, size 0 with a hit count (ElastAlert's use_count_query; a terms
   aggregation on the first group-by field, its use_terms_query, for rules that group): the
   cheapest form of its per-window query. With --ea-every K only every K-th window runs and the
   requests and seconds are multiplied by K (the results say so).
Every request to Elasticsearch is counted by wrapping the client's transport. Writes
bench/results/rules-library.json and .md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from elasticsearch import Elasticsearch  # noqa: E402

from secmon.collect.files import read_records  # noqa: E402
from secmon.detect.rules.compile import and_  # noqa: E402
from secmon.detect.rules.load import CompiledRule, load_rules  # noqa: E402
from secmon.errors import SecmonError  # noqa: E402
from secmon.model import Event, stable_id  # noqa: E402
from secmon.normalize.engine import Normalizer  # noqa: E402
from secmon.normalize.pipeline import load_pipelines  # noqa: E402
from secmon.service.scan import rule_findings  # noqa: E402
from secmon.types import AGENCY_FIELD  # noqa: E402
from secmon.store.indices import Indices  # noqa: E402
from secmon.detect.rules.plan import window_filter  # noqa: E402
from secmon.store.templates import install_templates  # noqa: E402
from secmon.store.writer import BulkWriter, WriteStats  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
AGENCY = "so-bench"
PORT = 9255
NODE_ENV = {"SECMON_ES_HOME": "/tmp/es-bench", "SECMON_ES_PORT": str(PORT)}
BATCH = 2000
DAY = timedelta(hours=24)
WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class Source:
    pipeline: str
    paths: tuple[Path, ...]
    year: int | None = None  # syslog lines carry no year


def sources(datasets: Path) -> list[Source]:
    return [
        Source("linux-auth", (datasets / "loghub_linux_full" / "Linux" / "Linux.log",), year=2005),
        Source("apache-access", tuple(sorted((datasets / "web_scanner_accesslogs").glob("*.txt")))),
        Source("windows-evtx", tuple(sorted((datasets / "evtx_attack_samples" / "jsonl").rglob("*.jsonl")))),
    ]


# --- counting requests -------------------------------------------------------------------

class RequestCounter:
    """Counts every HTTP request the client sends, by endpoint kind.

    It wraps the transport's perform_request: every API call of the client, and of
    the copies es.options() makes (they share the transport), goes through it once.
    """

    def __init__(self, es: Elasticsearch):
        self.kinds: Counter[str] = Counter()
        transport = es.transport
        inner = transport.perform_request

        def counted(method: str, target: str, *args: Any, **kwargs: Any) -> Any:
            self.kinds[f"{method} {_kind(target)}"] += 1
            return inner(method, target, *args, **kwargs)

        transport.perform_request = counted  # type: ignore[method-assign]

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def reset(self) -> None:
        self.kinds.clear()


def _kind(target: str) -> str:
    path = target.split("?", 1)[0]
    return next((part for part in reversed(path.split("/")) if part.startswith("_")), path)


# --- data --------------------------------------------------------------------------------

def templates(source: Source, now: datetime) -> list[bytes]:
    """Every real line of the source as secmon's ECS document (JSON), in file order."""
    pipeline = load_pipelines([ROOT / "pipelines"])[source.pipeline]
    docs: list[bytes] = []
    for path in source.paths:
        normalizer = Normalizer(pipeline, agency=AGENCY, timezone="Asia/Ho_Chi_Minh", source=str(path),
                                now=now, year=source.year)
        for record in read_records(path):
            item = normalizer.normalize(record.text, record.offset, record.record_id)
            if isinstance(item, Event):  # dead letters and skipped lines are not events to scan
                docs.append(orjson.dumps(item.doc))
    return docs


def copies(pipeline: str, docs: list[bytes], count: int, start: datetime) -> Iterator[Event]:
    """`count` events cycling through `docs` in order, spread evenly over the day from `start`."""
    step = DAY / count
    for j in range(count):
        doc = orjson.loads(docs[j % len(docs)])
        doc["@timestamp"] = (start + step * j).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        process = doc.get("process")
        if isinstance(process, dict) and isinstance(process.get("pid"), int):
            process["pid"] += 100_000 * (j // len(docs))  # another run of the same program
        yield Event(id=stable_id("event", AGENCY, f"bench:{pipeline}:{j}"), doc=doc)


def chunked(events: Iterator[Event]) -> Iterator[list[Event]]:
    batch: list[Event] = []
    for event in events:
        batch.append(event)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def load_day(es: Elasticsearch, indices: Indices, total: int, start: datetime, datasets: Path
             ) -> dict[str, Any]:
    install_templates(es, indices)
    now = datetime.now(timezone.utc)
    real = {s.pipeline: templates(s, now) for s in sources(datasets)}
    lines = sum(len(d) for d in real.values())
    shares = {name: round(total * len(docs) / lines) for name, docs in real.items()}
    writer = BulkWriter(es, indices)
    stats = WriteStats()
    started = time.perf_counter()
    # Two bulk requests in flight: the node has the CPUs the generator leaves it.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list[Future[WriteStats]] = []
        for name, docs in real.items():
            for batch in chunked(copies(name, docs, shares[name], start)):
                pending.append(pool.submit(writer.send, writer.serialize(batch, AGENCY)))
                while len(pending) > 4:
                    stats.add(pending.pop(0).result())
        for future in pending:
            stats.add(future.result())
    es.indices.refresh(index=indices.events_pattern())
    seconds = time.perf_counter() - started
    indexed = int(es.count(index=indices.events_pattern())["count"])
    if stats.rejected or indexed != sum(shares.values()):
        raise RuntimeError(f"indexed {indexed} of {sum(shares.values())} events; {stats.reasons}")
    return {"events": indexed, "real_lines": {k: len(v) for k, v in real.items()}, "events_per_source": shares,
            "index_seconds": round(seconds, 1), "events_per_s": round(indexed / seconds)}


# --- the two ways of running the library -------------------------------------------------

def run_secmon(es: Elasticsearch, counter: RequestCounter, indices: Indices, rules: tuple[CompiledRule, ...],
               start: datetime) -> dict[str, Any]:
    counter.reset()
    findings = 0
    failures: list[str] = []
    started = time.perf_counter()
    for rule in rules:
        try:
            findings += len(rule_findings(es, indices, rule, start, start + DAY))
        except SecmonError as exc:  # as in service.scan: one failing rule never stops the others
            failures.append(f"{rule.id}: {exc}")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "requests": counter.total, "findings": findings, "failures": failures,
            "request_kinds": dict(counter.kinds)}


def elastalert_query(rule: CompiledRule, window_start: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {"query": and_([window_filter(window_start, window_start + WINDOW), rule.query]),
                            "size": 0, "track_total_hits": True}
    group = [f for f in rule.group_by if f != AGENCY_FIELD]
    if group:
        body["aggs"] = {"by": {"terms": {"field": group[0], "size": 50}}}
    return body


def run_elastalert(es: Elasticsearch, counter: RequestCounter, indices: Indices, rules: tuple[CompiledRule, ...],
                   start: datetime, every: int) -> dict[str, Any]:
    counter.reset()
    windows = [start + WINDOW * i for i in range(0, int(DAY / WINDOW), every)]
    matched = 0
    started = time.perf_counter()
    for window_start in windows:
        for rule in rules:
            response = es.search(index=indices.events_pattern(), ignore_unavailable=True, allow_no_indices=True,
                                 **elastalert_query(rule, window_start))
            matched += response["hits"]["total"]["value"] > 0
    seconds = time.perf_counter() - started
    return {"seconds": seconds * every, "requests": counter.total * every, "measured_seconds": seconds,
            "measured_requests": counter.total, "windows_run": len(windows), "rule_windows_with_matches": matched}


# --- node and results --------------------------------------------------------------------

def es_local(command: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "es-local"), command], check=True,
                   env={**os.environ, **NODE_ENV})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ea-every", type=int, default=1, help="run every K-th 5-minute window and scale by K")
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--keep-node", action="store_true", help="use the node at --es-url; do not start or wipe")
    parser.add_argument("--es-url", default=f"http://127.0.0.1:{PORT}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rules-library")
    args = parser.parse_args()

    machine = {"nproc": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
               "python": platform.python_version(), "platform": platform.platform()}
    if not args.keep_node:
        es_local("start")
    try:
        es = Elasticsearch(args.es_url, request_timeout=300)
        machine["elasticsearch"] = es.info()["version"]["number"]
        indices = Indices(f"bench{os.getpid()}")
        start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - DAY
        try:
            data = load_day(es, indices, args.events, start, args.datasets)
            print(f"indexed {data['events']:,} events in {data['index_seconds']} s", flush=True)
            loaded = time.perf_counter()
            ruleset = load_rules([ROOT / "rules"])
            compile_seconds = time.perf_counter() - loaded
            counter = RequestCounter(es)
            secmon_runs, ea_runs = [], []
            for run in range(args.runs):
                secmon_runs.append(run_secmon(es, counter, indices, ruleset.rules, start))
                ea_runs.append(run_elastalert(es, counter, indices, ruleset.rules, start, args.ea_every))
                print(f"run {run + 1}: secmon {secmon_runs[-1]['requests']} requests {secmon_runs[-1]['seconds']:.1f} s;"
                      f" elastalert-way {ea_runs[-1]['requests']} requests {ea_runs[-1]['seconds']:.1f} s", flush=True)
        finally:
            es.indices.delete(index=f"{indices.prefix}*", ignore_unavailable=True, allow_no_indices=True)
    finally:
        if not args.keep_node:
            es_local("wipe")
    write_results(args, machine, data, len(ruleset.rules), len(ruleset.problems), compile_seconds, start,
                  secmon_runs, ea_runs)


def write_results(args: argparse.Namespace, machine: dict[str, Any], data: dict[str, Any], rules: int,
                  problems: int, compile_seconds: float, start: datetime, secmon_runs: list[dict[str, Any]],
                  ea_runs: list[dict[str, Any]]) -> None:
    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    secmon = {"requests": median(secmon_runs, "requests"), "seconds": round(median(secmon_runs, "seconds"), 2)}
    ea = {"requests": median(ea_runs, "requests"), "seconds": round(median(ea_runs, "seconds"), 2)}
    windows = int(DAY / WINDOW)
    sampled = args.ea_every > 1
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine,
        "command": f"python bench/rules/library.py --events {args.events} --runs {args.runs} --ea-every {args.ea_every}",
        "data": data, "day": [start.isoformat(), (start + DAY).isoformat()], "agency": AGENCY,
        "rules": rules, "rule_problems": problems, "rules_compile_seconds": round(compile_seconds, 2),
        "runs": args.runs, "secmon": secmon,
        "elastalert_way": {**ea, "windows": windows, "window_minutes": int(WINDOW.total_seconds() // 60),
                           "windows_run_per_run": ea_runs[0]["windows_run"], "extrapolated": sampled,
                           "rule_windows_with_matches": ea_runs[0]["rule_windows_with_matches"]},
        "ratios": {"requests": round(ea["requests"] / secmon["requests"], 1),
                   "seconds": round(ea["seconds"] / secmon["seconds"], 1)},
        "secmon_findings": secmon_runs[0]["findings"], "secmon_rule_failures": secmon_runs[0]["failures"],
        "secmon_request_kinds": secmon_runs[0]["request_kinds"],
        "raw": {"secmon": [{k: r[k] for k in ("seconds", "requests")} for r in secmon_runs],
                "elastalert_way": [{k: v for k, v in r.items()} for r in ea_runs]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    per_source = ", ".join(f"{name} {count:,} (from {data['real_lines'][name]:,} real lines)"
                           for name, count in data["events_per_source"].items())
    sample_note = (f" Only every {args.ea_every}th window ran ({ea_runs[0]['windows_run']} of {windows}); its requests "
                   f"and seconds are multiplied by {args.ea_every}." if sampled else "")
    args.out.with_suffix(".md").write_text(f"""# Rule library over one day of one agency

`{summary['command']}` on {summary['date']} ({machine['nproc']} CPUs, load average at start
{machine['load_average_at_start'][0]:.2f}; Python {machine['python']}; Elasticsearch {machine['elasticsearch']}, the local
node of `scripts/es-local` on the same machine, heap 1 GB).

Data: {data['events']:,} events of agency `{AGENCY}` over {start:%Y-%m-%d} (UTC, 24 h): {per_source}; real lines
normalized by secmon's pipelines, repeated with shifted timestamps and pids, shipped by secmon's BulkWriter in
{data['index_seconds']} s ({data['events_per_s']:,} events/s). Rules: the {rules} rules of `rules/`
({problems} problems; compiled in {compile_seconds:.1f} s, not counted below). Medians of {args.runs} runs; every
HTTP request to Elasticsearch is counted at the client's transport.

| way | requests | seconds |
|---|---:|---:|
| secmon: `service.rule_findings` per rule over the 24 h (composite aggregation, then point in time + search_after on the matching groups) | {secmon['requests']:,.0f} | {secmon['seconds']:.1f} |
| ElastAlert 2 way: one search per rule per {summary['elastalert_way']['window_minutes']}-minute window ({windows} x {rules}), size 0 + hit count (+ terms on the group-by field) | {ea['requests']:,.0f} | {ea['seconds']:.1f} |
| ratio ElastAlert way / secmon | {summary['ratios']['requests']} | {summary['ratios']['seconds']} |

secmon found {summary['secmon_findings']:,} findings ({len(summary['secmon_rule_failures'])} rules failed). The
ElastAlert-way queries only count: the cheapest form of that design (ElastAlert would also fetch the hits of every rule-window that matched:
{summary['elastalert_way']['rule_windows_with_matches']:,} in the windows run, and it misses bursts that cross a
window edge).{sample_note} Requests of one secmon run by kind: {json.dumps(summary['secmon_request_kinds'])}.
""", encoding="utf-8")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
