"""Soak: the full-length versions of the unattended-monitoring "Done when" scenarios. Not part of the tests.

    python bench/soak/run.py                       # all three, full length (about 30 minutes)
    python bench/soak/run.py --scenario sigkill --kills 10
    python bench/soak/run.py --outage 60 --smtp-outage 60 --kills 3   # a shorter rehearsal

It starts its own Elasticsearch node (scripts/es-local on a free port or --port, a temporary home,
wiped at the end; it refuses to run against a node it did not start) and a loopback SMTP server, runs real `secmon collect --follow` and `secmon run` processes,
and counts what is observable: incidents in the index, messages accepted by the SMTP server.
Scenarios (each a fresh index prefix):

- sigkill: a log that keeps growing (an SSH brute-force burst from a new source every
  --burst-every seconds), `secmon run` killed with SIGKILL --kills times during scans (a standby
  started beside it takes over);
- node: the node stopped for --outage seconds while the collector spools and the log grows;
- smtp: the SMTP server answers 451 for --smtp-outage seconds, and one of the agency's two
  recipients is refused with 550 throughout.

Each burst must give one incident and one email per accepted recipient. It writes what it counted
to bench/results/soak.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from elasticsearch import Elasticsearch  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.integration.unattended import (  # noqa: E402
    AGENCY,
    BURST,
    Mailbox,
    Secmon,
    alerts_by_status,
    alerts_per_source,
    all_scanned,
    append_burst,
    config_text,
    es_local,
    deliveries_per_source,
    events_count,
    incidents_per_source,
    kill_during_a_scan,
    smtp_server,
    start_own_node,
    wait_until,
)

ACCEPTED, REFUSED = "soc@so-tttt.example.vn", "gone@so-tttt.example.vn"


@dataclass
class Result:
    scenario: str
    seconds: float = 0.0
    bursts: int = 0
    events: int = 0
    events_stored: int = 0
    incidents_missing: list[str] = field(default_factory=list)
    incidents_duplicated: list[str] = field(default_factory=list)
    emails: int = 0
    emails_missing: list[str] = field(default_factory=list)  # no email to the accepted recipient
    emails_duplicated: list[str] = field(default_factory=list)
    never_queued: list[str] = field(default_factory=list)  # of the missing: an incident whose alert was never queued
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.incidents_missing or self.incidents_duplicated or self.emails_missing
                    or self.emails_duplicated) and self.events_stored == self.events


class Run:
    """One scenario's processes, log, mailbox and counts."""

    def __init__(self, args: argparse.Namespace, url: str, work: Path, name: str, mailbox: Mailbox, smtp_port: int,
                 **config: str):
        self.args, self.name, self.mailbox = args, name, mailbox
        self.prefix = f"soak-{name}"
        self.es = Elasticsearch(url, request_timeout=60)
        self.folder = work / name
        self.folder.mkdir()
        self.config = self.folder / "secmon.yml"
        settings = {"scan_interval": args.scan_interval, "lease": args.lease, "ingest_delay": args.ingest_delay,
                    "max_chunk": args.max_chunk, "lookback": args.lookback, "outbox_interval": args.outbox_interval}
        self.config.write_text(config_text(url, self.prefix, smtp_port, **{**settings, **config}), encoding="utf-8")
        self.log = self.folder / "auth.log"
        self.log.touch()
        self.sources: list[str] = []
        self.procs: list[Secmon] = []
        self.started = time.monotonic()

    def secmon(self, *args: str, name: str) -> Secmon:
        proc = Secmon(self.config, *args, name=name)
        self.procs.append(proc)
        return proc

    def collector(self) -> Secmon:
        return self.secmon("collect", "--follow", str(self.log), "-a", AGENCY, "-s", "linux-auth", "--state",
                           str(self.folder / "state"), "--batch-wait", "0.2", name="collector")

    def burst(self) -> None:
        self.sources.append(append_burst(self.log, len(self.sources)))

    @contextmanager
    def appending(self) -> Iterator[None]:
        """A burst every --burst-every seconds while the block runs."""
        done = threading.Event()

        def loop() -> None:
            while not done.wait(self.args.burst_every):
                self.burst()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(30)

    def settled(self) -> bool:
        if not all_scanned(self.es, self.prefix, len(self.sources) * BURST):
            return False
        status = alerts_by_status(self.es, self.prefix)
        return not status.get("pending") and not status.get("sending") and len(self.mailbox.messages) >= status.get(
            "sent", 0)

    def settle(self) -> None:
        wait_until(self.settled, self.args.settle, lambda: "\n".join(p.stderr() for p in self.procs[-3:]), step=1)

    def count(self, result: Result) -> Result:
        for proc in self.procs:
            if proc.alive():
                proc.terminate(120)
        result.seconds = round(time.monotonic() - self.started, 1)
        result.bursts, result.events = len(self.sources), len(self.sources) * BURST
        result.events_stored = events_count(self.es, self.prefix)
        incidents = incidents_per_source(self.es, self.prefix, self.sources)
        emails = deliveries_per_source(self.mailbox, ACCEPTED, self.sources)
        result.incidents_missing = [s for s in self.sources if incidents[s] == 0]
        result.incidents_duplicated = [s for s in self.sources if incidents[s] > 1]
        result.emails = sum(1 for to in self.mailbox.recipients if ACCEPTED in to)
        result.emails_missing = [s for s in self.sources if emails[s] == 0]
        result.emails_duplicated = [s for s in self.sources if emails[s] > 1]
        queued = alerts_per_source(self.es, self.prefix, result.emails_missing)
        result.never_queued = [s for s in result.emails_missing if queued[s] == 0]
        return result


def sigkill(run: Run) -> Result:
    result = Result("sigkill")
    rng = random.Random(8)
    run.collector()
    standby = run.secmon("-v", "run", name="scheduler-0")
    with run.appending():
        for kill in range(run.args.kills):
            active = standby
            active.wait_for(r"active: holding the lease", 600)
            standby = run.secmon("-v", "run", name=f"scheduler-{kill + 1}")
            kill_during_a_scan(active, rng.uniform(0, 1.5), 600, chunk=rng.randint(1, 3))
    run.settle()
    result.notes.append(f"{run.args.kills} SIGKILLs, each during a scan chunk; a standby took over each time")
    return run.count(result)


def node_outage(run: Run, env: dict[str, str]) -> Result:
    result = Result("node")
    run.collector()
    scheduler = run.secmon("-v", "run", name="scheduler")
    scheduler.wait_for(r"active: holding the lease", 600)
    with run.appending():
        time.sleep(run.args.burst_every * 3)
        es_local(env, "stop")
        stopped = time.monotonic()
        time.sleep(run.args.outage)
        down = time.monotonic() - stopped
        es_local(env, "start")
        time.sleep(run.args.burst_every * 3)
    run.settle()
    result.notes.append(f"node stopped for {down:.0f}s while the collector spooled and the log grew")
    return run.count(result)


def smtp_outage(run: Run) -> Result:
    result = Result("smtp")
    run.collector()
    scheduler = run.secmon("-v", "run", name="scheduler")
    scheduler.wait_for(r"active: holding the lease", 600)
    run.mailbox.unknown = frozenset({REFUSED})
    with run.appending():
        run.mailbox.refuse = "451 4.3.0 try again later"
        time.sleep(run.args.smtp_outage)
        run.mailbox.refuse = None
        time.sleep(run.args.burst_every * 3)
    run.settle()
    result.notes.append(f"SMTP answered 451 for {run.args.smtp_outage:.0f}s ({run.mailbox.refused} refusals); "
                        f"{REFUSED} refused with 550 at RCPT ({run.mailbox.rejected_rcpt} times)")
    result.notes.append(refusal_recorded(run))
    return run.count(result)


def refusal_recorded(run: Run) -> str:
    """Whether the outbox says the refused recipient was refused (anywhere but its list of recipients)."""
    run.es.indices.refresh(index=f"{run.prefix}-alerts")
    hits = run.es.search(index=f"{run.prefix}-alerts", size=10_000)["hits"]["hits"]
    addressed = recorded = 0
    for hit in hits:
        doc = hit["_source"]
        if REFUSED not in json.dumps(doc):
            continue
        addressed += 1
        secmon = {k: v for k, v in doc.get("secmon", {}).items() if k not in ("recipients", "recipient")}
        recorded += "no such mailbox" in json.dumps(secmon)  # the loopback server's 550 reply
    return (f"outbox documents addressed to {REFUSED}: {addressed}, of which recording the 550 refusal: "
            f"{recorded}")


def report(results: list[Result], args: argparse.Namespace, started: datetime) -> str:
    # The command line is in the report: the defaults are the full-length scenarios, shorter runs say so.
    lines = ["# Soak: unattended monitoring", "",
             f"Run {started:%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} CPUs, load average at start "
             f"{os.getloadavg()[0]:.1f}), `python bench/soak/run.py {' '.join(sys.argv[1:])}`.", "",
             f"Configuration: scan_interval {args.scan_interval}, lease {args.lease}, ingest_delay {args.ingest_delay}, "
             f"max_chunk {args.max_chunk}, lookback {args.lookback}, outbox_interval {args.outbox_interval}; "
             f"a brute-force burst ({BURST} events, its own source) every {args.burst_every}s.", "",
             "| scenario | ok | seconds | bursts | events stored | incidents missing | incidents twice | "
             "emails | emails missing | of which never queued | emails twice |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.scenario} | {'yes' if r.ok else 'NO'} | {r.seconds} | {r.bursts} | "
                     f"{r.events_stored}/{r.events} | {len(r.incidents_missing)} | {len(r.incidents_duplicated)} | "
                     f"{r.emails} | {len(r.emails_missing)} | {len(r.never_queued)} | {len(r.emails_duplicated)} |")
    lines.append("")
    for r in results:
        lines += [f"- {r.scenario}: {note}" for note in r.notes]
    lines += ["", "\"Never queued\": a burst whose incident is stored but whose alert was never queued, the loss "
                  "today's scan has when killed between storing incidents and queueing alerts (issue 8, item 4).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["all", "sigkill", "node", "smtp"], default="all")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--outage", type=float, default=600.0, help="seconds the node is stopped")
    parser.add_argument("--smtp-outage", type=float, default=600.0, help="seconds SMTP answers 451")
    parser.add_argument("--burst-every", type=float, default=5.0, help="seconds between two bursts")
    parser.add_argument("--settle", type=float, default=900.0, help="seconds allowed to catch up at the end")
    parser.add_argument("--scan-interval", default="5s")
    parser.add_argument("--lease", default="10s")
    parser.add_argument("--ingest-delay", default="2s")
    parser.add_argument("--max-chunk", default="30s")
    parser.add_argument("--lookback", default="1m")
    parser.add_argument("--outbox-interval", default="5s")
    parser.add_argument("--port", type=int, default=0, help="of its own node (default: a free one)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "soak.md")
    args = parser.parse_args()
    started = datetime.now(timezone.utc)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="secmon-soak-") as tmp:
        work = Path(tmp)
        url, env = start_own_node(work / "es", args.port or free_port())
        try:
            scenarios: list[tuple[str, Callable[[Run], Result], dict[str, str]]] = [
                ("sigkill", sigkill, {}),
                ("node", lambda run: node_outage(run, env), {}),
                # Retries often enough to outlast the outage without giving up (alerts.max_age: 2 days).
                ("smtp", smtp_outage, {"recipients": (ACCEPTED, REFUSED),
                                       "alerts": "  retry_base: 10s\n  retry_max: 1m\n"}),
            ]
            for name, scenario, config in scenarios:
                if args.scenario not in ("all", name):
                    continue
                mailbox, smtp_port = Mailbox(), free_port()
                controller = smtp_server(mailbox, smtp_port)
                run = Run(args, url, work, name, mailbox, smtp_port, **config)  # type: ignore[arg-type]
                try:
                    results.append(scenario(run))
                except AssertionError as exc:
                    failed = run.count(Result(name, notes=[f"did not settle: {str(exc)[:2000]}"]))
                    results.append(failed)
                finally:
                    for proc in run.procs:
                        if proc.alive():
                            proc.kill()
                    controller.stop()
                print(json.dumps(asdict(results[-1]), ensure_ascii=False), flush=True)
        finally:
            es_local(env, "wipe")
    text = report(results, args, started)
    args.results.write_text(text, encoding="utf-8")
    args.results.with_suffix(".json").write_text(json.dumps([asdict(r) for r in results], indent=2), encoding="utf-8")
    print(text)
    sys.exit(0 if all(r.ok for r in results) else 1)


if __name__ == "__main__":
    main()
