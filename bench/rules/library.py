"""Our rule library over one day of one agency: secmon next to real ElastAlert 2, like for like.

    python bench/rules/library.py [--events 1000000] [--runs 3] [--es-url http://127.0.0.1:9200]

ElastAlert 2 runs from its own virtualenv (`--ea2-python`, default ~/.cache/secmon/ea2/bin/python:
`python -m venv ~/.cache/secmon/ea2 && ~/.cache/secmon/ea2/bin/pip install elastalert2 pytz`).

1. Data: every real line of loghub Linux.log (linux-auth), web_scanner_accesslogs (apache-access) and
   EVTX-ATTACK-SAMPLES jsonl (windows-evtx) from ../shared/datasets, normalized by secmon's pipelines
   (the collector's Normalizer); each source repeated in its order with shifted timestamps and pids
   until the three hold --events together, spread over one UTC day (yesterday), merged in time order
   and shipped by secmon's BulkWriter in batches of 2,000 whose `event.ingested` is the time of the
   batch's last event + 2 s, as if a collector had shipped them during that day. Bench index prefix on
   the node at --es-url (`--prefix`, default bench-rl<pid>), deleted at the end.
2. Both tools talk to the node through `proxy.py`, a counting HTTP proxy on loopback: requests,
   bytes and the node's `took` per request, by where they go (events indices, search contexts,
   the tools' own bookkeeping indices).
3. Four ways, each --runs times after one discarded warm-up (the two backfills over the first
   --warmup-hours), the node's request cache of the
   bench indices cleared and each tool's own state (secmon's incidents, watermark..., ElastAlert's
   writeback index) deleted before every run:
   - secmon scheduled: the scheduler's scan job (`service.run.scan_due` through `run_job`, with
     the lease kept) every 5 minutes of a fake clock over the day, on event.ingested windows, with
     the config defaults (ingest_delay 1m, max_chunk 1h): 289 runs, in-process;
   - secmon backfill: one `secmon scan --from D --to D+1 --no-deliver` over the day, the whole
     command as a subprocess;
   - ElastAlert 2 live: `ea2_driver.py --mode live`, its rule jobs every run_every (5 minutes) of
     its own clock over the day;
   - ElastAlert 2 backfill: `ea2_driver.py --mode backfill`, each rule once from D to D+1.
   ElastAlert 2 runs with its defaults (buffer_time 15 minutes, max_threads 10, max_query_size
   10,000, scroll) and its own rule files, written from the same compiled rules (see ea2_rules).
Writes bench/results/rules-library.json and .md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from elasticsearch import Elasticsearch  # noqa: E402

from secmon.collect.files import read_records  # noqa: E402
from secmon.config import load_settings  # noqa: E402
from secmon.detect.sigma.load import CompiledRule, load_rules  # noqa: E402
from secmon.model import Event, stable_id  # noqa: E402
from secmon.normalize.engine import Normalizer  # noqa: E402
from secmon.normalize.pipeline import load_pipelines  # noqa: E402
from secmon.service import run as jobs  # noqa: E402
from secmon.store.indices import Indices  # noqa: E402
from secmon.store.templates import install_templates  # noqa: E402
from secmon.store.writer import BulkWriter, WriteStats  # noqa: E402
from secmon.types import AGENCY_FIELD, iso  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
AGENCY = "so-bench"
BATCH = 2000
DAY = timedelta(hours=24)
TICK = timedelta(minutes=5)  # secmon's schedule.scan_interval default, and ElastAlert's run_every here
EA2_PYTHON = Path.home() / ".cache" / "secmon" / "ea2" / "bin" / "python"
SEARCHES = ("_search", "_msearch", "_pit", "_count")  # on a scroll, clear scroll and point in time too
# In the order they run: the scheduled pair first, so that a run cut short has that comparison.
WAYS = ("secmon_scheduled", "elastalert2_live", "secmon_backfill", "elastalert2_backfill")


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


def timeline(pipeline: str, docs: list[bytes], count: int, start: datetime, span: timedelta
             ) -> Iterator[tuple[datetime, str, int, list[bytes]]]:
    """(time, pipeline, j, docs) of `count` events cycling through `docs`, spread evenly over the span."""
    step = span / count
    for j in range(count):
        yield start + step * j, pipeline, j, docs


def event_at(when: datetime, pipeline: str, j: int, docs: list[bytes]) -> Event:
    doc = orjson.loads(docs[j % len(docs)])
    doc["@timestamp"] = iso(when)
    process = doc.get("process")
    if isinstance(process, dict) and isinstance(process.get("pid"), int):
        process["pid"] += 100_000 * (j // len(docs))  # another run of the same program
    return Event(id=stable_id("event", AGENCY, f"bench:{pipeline}:{j}"), doc=doc)


def load_day(es: Elasticsearch, indices: Indices, total: int, start: datetime, span: timedelta, datasets: Path
             ) -> dict[str, Any]:
    install_templates(es, indices)
    real = {s.pipeline: templates(s, datetime.now(timezone.utc)) for s in sources(datasets)}
    lines = sum(len(d) for d in real.values())
    shares = {name: round(total * len(docs) / lines) for name, docs in real.items()}
    stats = WriteStats()
    started = time.perf_counter()
    merged = heapq.merge(*(timeline(name, docs, shares[name], start, span) for name, docs in real.items()),
                         key=lambda item: item[0])
    with ThreadPoolExecutor(max_workers=2) as pool:  # two bulks in flight: the node has the CPUs left
        pending: list[Future[WriteStats]] = []
        batch: list[Event] = []
        for when, name, j, docs in merged:
            batch.append(event_at(when, name, j, docs))
            if len(batch) == BATCH:
                pending.append(pool.submit(ship, es, indices, batch, when + timedelta(seconds=2)))
                batch = []
                while len(pending) > 4:
                    stats.add(pending.pop(0).result())
        if batch:
            pending.append(pool.submit(ship, es, indices, batch, start + span))
        for future in pending:
            stats.add(future.result())
    es.indices.refresh(index=indices.events_pattern())
    seconds = time.perf_counter() - started
    indexed = int(es.count(index=indices.events_pattern())["count"])
    if stats.rejected or indexed != sum(shares.values()):
        raise RuntimeError(f"indexed {indexed} of {sum(shares.values())} events; {stats.reasons}")
    return {"events": indexed, "real_lines": {k: len(v) for k, v in real.items()}, "events_per_source": shares,
            "index_seconds": round(seconds, 1)}


def ship(es: Elasticsearch, indices: Indices, batch: list[Event], ingested: datetime) -> WriteStats:
    """One batch as the collector sends it, stamped as sent at `ingested`."""
    writer = BulkWriter(es, indices, now=lambda: ingested)
    return writer.send(writer.serialize(batch, AGENCY))


# --- the counting proxy -----------------------------------------------------------------

class Proxy:
    def __init__(self, upstream: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "rules" / "proxy.py"), "--port",
                                      str(self.port), "--upstream", upstream], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "listening on ..." once it accepts connections

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/__bench/reset", method="POST"), timeout=30).read()

    def stats(self) -> dict[str, dict[str, float]]:
        with urllib.request.urlopen(f"{self.url}/__bench/stats", timeout=30) as answer:
            found: dict[str, dict[str, float]] = json.loads(answer.read())
            return found

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def totals(kinds: dict[str, dict[str, float]]) -> dict[str, Any]:
    """All requests, and those that search the events (on the events indices and their search contexts)."""
    def add(rows: list[dict[str, float]]) -> dict[str, float]:
        return {key: round(sum(r[key] for r in rows), 1) for key in
                ("requests", "bytes_out", "bytes_in", "wall_ms", "took_ms", "errors")}
    requests = {kind: row for kind, row in kinds.items() if kind.split()[0] in ("events", "context", "other")}
    return {"all": add(list(requests.values())),
            "event_searches": add([row for kind, row in requests.items() if kind.split()[0] in ("events", "context")
                                   and kind.split()[2] in SEARCHES]),
            "kinds": kinds}


# --- ElastAlert 2's rule files ----------------------------------------------------------

def ea2_rules(rules: tuple[CompiledRule, ...], folder: Path, index: str) -> dict[str, int]:
    """ElastAlert 2 rule files for the same conditions: the same compiled query as its filter.

    single -> `any`; event_count >= N in T -> `frequency` (num_events N, timeframe T); value_count
    >= N distinct in T -> `cardinality` (max_cardinality N - 1, which alerts above it); temporal_ordered
    has no ElastAlert 2 rule type: it runs as `any` on the union of the sequence's queries (the events
    a custom rule type would need), which does not evaluate the order. query_key = the rule's group-by
    fields (the agency is one here). Alerter `debug` (a log line): no mail on either side.
    """
    folder.mkdir(parents=True, exist_ok=True)
    types: dict[str, int] = {}
    for n, rule in enumerate(rules):
        group = [f for f in rule.group_by if f != AGENCY_FIELD]
        body: dict[str, Any] = {"name": f"{n:03d} {rule.title}", "index": index, "filter": [rule.query],
                                "alert": ["debug"]}
        if group:
            body["query_key"] = group if len(group) > 1 else group[0]
        seconds = int(rule.timespan.total_seconds())
        if rule.kind == "event_count" and rule.correlation is None:
            body |= {"type": "frequency", "num_events": rule.threshold, "timeframe": {"seconds": seconds}}
        elif rule.kind == "value_count" and rule.condition[0] == "gte" and rule.value_field:
            body |= {"type": "cardinality", "cardinality_field": rule.value_field,
                     "max_cardinality": int(rule.condition[1]) - 1, "timeframe": {"seconds": seconds}}
        elif rule.kind == "single":
            body["type"] = "any"
        else:
            body["type"] = "any"
            types[f"{rule.kind} as any"] = types.get(f"{rule.kind} as any", 0) + 1
        types[body["type"]] = types.get(body["type"], 0) + 1
        (folder / f"{n:03d}.yaml").write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return types


def ea2_config(path: Path, rules_folder: Path, proxy_port: int, writeback: str) -> None:
    """Its defaults, but for the settings it has no default for (run_every, buffer_time: as its example)."""
    path.write_text(yaml.safe_dump({
        "rules_folder": str(rules_folder), "run_every": {"minutes": 5}, "buffer_time": {"minutes": 15},
        "es_host": "127.0.0.1", "es_port": proxy_port, "writeback_index": writeback,
        "alert_time_limit": {"days": 2}}), encoding="utf-8")


# --- the four ways ----------------------------------------------------------------------

def secmon_config(path: Path, proxy: str, prefix: str) -> None:
    path.write_text(f"""\
elasticsearch:
  hosts: [{proxy}]
  index_prefix: {prefix}
  request_timeout: 300
agencies:
  - id: {AGENCY}
    name: bench
    recipients: [soc@bench.example]
smtp:
  host: 127.0.0.1
  port: 9
  sender: secmon@bench.example
schedule:
  scan_interval: 5m
  lookback: 1m
  lease: 15m
rules: [{ROOT / 'rules'}]
pipelines: [{ROOT / 'pipelines'}]
""", encoding="utf-8")


def secmon_scheduled(es: Elasticsearch, config: Path, day: datetime, span: timedelta) -> dict[str, Any]:
    """The scheduler's scan job every 5 minutes of a fake clock: ticks at D+1m, D+6m, ... D+span+1m
    scan event.ingested [previous end, tick - ingest_delay), the first from tick - lookback = D."""
    settings = load_settings(config)
    keeper = jobs.Keeper(es, settings, me="bench:scheduler")
    stop = threading.Event()
    outcomes: dict[str, int] = {}
    ticks = int(span / TICK) + 1
    for k in range(ticks):
        now = day + timedelta(minutes=1) + TICK * k
        keeper.keep(now)  # the lease job renews it before the scan runs
        def scan(token: Any, now: datetime = now) -> Any:
            return jobs.scan_due(es, settings, keeper, token, lambda: now, stop)

        def clock(now: datetime = now) -> datetime:
            return now

        result = jobs.run_job(es, settings, keeper, "scan", scan, clock)
        outcome = result.outcome if result else "skipped"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {"ticks": ticks, "outcomes": outcomes}


def secmon_backfill(config: Path, day: datetime, span: timedelta) -> dict[str, Any]:
    command = [sys.executable, "-m", "secmon", "-c", str(config), "scan", "--from", iso(day), "--to",
               iso(day + span), "--no-deliver", "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode not in (0, 1):  # 1: incidents found
        raise RuntimeError(f"secmon scan exited {done.returncode}: {done.stderr[-2000:]}")
    return {"exit": done.returncode, "command": " ".join(command[1:3] + command[5:])}


def elastalert2(python: Path, config: Path, mode: str, day: datetime, span: timedelta) -> dict[str, Any]:
    start, end = (day, day + span)
    command = [str(python), str(ROOT / "bench" / "rules" / "ea2_driver.py"), "--config", str(config), "--mode", mode,
               "--start", iso(start), "--end", iso(end)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ea2_driver exited {done.returncode}: {done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def reset_state(es: Elasticsearch, indices: Indices, python: Path, ea2_cfg: Path, writeback: str) -> None:
    """Each run starts from the same state: no incidents, watermark, lease or ElastAlert writeback,
    and no cached search answers of the events."""
    keep = indices.events_pattern()
    for name in (indices.incidents, indices.alerts, indices.scans, indices.audit, indices.state,
                 indices.exceptions):
        es.indices.delete(index=name, ignore_unavailable=True)
    es.indices.delete(index=f"{writeback}*", ignore_unavailable=True, allow_no_indices=True)
    subprocess.run([str(python), "-m", "elastalert.create_index", "--config", str(ea2_cfg)], check=True,
                   capture_output=True)
    es.indices.clear_cache(index=keep, request=True)


def shard_search_ms(es: Elasticsearch, pattern: str) -> dict[str, int]:
    """The node's own time searching these indices (query and fetch phases on their shards, summed):
    unlike `took`, it leaves out the time a search waited in the node's queue."""
    found = es.indices.stats(index=pattern, metric="search")["_all"]["total"]["search"]
    return {"query_ms": int(found["query_time_in_millis"]), "fetch_ms": int(found["fetch_time_in_millis"]),
            "queries": int(found["query_total"])}


def uptime_load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- main --------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events per day")
    parser.add_argument("--hours", type=float, default=24, help="the span measured, from 00:00 UTC yesterday")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup-hours", type=float, default=1,
                        help="the span of the discarded warm-up backfills, from the span's start (at most --hours)")
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--ea2-python", type=Path, default=EA2_PYTHON)
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--ways", default=",".join(WAYS), help="a subset, comma-separated (to try it out)")
    parser.add_argument("--work", type=Path, default=Path("/tmp") / f"rulesbench{os.getpid()}")
    parser.add_argument("--prefix", default=f"bench-rl{os.getpid()}",
                        help="index prefix of this run's indices on the node (its own: they are deleted at the end)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rules-library")
    parser.add_argument("--rewrite", action="store_true", help="only rewrite OUT.md from OUT.json")
    parser.add_argument("--with", dest="earlier", type=Path, action="append", default=[],
                        help="an earlier results .json of the same data and rules: its ways not run now join the "
                             "results, said as such (a day of ElastAlert 2 takes hours; it need not be re-run "
                             "to measure a change to secmon)")
    parser.add_argument("--join", type=Path, nargs="+", default=[], metavar="RESULTS",
                        help="measure nothing: write OUT from the first of these results .json with the ways of "
                             "the others joined as --with joins them (the same data, rules and hours)")
    args = parser.parse_args()
    if args.join:
        join_files(args.join, args.out)
        return
    if args.rewrite:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.with_suffix(".json").read_text())),
                                               encoding="utf-8")
        return
    ways = [w for w in args.ways.split(",") if w]
    span = timedelta(hours=args.hours)

    direct = Elasticsearch(args.es_url, request_timeout=600)
    ea2_version = subprocess.run([str(args.ea2_python), "-c", "import importlib.metadata as m; print("
                                  "m.version('elastalert2'), m.version('elasticsearch'))"],
                                 check=True, capture_output=True, text=True).stdout.split()
    machine = {"nproc": os.cpu_count(), "load_at_start": uptime_load(), "python": platform.python_version(),
               "platform": platform.platform(), "elasticsearch": direct.info()["version"]["number"],
               "elastalert2": ea2_version[0], "elastalert2_client": ea2_version[1]}
    # Patterns end in "-*": `bench-rl3137*` would also name a run's `bench-rl31376-...` (pids wrap at 32768).
    prefix = args.prefix
    indices = Indices(prefix)
    writeback = f"{prefix}-ea2"
    taken = direct.indices.get(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True, expand_wildcards="all")
    if taken:  # another run's (ours are deleted at the end): never measure or delete them
        raise SystemExit(f"indices {', '.join(sorted(taken))} exist already: choose another --prefix")
    day = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - DAY
    args.work.mkdir(parents=True, exist_ok=True)
    proxy = Proxy(args.es_url)
    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    try:
        data = load_day(direct, indices, round(args.events * args.hours / 24), day, span, args.datasets)
        print(f"indexed {data['events']:,} events in {data['index_seconds']} s", flush=True)
        ruleset = load_rules([ROOT / "rules"])
        joined = join_earlier(args.earlier, data, len(ruleset.rules), args.hours, ways, runs)
        machine["joined"] = joined
        ea2_types = ea2_rules(ruleset.rules, args.work / "ea2-rules", indices.events_pattern())
        ea2_cfg = args.work / "ea2.yaml"
        ea2_config(ea2_cfg, args.work / "ea2-rules", proxy.port, writeback)
        config = args.work / "secmon.yml"
        secmon_config(config, proxy.url, prefix)
        through = Elasticsearch(proxy.url, request_timeout=600)
        for run in range(args.runs + 1):  # run 0 is the warm-up, discarded
            # The warm-up: the backfills over the first hour (the node's caches, ElastAlert's imports); a
            # backfill of an hour takes the same roads as a day's (more than 10,000 events: probes on the node).
            warm = min(span, timedelta(hours=args.warmup_hours))
            for way in ways if run else [w for w in ways if w.endswith("backfill")]:
                length = span if run else warm
                reset_state(direct, indices, args.ea2_python, ea2_cfg, writeback)
                load = uptime_load()
                before = {"events": shard_search_ms(direct, indices.events_pattern()),
                          "all": shard_search_ms(direct, f"{prefix}-*")}
                proxy.reset()
                started = time.perf_counter()
                if way == "secmon_scheduled":
                    detail = secmon_scheduled(through, config, day, length)
                elif way == "secmon_backfill":
                    detail = secmon_backfill(config, day, length)
                else:
                    detail = elastalert2(args.ea2_python, ea2_cfg, way.split("_")[1], day, length)
                wall = time.perf_counter() - started
                counted = totals(proxy.stats())
                for part in ("events", "all"):
                    after = shard_search_ms(direct, indices.events_pattern() if part == "events" else f"{prefix}-*")
                    counted[f"shard_search_{part}"] = {k: after[k] - before[part][k] for k in after}
                    counted[f"shard_search_{part}"]["ms"] = sum(counted[f"shard_search_{part}"][k]
                                                                for k in ("query_ms", "fetch_ms"))
                detail |= {"incidents": count_of(direct, indices.incidents)} if way.startswith("secmon") else {}
                runs[way].append({"run": run, "hours": length / timedelta(hours=1), "load": load,
                                  "load_end": uptime_load(), "wall_s": round(wall, 1), **counted, "detail": detail})
                print(f"run {run} {way} over {length}: {counted['all']['requests']:.0f} requests, took "
                      f"{counted['all']['took_ms']:.0f} ms, wall {wall:.1f} s, load {load[0]}", flush=True)
                if run:  # what is measured so far, should the rest not finish (rewritten at the end)
                    write_results(args, machine, data, ruleset, ea2_types, day, span, runs, complete=False)
    finally:
        proxy.close()
        direct.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    write_results(args, machine, data, ruleset, ea2_types, day, span, runs, complete=True)


SAME_DATA = ("events", "real_lines", "events_per_source")


def join_earlier(paths: list[Path], data: dict[str, Any], rules: int, hours: float, ways: list[str],
                 runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The ways of earlier results files that this run did not measure, when they measured the same
    events (same counts per source from the same real lines) with the same rules over the same span.
    Returns where each joined way came from, for the results to say."""
    joined: dict[str, dict[str, Any]] = {}
    for path in paths:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        mismatch = [k for k in SAME_DATA if earlier["data"].get(k) != data.get(k)]
        mismatch += ["rules"] if earlier["rules"] != rules else []
        mismatch += ["hours"] if earlier["hours"] != hours else []
        if mismatch:
            raise SystemExit(f"--with {path}: not the same benchmark as this run ({', '.join(mismatch)} differ)")
        for way, measured in earlier["raw"].items():
            if way in ways or way in joined or not [r for r in measured if r["run"] > 0]:
                continue
            runs[way] = measured
            joined[way] = {"file": str(path), "date": earlier["date"], "command": earlier["command"],
                           "load_at_start": earlier["machine"]["load_at_start"]}
    return joined


def join_files(paths: list[Path], out: Path) -> None:
    """OUT from finished results files: the first one's data, machine and ways, the ways of the others
    it did not measure joined (checked as --with checks them), medians and ratios computed again. For a
    side that finished after the other (a day of ElastAlert 2 takes hours): nothing is measured here."""
    first = json.loads(paths[0].read_text(encoding="utf-8"))
    runs = {w: list(rs) for w, rs in first["raw"].items()}
    joined = join_earlier(paths[1:], first["data"], first["rules"], first["hours"], list(runs), runs)
    figures, ratios = summarize(runs)
    summary = first | {"medians": figures, "ratios": ratios, "raw": runs,
                       "machine": first["machine"] | {"joined": (first["machine"].get("joined") or {}) | joined},
                       "command": first["command"] + "".join(f" --with {p}" for p in paths[1:])}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(summary), encoding="utf-8")
    print(out.with_suffix(".md").read_text())


def count_of(es: Elasticsearch, index: str) -> int:
    if not es.indices.exists(index=index):
        return 0
    es.indices.refresh(index=index)
    return int(es.count(index=index)["count"])


def summarize(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each way's medians over its measured runs (the warm-up, run 0, left out), and ElastAlert 2's
    figures over secmon's for the like-for-like pairs."""
    measured = {w: [r for r in rs if r["run"] > 0] for w, rs in runs.items()}
    # (figure, where in a run's record): requests and node time, all and on the events only
    keys = {"requests": ("all", "requests"), "event_search_requests": ("event_searches", "requests"),
            "took_s": ("all", "took_ms"), "request_wall_s": ("all", "wall_ms"), "mb_received": ("all", "bytes_in"),
            "shard_search_events_s": ("shard_search_events", "ms"), "shard_search_all_s": ("shard_search_all", "ms")}
    scale = {"took_s": 1000, "request_wall_s": 1000, "mb_received": 1e6, "shard_search_events_s": 1000,
             "shard_search_all_s": 1000}

    def med(way: str, name: str) -> float:
        part, key = keys[name]
        return round(float(statistics.median(r[part][key] for r in measured[way])) / scale.get(name, 1), 2)

    figures = {w: {name: med(w, name) for name in keys} | {"run_wall_s": float(statistics.median(
        r["wall_s"] for r in measured[w]))} for w in measured if measured[w]}
    ratios = {f"{ea} / {sm}": {name: round(figures[ea][name] / figures[sm][name], 1) if figures[sm][name] else None
                               for name in ("requests", "event_search_requests", "took_s", "shard_search_events_s",
                                            "shard_search_all_s", "request_wall_s")}
              for ea, sm in (("elastalert2_live", "secmon_scheduled"), ("elastalert2_backfill", "secmon_backfill"))
              if ea in figures and sm in figures}
    return figures, ratios


def write_results(args: argparse.Namespace, machine: dict[str, Any], data: dict[str, Any], ruleset: Any,
                  ea2_types: dict[str, int], day: datetime, span: timedelta, runs: dict[str, list[dict[str, Any]]],
                  complete: bool) -> None:
    figures, ratios = summarize(runs)
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine,
        "command": f"python bench/rules/library.py --events {args.events} --hours {args.hours:g} --runs {args.runs}"
                   + (f" --warmup-hours {args.warmup_hours:g}" if args.warmup_hours != 1 else "")
                   + (f" --ways {args.ways}" if args.ways != ",".join(WAYS) else "")
                   + "".join(f" --with {p}" for p in args.earlier),
        "complete": complete, "warmup_hours": min(args.hours, args.warmup_hours),
        "data": data, "span": [iso(day), iso(day + span)], "hours": args.hours, "ticks": int(span / TICK) + 1,
        "agency": AGENCY, "rules": len(ruleset.rules), "elastalert2_rule_types": ea2_types, "runs": args.runs,
        "medians": figures, "ratios": ratios, "raw": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(summary), encoding="utf-8")
    if complete:
        print(args.out.with_suffix(".md").read_text())


def targets(s: dict[str, Any]) -> str:
    """Issue 12's targets for the scheduled comparison, against each measure of node time."""
    found = s["ratios"].get("elastalert2_live / secmon_scheduled")
    if not found:
        return ""
    # None: secmon's figure rounded to 0 (the index stats count milliseconds), no ratio to give.
    r = {k: "n/a " if v is None else v for k, v in found.items()}
    return (f"Issue 12's targets for scheduled runs (ElastAlert 2 at its defaults / secmon: requests >= 20x, node "
            f"time >= 5x), over the {s['hours']:g} h measured: requests {r['requests']}x; node time "
            f"{r['shard_search_events_s']}x by shard search time on the events ({r['shard_search_all_s']}x on all "
            f"indices), {r['took_s']}x by the sum of took, which counts the time searches waited in the node's "
            f"queue (ElastAlert 2 sends up to max_threads = 10 requests at once) and counts an _msearch once for "
            f"all its searches, which the node runs side by side (secmon sends one request at a time).")


def _measured_span(finished: str, runs: list[dict[str, Any]]) -> tuple[datetime, datetime]:
    """About when a results file's measured runs ran: they end when the file is written (`date`), and took
    their walls one after another (the warm-up and the loading before them are left out)."""
    end = datetime.strptime(finished, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return end - timedelta(seconds=sum(r["wall_s"] for r in runs if r["run"] > 0)), end


def _overlap(one: tuple[datetime, datetime], other: tuple[datetime, datetime]) -> str:
    shared = (min(one[1], other[1]) - max(one[0], other[0])).total_seconds()
    said = f"its measured run about {one[0]:%H:%M} to {one[1]:%H:%M}, this file's {other[0]:%H:%M} to {other[1]:%H:%M} UTC"
    if shared <= 0:
        return f"the two sides did not run in the same minutes ({said})"
    return (f"the two sides ran at the same time for about {shared / 60:.0f} minutes ({said}), "
            f"sharing the node and the cores then")


def markdown(s: dict[str, Any]) -> str:
    data, machine, figures = s["data"], s["machine"], s["medians"]
    per_source = ", ".join(f"{name} {count:,} (from {data['real_lines'][name]:,} real lines)"
                           for name, count in data["events_per_source"].items())
    span = f"{s['hours']:g} h"
    labels = {"secmon_scheduled": f"secmon scheduled: its scan job every 5 min ({s['ticks']} runs)",
              "secmon_backfill": f"secmon backfill: one `secmon scan` over the {span}",
              "elastalert2_live": f"ElastAlert 2 live: every rule every 5 min ({s['ticks']} runs)",
              "elastalert2_backfill": f"ElastAlert 2 backfill: every rule once over the {span}"}
    rows = "\n".join(
        f"| {labels[w]} | {f['requests']:,.0f} | {f['event_search_requests']:,.0f} | {f['shard_search_events_s']:,.1f} | "
        f"{f['shard_search_all_s']:,.1f} | {f['took_s']:,.1f} | {f['request_wall_s']:,.1f} | {f['mb_received']:,.1f} | "
        f"{f['run_wall_s']:,.1f} |" for w, f in figures.items())
    ratio_rows = "\n".join(
        f"| {pair} | {r['requests']} | {r['event_search_requests']} | {r['shard_search_events_s']} | "
        f"{r['shard_search_all_s']} | {r['took_s']} | {r['request_wall_s']} |" for pair, r in s["ratios"].items())
    ran = {w: rs for w, rs in s["raw"].items() if rs}
    ratio_table = ("| ratio | requests | event searches | shard search, events | shard search, all | took | request wall |\n"
                   "|---|---:|---:|---:|---:|---:|---:|\n" + ratio_rows) if ratio_rows else "No pair measured yet: no ratio."
    loads = {w: [[r["load"][0], r["load_end"][0]] if "load_end" in r else [r["load"][0]] for r in rs]
             for w, rs in ran.items()}
    measured = {w: rs[-1] for w, rs in ran.items() if rs[-1]["run"] > 0}  # not the warm-up's
    details = {w: last["detail"] for w, last in measured.items()}
    kinds = {w: {k: v["requests"] for k, v in last["kinds"].items()} for w, last in measured.items()}
    missing = [w for w in s["raw"] if w not in figures]
    unfinished = "" if s.get("complete", True) else (
        f"**Written while the benchmark ran: not yet measured: {', '.join(missing) or 'none'} (the run stopped or "
        f"had not finished when this was written).**\n\n")
    per_window = data["events"] / (s["hours"] * 60 / 5)
    batch_minutes = BATCH / (data["events"] / (s["hours"] * 60))
    backfill_way = ("read in one search and matched in-process" if data["events"] <= 10_000
                    else "probed on the node, then the hits fetched")
    runs_said = "One run" if s["runs"] == 1 else f"Medians of {s['runs']} runs"
    warmup = s.get("warmup_hours")
    warmed = f"the two backfills over the first {warmup:g} h" if warmup is not None else "the two backfills"
    joined = machine.get("joined") or {}
    here = _measured_span(s["date"], [r for w, rs in ran.items() if w not in joined for r in rs])
    earlier = "".join(
        f"**{labels[w]}** was measured by another run of the same benchmark (same events per source from the "
        f"same real lines, same rules, same span), `{j['command']}`, finished at {j['date']} (load average at its "
        f"start {j['load_at_start'][0]}), and joined from `{j['file']}` (`--with` or `--join`): "
        f"{_overlap(_measured_span(j['date'], s['raw'][w]), here)}.\n\n" for w, j in joined.items())
    return f"""# Rule library: secmon and real ElastAlert 2 on the same events, like for like

{unfinished}{earlier}`{s['command']}`, finished at {s['date']} ({machine['nproc']} CPUs shared with other work, load average at start
{machine['load_at_start'][0]}; Python {machine['python']}; Elasticsearch {machine['elasticsearch']} on the same
machine; ElastAlert 2 {machine['elastalert2']} with the client it pins, elasticsearch-py {machine['elastalert2_client']}).

Data: {data['events']:,} events of agency `{s['agency']}` over {span} from {s['span'][0]}: {per_source}; real lines
normalized by secmon's pipelines, repeated with shifted timestamps and pids, `event.ingested` 2 s after the last
event of each 2,000-event batch. Rules: the {s['rules']} rules of `rules/`; ElastAlert 2 runs its own rule
files written from the same compiled queries: {json.dumps(s['elastalert2_rule_types'])}. ElastAlert 2 has
no rule type for an ordered sequence (Sigma temporal_ordered): those run as `any` on the union of the sequence's
queries, which does not check the order; every other rule runs as the ElastAlert 2 type that counts alike.

How secmon scans (secmon/detect/inwindow.py): a window of at most 10,000 events is read in one search, the
fields the rules read, and matched in-process by secmon's matcher to find the rules with new matches; those rules'
hits around them are then fetched from the node in `_msearch`. A larger window is probed on the node, one size-0
search per rule. Here `event.ingested` comes in batches of 2,000, one every {batch_minutes:.1f} minutes of the span, so
each 5-minute window of the scheduled runs held whole batches, {per_window:,.0f} events on average; the backfill's window, the whole {span}, held {data['events']:,}: {backfill_way}. ElastAlert 2
runs each rule's query on the node every 5 minutes over its 15-minute buffer.

{runs_said} over the {span} after a discarded warm-up ({warmed}); before each run the request cache of the events indices
was cleared and each tool's state deleted. Counted at a proxy on loopback in front of the node, which both
tools talk to. Column meanings (bench/README.md has the details):
- requests: every HTTP request to the node; event searches: those on the events indices and their search
  contexts (scroll, clear scroll, point in time);
- shard search s: the node's query and fetch time on the shards (index search stats, before/after), on the
  events indices and on all of the run's indices (with each tool's own bookkeeping indices);
- took s: the sum of the `took` of the answers that have one (it includes time queued in the node);
- request wall s: the sum over all requests of the time from the proxy's send to the answer's last byte.

| way | requests | event searches | shard search s, events | shard search s, all | took s | request wall s | MB received | run wall s |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

{ratio_table}

{targets(s)}

Load average (1 min) at the start and at the end of each run, warm-up first: {json.dumps(loads)}.

Requests of the last run by kind: {json.dumps(kinds)}.

What each side reported on the last run (not compared here: the two tools do not define an alert alike):
{json.dumps(details)}.
"""


if __name__ == "__main__":
    main()
