"""Ingest benchmark: file -> ECS -> Elasticsearch, against the node's best rate for the same documents.

    python bench/ingest/run.py --es-url http://127.0.0.1:9200 [--lines 200000] [--runs 3]

For the same real log lines (Linux.log from ../shared/datasets, each repeated in a row with distinct pids,
so that the times stay in order: nine monthly indices), each measurement on fresh indices of the same node,
after the node has settled:
- warm-up: one ceiling run, discarded (the first requests meet a cold node);
- ceiling search: the documents secmon sends, pre-serialized (ids, indices, ingest time stamped),
  sent in `_bulk` requests of the same size (2,000) by 1, 2, 3, 4, 6 parallel streams asking for the
  same trimmed per-item answer as secmon (`filter_path`), then a refresh; the best stream count is
  the ceiling;
- curve: `secmon collect FILE --in-flight N` as a separate process for each N (start-up included; its
  templates and audit index installed before, untimed, as the ceiling's templates are),
  then `--workers N` at the default --in-flight, with the CPU time of all its processes (GNU time) and
  the peak of their summed RSS (/proc, sampled);
- runs: the best ceiling and secmon at its default --in-flight, alternating which goes first;
- rsyslog imfile -> omelasticsearch (raw line + time, no ECS), when rsyslogd is installed.
Medians go to bench/results/ingest.md and ingest.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from shlex import quote

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from elasticsearch import Elasticsearch  # noqa: E402

from secmon.collect.files import read_records  # noqa: E402
from secmon.normalize.engine import Normalizer, Skipped  # noqa: E402
from secmon.normalize.pipeline import load_pipelines  # noqa: E402
from secmon.store.indices import Indices  # noqa: E402
from secmon.store.templates import install_templates  # noqa: E402
from secmon.service.collect import DEFAULT_WORKERS  # noqa: E402
from secmon.store.ship import DEFAULT_IN_FLIGHT  # noqa: E402
from secmon.store.writer import _PLACEHOLDER_BYTES as PLACEHOLDER  # noqa: E402
from secmon.store.writer import ITEM_OUTCOME, BulkWriter  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "loghub_linux_full" / "Linux" / "Linux.log"
AGENCY = "so-tttt"
BATCH = 2000
CORES = os.cpu_count() or 1
NODE_CPUS = "CPU 1" if CORES == 2 else f"CPUs 1-{CORES - 1}"
SPLIT = (f"; `--split-cores`: the node's threads on {NODE_CPUS}, this benchmark (the ceiling's client) and "
         "secmon on CPU 0, so that neither takes the other's cores, as with a node on a machine of its own")


def make_log(path: Path, count: int) -> None:
    """`count` lines from the real ones, each repeated `copies` times in a row with distinct pids, so that
    times stay in order: the file spans the dataset's nine months (nine monthly indices), as a busier
    server's log of that time would. (Repeating the whole file instead turned the year at each copy:
    100,000 lines made 81 monthly indices, and the node spent its time creating indices.)"""
    pid = re.compile(r"\[\d+\]")
    real = [line for line in DATASET.read_text(encoding="utf-8", errors="replace").splitlines() if pid.search(line)]
    copies = -(-count // len(real))
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(pid.sub(f"[{1_000_000 + i}]", real[i // copies], count=1) + "\n")


def config(path: Path, url: str, prefix: str) -> Path:
    path.write_text(f"""elasticsearch: {{hosts: [{url}], index_prefix: {prefix}}}
agencies: [{{id: {AGENCY}, name: bench, language: en, recipients: [a@b.example], retention: 36500d}}]
smtp: {{host: 127.0.0.1, port: 25, sender: s@b.example}}
rules: [{ROOT / 'rules'}]
pipelines: [{ROOT / 'pipelines'}]
""", encoding="utf-8")
    return path


def serialized(es: Elasticsearch, log: Path, prefix: str) -> list[list[bytes]]:
    """Exactly the bulk lines `secmon collect` sends for this file (its ingest time stamped, as `send`
    does), batched the same way, for indices of `prefix` (`retarget` moves them to another)."""
    pipeline = load_pipelines([ROOT / "pipelines"])["linux-auth"]
    normalizer = Normalizer(pipeline, agency=AGENCY, timezone="Asia/Ho_Chi_Minh", source=str(log),
                            now=datetime.now(timezone.utc), year=2005)
    writer = BulkWriter(es, Indices(prefix))
    items = [i for i in (normalizer.normalize(r.text, r.offset, r.record_id) for r in read_records(log))
             if not isinstance(i, Skipped)]
    stamp = b'"ingested":"' + datetime.now(timezone.utc).isoformat().replace("+00:00", "Z").encode() + b'"'
    return [[part for doc in writer.serialize(items[i:i + BATCH], AGENCY)
             for part in (doc.head, doc.body.replace(PLACEHOLDER, stamp))]
            for i in range(0, len(items), BATCH)]


def retarget(batches: list[list[bytes]], old: str, new: str) -> list[list[bytes]]:
    """The same batches for the indices of prefix `new` (only the action lines change; bodies are shared)."""
    before, after = f'"_index":"{old}-'.encode(), f'"_index":"{new}-'.encode()
    return [[line.replace(before, after) if i % 2 == 0 else line for i, line in enumerate(lines)]
            for lines in batches]


def count(es: Elasticsearch, index: str) -> int:
    es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
    return int(es.count(index=index, ignore_unavailable=True, allow_no_indices=True)["count"])


def mean_source_bytes(es: Elasticsearch, index: str) -> float:
    """Mean size of the stored JSON documents (a sample): what each shipper makes the node index."""
    hits = es.search(index=index, size=500)["hits"]["hits"]
    return statistics.mean(len(json.dumps(h["_source"], separators=(",", ":")).encode()) for h in hits)


def node_cpu(es: Elasticsearch) -> float:
    """CPU seconds the node's process has used so far."""
    stats = es.nodes.stats(metric="process")["nodes"]
    return sum(node["process"]["cpu"]["total_in_millis"] for node in stats.values()) / 1000


def drop(es: Elasticsearch, tag: str) -> None:
    es.indices.delete(index=f"{tag}*", ignore_unavailable=True, allow_no_indices=True)
    for template in es.options(ignore_status=404).indices.get_index_template(name=f"{tag}*").get(
            "index_templates", []):
        es.indices.delete_index_template(name=template["name"])


SETTLE_LIMIT = 10.0  # seconds: on a machine shared with other work the node may never be idle


def settle(es: Elasticsearch, quiet: float = 0.3, limit: float = SETTLE_LIMIT) -> None:
    """Wait until the node is idle: no merges running and under `quiet` of a core used over a second."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        merging = sum(node["indices"]["merges"]["current"]
                      for node in es.nodes.stats(metric="indices", index_metric="merge")["nodes"].values())
        before = node_cpu(es)
        time.sleep(1.0)
        if not merging and node_cpu(es) - before < quiet:
            return


def run_ceiling(es: Elasticsearch, batches: list[list[bytes]], prefix: str, streams: int) -> float:
    """Seconds to send every batch through `streams` parallel `_bulk` streams (each takes the next batch
    not yet sent), asking for the same trimmed per-item answer as secmon, then refresh."""
    install_templates(es, Indices(prefix))
    pending = iter(batches)
    lock = threading.Lock()
    errors: list[str] = []

    def stream() -> None:
        while True:
            with lock:
                lines = next(pending, None)
            if lines is None:
                return
            # Pre-serialized lines go out as they are (the client joins bytes), as the writer sends them.
            response = es.bulk(operations=lines, filter_path=ITEM_OUTCOME)  # type: ignore[arg-type]
            if any(item["index"].get("status", 500) >= 300 for item in response["items"]):
                errors.append("item errors")

    started = time.perf_counter()
    threads = [threading.Thread(target=stream) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Until searchable, as for secmon (its final refresh) and rsyslog (polled until every line counts).
    es.indices.refresh(index=f"{prefix}-*")
    elapsed = time.perf_counter() - started
    assert not errors, "the ceiling run had item errors"
    return elapsed


def tree_rss_kb(root: int) -> int:
    """Resident memory (KB) of `root` and every process below it, now (/proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
        except (OSError, ValueError):  # gone meanwhile
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    seen = {root}
    changed = True
    while changed:  # descendants: processes whose parent is already in the tree
        changed = False
        for pid, parent in parents.items():
            if parent in seen and pid not in seen:
                seen.add(pid)
                changed = True
    return sum(rss.get(pid, 0) for pid in seen)


def run_secmon(cfg: Path, log: Path, folder: Path, in_flight: int, workers: int) -> tuple[float, int, float, str]:
    """(seconds, peak RSS in KB of all its processes, CPU seconds of all its processes, output) of a
    `secmon collect` process.

    GNU time gives the CPU time (user + system) of secmon and of its worker processes (children it
    waited for). Peak RSS is the largest sum over the process tree, sampled ten times a second (GNU
    time's own figure is the largest single process). Measured from outside: the peak RSS of a child
    forked straight from this process would count this process's memory (the ceiling's documents) too.
    """
    measured = folder / "time.txt"
    started = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-o", str(measured), "-f", "%M %U %S", sys.executable, "-m", "secmon",
                             "-c", str(cfg), "collect", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005",
                             "--in-flight", str(in_flight), "--workers", str(workers)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # The clock stops when the process exits (`communicate` returns then), not at the next RSS sample: a
    # polling loop stopped it up to 0.1 s late, about 1 % of a run, always against secmon.
    peaks = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peaks.append(tree_rss_kb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    peak = max(peaks)
    output = out.decode()
    assert proc.returncode == 0, output
    rss, user, system = measured.read_text().split()[-3:]
    return elapsed, max(peak, int(rss)), float(user) + float(system), output


RSYSLOG_CONF = """\
global(workDirectory="{work}")
module(load="imfile")
module(load="omelasticsearch")
template(name="doc" type="list" option.jsonf="on") {{
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host.hostname" name="hostname" format="jsonf")
  property(outname="process.name" name="programname" format="jsonf")
  property(outname="event.original" name="rawmsg" format="jsonf")
}}
input(type="imfile" File="{log}" Tag="bench" freshStartTail="off" readMode="0" PersistStateInterval="0")
action(type="omelasticsearch" server="{host}" serverport="{port}" searchIndex="{index}" template="doc"
       bulkmode="on" maxbytes="8m" esVersion.major="9"
       queue.type="linkedlist" queue.size="100000" queue.dequeuebatchsize="{batch}" action.resumeretrycount="-1")
"""


def run_rsyslog(es: Elasticsearch, url: str, log: Path, index: str, expected: int, work: Path) -> float | None:
    rsyslogd = shutil.which("rsyslogd")
    if rsyslogd is None:
        return None
    work.mkdir(parents=True, exist_ok=True)
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, log=log, host=host, port=port, index=index, batch=BATCH))
    started = time.perf_counter()
    proc = subprocess.Popen([rsyslogd, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        last, still = -1, 0.0
        while True:
            time.sleep(0.5)
            got = count(es, index)
            if got >= expected:
                return time.perf_counter() - started
            if proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {proc.stdout.read().decode() if proc.stdout else ''}")
            if got == last:
                still += 0.5
                if still > 60:
                    raise RuntimeError(f"rsyslog stalled at {got} of {expected} documents")
            else:
                last, still = got, 0.0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Bench:
    """One benchmark session: the log, its serialized batches, the node, and every measurement."""

    def __init__(self, es: Elasticsearch, url: str, folder: Path, lines: int):
        self.es, self.url, self.folder = es, url, folder
        self.log = folder / "auth.log"
        make_log(self.log, lines)
        self.batches = serialized(es, self.log, "benchser")
        self.documents = sum(len(b) // 2 for b in self.batches)
        self.runs = 0

    def _fresh(self) -> str:
        self.runs += 1
        return f"bench{os.getpid()}r{self.runs}"

    def ceiling(self, streams: int) -> tuple[float, float]:
        """(events/s, node CPU seconds) of the same documents sent by `streams` parallel streams."""
        tag = self._fresh()
        settle(self.es)
        before = node_cpu(self.es)
        try:
            seconds = run_ceiling(self.es, retarget(self.batches, "benchser", f"{tag}raw"), f"{tag}raw", streams)
            assert count(self.es, f"{tag}raw-*") == self.documents
            return self.documents / seconds, node_cpu(self.es) - before
        finally:
            drop(self.es, tag)

    def secmon(self, in_flight: int, workers: int = 1) -> dict[str, float]:
        """events/s, CPU seconds, lines per CPU second, peak RSS (MB), node CPU seconds of `secmon collect`."""
        tag = self._fresh()
        # What a deployed secmon finds in place, as the ceiling's templates are installed before its clock
        # starts: the index templates and the audit index (creating either is a cluster-state update,
        # ~0.5 s each on a node that holds many indices and templates). The event indices are created
        # in the timed run on both sides.
        indices = Indices(f"{tag}col")
        install_templates(self.es, indices)
        self.es.indices.create(index=indices.audit)
        settle(self.es)
        before = node_cpu(self.es)
        try:
            elapsed, rss, cpu, output = run_secmon(config(self.folder / "secmon.yml", self.url, f"{tag}col"),
                                                   self.log, self.folder, in_flight, workers)
            node = node_cpu(self.es) - before
            assert count(self.es, f"{tag}col-events-*,{tag}col-deadletter-*") == self.documents, output
            return {"events_per_s": self.documents / elapsed, "seconds": elapsed, "cpu_s": cpu,
                    "lines_per_cpu_s": self.documents / cpu, "rss_mb": rss / 1024, "node_cpu_s": node,
                    # the share of the machine's cores node and secmon used together during the run
                    "cores_busy": (node + cpu) / (elapsed * CORES),
                    "doc_bytes": mean_source_bytes(self.es, f"{tag}col-events-*")}
        finally:
            drop(self.es, tag)

    def rsyslog(self) -> float | None:
        tag = self._fresh()
        settle(self.es)
        try:
            seconds = run_rsyslog(self.es, self.url, self.log, f"{tag}rsyslog", self.documents,
                                  self.folder / f"rsyslog{self.runs}")
            return self.documents / seconds if seconds else None
        finally:
            drop(self.es, tag)


def numbers(text: str) -> list[int]:
    """"1,2,3" -> [1, 2, 3]; "" -> [] (that part of the curve is not measured)."""
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of the best ceiling and of secmon (medians); "
                                                             "0: the ceiling search and the curve only")
    parser.add_argument("--streams", default="1,2,3,4,6", help="parallel streams the ceiling search tries")
    parser.add_argument("--in-flight", default="1,2,3,4,6", help="secmon --in-flight values of the curve")
    parser.add_argument("--workers", default="2,3", help="secmon --workers values of the curve (at the default "
                                                         "--in-flight; --workers 1 is the in-flight curve's)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file stem (default bench/results/ingest, or ingest-split with --split-cores)")
    parser.add_argument("--split-cores", action="store_true",
                        help="the node on every CPU but the first, this benchmark and secmon on the first: a node "
                             "with cores of its own, as on a machine of its own (a local node only; restored after)")
    args = parser.parse_args()
    args.out = args.out or ROOT / "bench" / "results" / ("ingest-split" if args.split_cores else "ingest")
    # Bytecode as an installed secmon has it (pip compiles at install): where PYTHONDONTWRITEBYTECODE is set,
    # the checkout would otherwise compile every module from source in every timed `secmon collect`.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "secmon")], check=True)
    es = Elasticsearch(args.es_url, request_timeout=120)
    version = es.info()["version"]["number"]
    load_at_start = os.getloadavg()
    node_pid = split_cores(es) if args.split_cores else None
    try:
        run_all(args, es, version, load_at_start)
    finally:
        if node_pid is not None:
            pin(node_pid, set(range(CORES)))


def node_threads(pid: int) -> list[int]:
    return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` on `cpus` (threads it starts later inherit their parent's)."""
    for tid in node_threads(pid):
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def split_cores(es: Elasticsearch) -> int:
    """Pin the node to CPUs 1.. and this process (and so secmon, its child) to CPU 0; the node's pid."""
    if CORES < 2:
        sys.exit("--split-cores needs two CPUs or more")
    nodes = es.nodes.info(node_id="_local", metric="process")["nodes"]
    pid = int(next(iter(nodes.values()))["process"]["id"])
    if not Path(f"/proc/{pid}").exists():
        sys.exit(f"--split-cores: the node's process {pid} is not on this machine")
    pin(pid, set(range(1, CORES)))
    os.sched_setaffinity(0, {0})  # before any thread or child: they inherit it
    print(f"cores split: the node (pid {pid}) on {NODE_CPUS}, the benchmark and secmon on CPU 0", flush=True)
    return pid


def run_all(args: argparse.Namespace, es: Elasticsearch, version: str, load_at_start: tuple[float, ...]) -> None:
    with tempfile.TemporaryDirectory(prefix="secmon-bench-") as tmp:
        bench = Bench(es, args.es_url, Path(tmp), args.lines)
        bench.ceiling(2)  # warm-up, discarded: the first bulk requests meet a cold node (JIT, caches, mappings)
        searched = {n: bench.ceiling(n) for n in numbers(args.streams)}
        search = {n: rate for n, (rate, _) in searched.items()}
        best = max(search, key=lambda n: search[n])
        print(f"ceiling search (events/s by streams): { {n: round(r) for n, r in search.items()} }; best {best}",
              flush=True)
        curve = {n: bench.secmon(n) for n in numbers(args.in_flight)}
        print(f"secmon curve (events/s by in-flight): { {n: round(c['events_per_s']) for n, c in curve.items()} }",
              flush=True)
        workers = {n: bench.secmon(DEFAULT_IN_FLIGHT, n) for n in numbers(args.workers) if n > 1}
        print(f"secmon curve (events/s by workers): { {n: round(c['events_per_s']) for n, c in workers.items()} }",
              flush=True)
        ceilings: list[float] = []
        node_ceiling: list[float] = []
        secmons: list[dict[str, float]] = []
        for run in range(args.runs):  # the best ceiling and secmon at its default, alternating which goes first
            for phase in (("ceiling", "secmon") if run % 2 == 0 else ("secmon", "ceiling")):
                if phase == "ceiling":
                    rate, node = bench.ceiling(best)
                    ceilings.append(rate)
                    node_ceiling.append(node)
                else:
                    secmons.append(bench.secmon(DEFAULT_IN_FLIGHT, DEFAULT_WORKERS))
            print(f"run {run + 1}: ceiling {ceilings[-1]:,.0f}/s, secmon {secmons[-1]['events_per_s']:,.0f}/s",
                  flush=True)
        if not args.runs:  # the curve only: its best ceiling and secmon's point at its defaults stand in
            ceilings, node_ceiling = [search[best]], [searched[best][1]]
            default = (curve.get(DEFAULT_IN_FLIGHT) if DEFAULT_WORKERS == 1 else workers.get(DEFAULT_WORKERS))
            secmons = [default] if default else []
        peer = bench.rsyslog() if shutil.which("rsyslogd") and args.runs else None
        documents = bench.documents
    write_results(args, version, documents, load_at_start, search, best, curve, workers, ceilings, node_ceiling,
                  secmons, peer)


def write_results(args: argparse.Namespace, version: str, documents: int, load_at_start: tuple[float, ...],
                  search: dict[int, float], best: int, curve: dict[int, dict[str, float]],
                  workers: dict[int, dict[str, float]], ceilings: list[float],
                  node_ceiling: list[float], secmons: list[dict[str, float]], rsyslog: float | None) -> None:
    def median(key: str) -> float:
        return statistics.median(s[key] for s in secmons) if secmons else float("nan")

    ceiling, secmon = statistics.median(ceilings), median("events_per_s")
    runs = f"median of {args.runs} runs" if args.runs else "one run: the curve's (--runs 0)"
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "elasticsearch": version,
        "host": f"{platform.machine()}, {CORES} CPUs, Python {platform.python_version()}",
        "load_average_at_start": list(load_at_start), "load_average_at_end": list(os.getloadavg()),
        "lines": args.lines, "documents": documents, "batch": BATCH, "runs": args.runs,
        "split_cores": args.split_cores,
        "ceiling_search_events_per_s": search, "ceiling_streams": best,
        "ceiling_events_per_s": ceiling, "ceiling_runs": ceilings,
        "secmon_in_flight": DEFAULT_IN_FLIGHT, "secmon_workers": DEFAULT_WORKERS,
        "secmon_events_per_s": secmon, "secmon_runs": secmons,
        "secmon_vs_ceiling": secmon / ceiling,
        "secmon_lines_per_cpu_s": median("lines_per_cpu_s"), "secmon_cpu_s": median("cpu_s"),
        "secmon_peak_rss_mb": max((s["rss_mb"] for s in secmons), default=float("nan")),
        "node_cpu_s": {"ceiling": statistics.median(node_ceiling), "secmon": median("node_cpu_s")},
        "cores_busy_secmon": median("cores_busy"),
        "curve_in_flight": curve,
        "curve_workers": workers,
        "rsyslog_events_per_s": rsyslog,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    def row(label: str, c: dict[str, float]) -> str:
        return (f"| {label} | {c['events_per_s']:,.0f} | {c['events_per_s'] / ceiling:.2f} | {c['cpu_s']:.1f} | "
                f"{c['lines_per_cpu_s']:,.0f} | {c['rss_mb']:.0f} | {c['node_cpu_s']:.1f} | {c['cores_busy']:.2f} |")

    rows = "\n".join([row(f"--in-flight {n}", c) for n, c in curve.items()]
                     + [row(f"--workers {n} (--in-flight {DEFAULT_IN_FLIGHT})", c) for n, c in workers.items()])
    defaults = f"--in-flight {DEFAULT_IN_FLIGHT}" + (f" --workers {DEFAULT_WORKERS}" if DEFAULT_WORKERS > 1 else "")
    args.out.with_suffix(".md").write_text(f"""# Ingest benchmark

`python bench/ingest/run.py --lines {args.lines} --runs {args.runs} --streams {quote(args.streams)} \\
--in-flight {quote(args.in_flight)} --workers {quote(args.workers)}{' --split-cores' if args.split_cores else ''}` on {summary['date']} ({summary['host']};
Elasticsearch {version}, one local node on the same machine{SPLIT if args.split_cores else ""}). Load average (1, 5, 15 min) at the start
{', '.join(f'{x:.1f}' for x in load_at_start)}, at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}:
other work shared the machine, so the absolute rates are lower than on an idle one.
Input: {args.lines:,} real lines of loghub Linux.log, each repeated in a row with distinct pids; `linux-auth`;
{documents:,} documents in nine monthly indices; bulk requests of {BATCH:,} documents. See bench/README.md for what
each figure times.

| figure | value |
|---|---:|
| ceiling: the same documents, pre-serialized, {best} parallel `_bulk` streams (best of {list(search)}), {runs} | {ceiling:,.0f} events/s |
| `secmon collect` (whole command, {defaults}), {runs} | {secmon:,.0f} events/s |
| secmon / ceiling | {secmon / ceiling:.2f} |
| secmon lines per CPU second (user + system of all its processes, start-up included) | {median('lines_per_cpu_s'):,.0f} |
| secmon peak RSS (all its processes, max of runs) | {summary['secmon_peak_rss_mb']:.0f} MB |
| node CPU seconds: ceiling / secmon | {summary['node_cpu_s']['ceiling']:.1f} / {summary['node_cpu_s']['secmon']:.1f} |
| share of the {CORES} cores node + secmon used during secmon's run (see README) | {summary['cores_busy_secmon']:.2f} |

Ceiling search (one run each, events/s by streams): {', '.join(f'{n}: {r:,.0f}' for n, r in search.items())}.

secmon by `--in-flight` (`--workers 1`) and by `--workers` (one run each; CPU and RSS of all its processes; node CPU
seconds during the run; cores busy = (node + secmon CPU seconds) / (wall seconds x {CORES})):

| run | events/s | vs ceiling | CPU s | lines per CPU s | peak RSS MB | node CPU s | cores busy |
|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}
""", encoding="utf-8")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
