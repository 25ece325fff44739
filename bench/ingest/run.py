"""Ingest benchmark: file -> ECS -> Elasticsearch, against the raw `_bulk` ceiling and rsyslog.

    python bench/ingest/run.py --es-url http://127.0.0.1:9200 [--lines 200000] [--runs 3]

For the same real log lines (Linux.log from ../shared/datasets, repeated with distinct pids),
it measures, each run on fresh indices of the same node:
- ceiling: the documents secmon would send, pre-serialized, sent as sequential `_bulk`
  requests of the same size (2,000) by one client, then a refresh: what the node takes from
  one stream, until searchable;
- secmon: `secmon collect FILE` as a separate process (start-up included), and its peak RSS;
- rsyslog: rsyslogd in the foreground with imfile -> omelasticsearch (bulk mode), a peer
  shipper that does no ECS parsing (raw line + time), if rsyslogd and omelasticsearch exist.
Before each shipper the node is left to settle (no merges, idle CPU), and the order of the
first two alternates between runs, so that neither inherits the other's background merging.
The node's own CPU seconds per shipper are recorded too. Medians of the runs go to
bench/results/ingest.md and ingest.json. Not part of the test suite.
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
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from elasticsearch import Elasticsearch  # noqa: E402

from secmon.collect.files import read_records  # noqa: E402
from secmon.normalize.engine import Normalizer, Skipped  # noqa: E402
from secmon.normalize.pipeline import load_pipelines  # noqa: E402
from secmon.store.indices import Indices  # noqa: E402
from secmon.store.templates import install_templates  # noqa: E402
from secmon.store.writer import BulkWriter  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "loghub_linux_full" / "Linux" / "Linux.log"
AGENCY = "so-tttt"
BATCH = 2000


def make_log(path: Path, count: int) -> None:
    pid = re.compile(r"\[\d+\]")
    real = [line for line in DATASET.read_text(encoding="utf-8", errors="replace").splitlines() if pid.search(line)]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(pid.sub(f"[{1_000_000 + i}]", real[i % len(real)], count=1) + "\n")


def config(path: Path, url: str, prefix: str) -> Path:
    path.write_text(f"""elasticsearch: {{hosts: [{url}], index_prefix: {prefix}}}
agencies: [{{id: {AGENCY}, name: bench, language: en, recipients: [a@b.example], retention: 36500d}}]
smtp: {{host: 127.0.0.1, port: 25, sender: s@b.example}}
rules: [{ROOT / 'rules'}]
pipelines: [{ROOT / 'pipelines'}]
""", encoding="utf-8")
    return path


def serialized(es: Elasticsearch, log: Path, prefix: str) -> list[list[bytes]]:
    """Exactly the bulk lines `secmon collect` sends for this file, batched the same way."""
    pipeline = load_pipelines([ROOT / "pipelines"])["linux-auth"]
    normalizer = Normalizer(pipeline, agency=AGENCY, timezone="Asia/Ho_Chi_Minh", source=str(log),
                            now=datetime.now(timezone.utc), year=2005)
    writer = BulkWriter(es, Indices(prefix))
    items = [i for i in (normalizer.normalize(r.text, r.offset, r.record_id) for r in read_records(log))
             if not isinstance(i, Skipped)]
    return [[part for doc in writer.serialize(items[i:i + BATCH], AGENCY) for part in (doc.head, doc.body)]
            for i in range(0, len(items), BATCH)]


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


def settle(es: Elasticsearch, quiet: float = 0.3, limit: float = 90.0) -> None:
    """Wait until the node is idle: no merges running and under `quiet` of a core used over a second."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        merging = sum(node["indices"]["merges"]["current"]
                      for node in es.nodes.stats(metric="indices", index_metric="merge")["nodes"].values())
        before = node_cpu(es)
        time.sleep(1.0)
        if not merging and node_cpu(es) - before < quiet:
            return


def run_ceiling(es: Elasticsearch, batches: list[list[bytes]], prefix: str) -> float:
    install_templates(es, Indices(prefix))
    started = time.perf_counter()
    for lines in batches:
        response = es.bulk(operations=lines)
        assert not response["errors"], "the ceiling run had item errors"
    # Until searchable, as for secmon (its final refresh) and rsyslog (polled until every line counts).
    es.indices.refresh(index=f"{prefix}-*")
    return time.perf_counter() - started


def run_secmon(cfg: Path, log: Path, folder: Path) -> tuple[float, int, float, str]:
    """(seconds, peak RSS in KB, CPU seconds, output) of a `secmon collect` process.

    GNU time measures it: the peak RSS of a child forked straight from this process
    would count this process's memory (the pre-serialized ceiling documents) too.
    """
    measured = folder / "time.txt"
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-o", str(measured), "-f", "%M %U %S", sys.executable, "-m", "secmon",
                           "-c", str(cfg), "collect", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - started
    output = proc.stdout.decode()
    assert proc.returncode == 0, output
    rss, user, system = measured.read_text().split()[-3:]
    return elapsed, int(rss), float(user) + float(system), output


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest")
    args = parser.parse_args()
    es = Elasticsearch(args.es_url, request_timeout=120)
    version = es.info()["version"]["number"]
    results: dict[str, list[float]] = {"ceiling": [], "secmon": [], "rsyslog": [], "rss_kb": [], "secmon_cpu": [],
                                       "secmon_doc_bytes": [], "rsyslog_doc_bytes": [], "node_cpu_ceiling": [],
                                       "node_cpu_secmon": [], "node_cpu_rsyslog": []}
    with tempfile.TemporaryDirectory(prefix="secmon-bench-") as tmp:
        folder = Path(tmp)
        log = folder / "auth.log"
        make_log(log, args.lines)
        for run in range(args.runs):
            tag = f"bench{os.getpid()}r{run}"
            batches = serialized(es, log, f"{tag}raw")
            documents = sum(len(b) // 2 for b in batches)

            def ceiling() -> None:
                results["ceiling"].append(run_ceiling(es, batches, f"{tag}raw"))
                assert count(es, f"{tag}raw-*") == documents

            def secmon() -> None:
                elapsed, rss, cpu, output = run_secmon(config(folder / "secmon.yml", args.es_url, f"{tag}col"), log,
                                                       folder)
                assert count(es, f"{tag}col-events-*,{tag}col-deadletter-*") == documents, output
                results["secmon"].append(elapsed)
                results["rss_kb"].append(rss)
                results["secmon_cpu"].append(cpu)
                results["secmon_doc_bytes"].append(mean_source_bytes(es, f"{tag}col-events-*"))

            def rsyslog() -> None:
                peer = run_rsyslog(es, args.es_url, log, f"{tag}rsyslog", args.lines, folder / f"rsyslog{run}")
                if peer is not None:
                    results["rsyslog"].append(peer)
                    results["rsyslog_doc_bytes"].append(mean_source_bytes(es, f"{tag}rsyslog"))

            # Each shipper starts on a quiet node holding no other benchmark index (a shard written
            # minutes ago still shares the node's indexing buffer), and the order alternates, so that
            # no shipper always inherits the others' background work.
            order = [ceiling, secmon, rsyslog] if run % 2 == 0 else [secmon, ceiling, rsyslog]
            try:
                for phase in order:
                    settle(es)
                    before = node_cpu(es)
                    phase()
                    results[f"node_cpu_{phase.__name__}"].append(round(node_cpu(es) - before, 2))
                    drop(es, tag)
            finally:
                drop(es, tag)
            print(f"run {run + 1}: ceiling {results['ceiling'][-1]:.1f}s, secmon {results['secmon'][-1]:.1f}s"
                  + (f", rsyslog {results['rsyslog'][-1]:.1f}s" if results["rsyslog"] else ""), flush=True)
    write_results(args, version, documents, results)


def write_results(args: argparse.Namespace, version: str, documents: int, results: dict[str, list[float]]) -> None:
    def rate(key: str) -> float | None:
        return documents / statistics.median(results[key]) if results[key] else None

    ceiling, secmon, rsyslog = rate("ceiling"), rate("secmon"), rate("rsyslog")
    rss_mb = max(results["rss_kb"]) / 1024
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "elasticsearch": version,
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "lines": args.lines, "documents": documents, "runs": args.runs, "batch": BATCH,
        "seconds": results, "events_per_s": {"ceiling": ceiling, "secmon": secmon, "rsyslog": rsyslog},
        "secmon_vs_ceiling": secmon / ceiling if secmon and ceiling else None,
        "secmon_vs_rsyslog": secmon / rsyslog if secmon and rsyslog else None,
        "secmon_peak_rss_mb": rss_mb,
        "load_average_at_end": os.getloadavg()[0],
        "secmon_cpu_seconds": statistics.median(results["secmon_cpu"]),
        "secmon_events_per_cpu_s": documents / statistics.median(results["secmon_cpu"]),
    }

    def node_cpu_text(key: str) -> str:
        values = results.get(f"node_cpu_{key}")
        return f"{statistics.median(values):.1f} s" if values else "n/a"

    def fmt(value: float | None) -> str:
        return f"{value:,.0f}" if value else "n/a"

    doc_bytes = {k: statistics.mean(results[f"{k}_doc_bytes"]) if results[f"{k}_doc_bytes"] else None
                 for k in ("secmon", "rsyslog")}
    summary["mean_document_bytes"] = doc_bytes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(f"""# Ingest benchmark

`python bench/ingest/run.py --es-url URL --lines {args.lines} --runs {args.runs}` on {summary['date']}
({summary['host']}; Elasticsearch {version}, the local node of `scripts/es-local`, on the same machine).
Input: {args.lines:,} real lines of loghub Linux.log (RHEL, 2004-05; loghub, ISSRE'23), repeated with distinct
pids; `linux-auth` pipeline; {documents:,} documents; bulk requests of {BATCH:,} documents. Medians of {args.runs} runs.

| shipper | events/s | vs ceiling |
|---|---:|---:|
| ceiling: the same documents pre-serialized, sequential `_bulk` | {fmt(ceiling)} | 1.00 |
| `secmon collect` (process start-up included) | {fmt(secmon)} | {summary['secmon_vs_ceiling'] or 0:.2f} |
| rsyslog imfile -> omelasticsearch (raw line + time, no ECS parsing) | {fmt(rsyslog)} | {(rsyslog / ceiling) if rsyslog and ceiling else 0:.2f} |

secmon / rsyslog: {f"{summary['secmon_vs_rsyslog']:.2f}" if summary['secmon_vs_rsyslog'] else 'n/a'}.
Peak RSS of the `secmon collect` process: {rss_mb:.0f} MB. Its CPU time (user + system, median):
{summary['secmon_cpu_seconds']:.1f} s, i.e. {summary['secmon_events_per_cpu_s']:,.0f} events per CPU second: the rate it
could sustain on a core of its own. On this machine the collector and the node share the same CPUs, while
in the ceiling run the node has them all. Mean stored document: secmon {fmt(doc_bytes['secmon'])} bytes
(full ECS: host, process, user, source, event.*, original line), rsyslog {fmt(doc_bytes['rsyslog'])} bytes
(four fields): the node indexes less per rsyslog event, which is why that peer can pass the "ceiling".
The node's own CPU time per shipper (median): ceiling {node_cpu_text('ceiling')}, secmon {node_cpu_text('secmon')},
rsyslog {node_cpu_text('rsyslog')}. Each shipper started on a settled node (no merges, idle), and the
order of ceiling and secmon alternated between runs.
Load average of the machine at the end: {summary['load_average_at_end']:.1f} (other work on it is noise here).
Raw numbers per run (seconds, KB, bytes): {json.dumps(results)}.
""", encoding="utf-8")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
