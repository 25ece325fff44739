"""What the unattended-monitoring tests and the soak (bench/soak/run.py) share.

A growing linux-auth log of SSH brute-force bursts, each from its own source
address against its own account, so each burst is exactly one expected incident
and one expected email; `secmon` processes whose stderr is read as they run; a
loopback SMTP server that can answer 451 for a while; and the counts the
assertions need, from what is observable: incidents in the index, emails received.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
AGENCY = "so-tttt"
RULE = ROOT / "rules" / "linux" / "ssh-password-brute-force.yml"  # 10 failures from one source in 5 minutes
BURST = 12


def source_of(burst: int) -> str:
    """Fixed-width addresses: none is a substring of another, so a text search finds exactly its burst."""
    return f"10.77.{100 + burst // 100}.{100 + burst % 100}"


def burst_lines(burst: int, at: datetime, size: int = BURST) -> list[str]:
    """`size` failed SSH logins within a tenth of a second from one source against one account."""
    return [f"{(at + timedelta(milliseconds=8 * k)).astimezone(timezone.utc).isoformat()} web01 "
            f"sshd[{4000 + k}]: Failed password for svc{burst:04d} from {source_of(burst)} port {40000 + k} ssh2\n"
            for k in range(size)]


def append_burst(log: Path, burst: int, at: datetime | None = None) -> str:
    with log.open("a", encoding="utf-8") as handle:
        handle.write("".join(burst_lines(burst, at or datetime.now(timezone.utc))))
    return source_of(burst)


def start_own_node(home: Path, port: int) -> tuple[str, dict[str, str]]:
    """Start a node of our own with scripts/es-local; (url, env for es-local stop/start/wipe).

    es-local does not start a second node on a port where one already answers: it would
    leave us talking to someone else's node (and `stop` stopping nothing). The pid file in
    our own home says the node on the port is ours.
    """
    env = {**os.environ, "SECMON_ES_HOME": str(home), "SECMON_ES_PORT": str(port)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "es-local"), "start"], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0 or not (home / "es.pid").is_file():
        raise RuntimeError(f"no node of our own on port {port}: {done.stdout}{done.stderr}")
    return f"http://127.0.0.1:{port}", env


def es_local(env: dict[str, str], command: str) -> None:
    """stop, start or wipe the node of `env` (from start_own_node)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "es-local"), command], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"es-local {command} failed: {done.stdout}{done.stderr}")
    if command == "start" and not (Path(env["SECMON_ES_HOME"]) / "es.pid").is_file():
        raise RuntimeError(f"es-local start did not start our node: {done.stdout}")


def config_text(es_url: str, prefix: str, smtp_port: int, *, scan_interval: str = "1s", lease: str = "3s",
                ingest_delay: str = "2s", max_chunk: str = "3s", lookback: str = "4s", outbox_interval: str = "1s",
                rules: Iterable[Path] = (RULE,), recipients: Iterable[str] = ("soc@so-tttt.example.vn",),
                alerts: str = "", extra: str = "") -> str:
    return f"""\
elasticsearch:
  hosts: [{es_url}]
  index_prefix: {prefix}
agencies:
  - id: {AGENCY}
    name: "Sở Thông tin và Truyền thông"
    language: vi
    recipients: [{', '.join(recipients)}]
smtp:
  host: 127.0.0.1
  port: {smtp_port}
  sender: secmon@monitoring.example.vn
  digest_over: 1000
alerts:
  hourly_cap: 1000
  daily_digest: ""
{alerts}schedule:
  scan_interval: {scan_interval}
  lookback: {lookback}
  ingest_delay: {ingest_delay}
  max_chunk: {max_chunk}
  outbox_interval: {outbox_interval}
  lease: {lease}
rules: [{', '.join(str(r) for r in rules)}]
pipelines: [{ROOT / 'pipelines'}]
{extra}"""


class Secmon:
    """A `secmon` subprocess whose stderr lines are collected as they come (and printed on failure)."""

    def __init__(self, config: Path, *args: str, name: str = "secmon"):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-m", "secmon", "-c", str(config), *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []  # stderr
        self.out_lines: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(pipe, into), daemon=True)
                         for pipe, into in ((self.proc.stderr, self.lines), (self.proc.stdout, self.out_lines))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: Any, into: list[str]) -> None:
        for line in pipe:
            into.append(line.rstrip("\n"))

    @property
    def out(self) -> str:
        return "\n".join(self.out_lines)

    def stderr(self) -> str:
        return f"--- {self.name} stderr ---\n" + "\n".join(self.lines[-200:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def seen(self, pattern: str, since: int = 0) -> bool:
        return any(re.search(pattern, line) for line in self.lines[since:])

    def wait_for(self, pattern: str, timeout: float, since: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while not self.seen(pattern, since):
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before {pattern!r}\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {pattern!r} within {timeout}s\n{self.stderr()}")
            time.sleep(0.05)

    def busy(self) -> set[str]:
        """The jobs between their `started` and their outcome line, as logged (-v)."""
        running: set[str] = set()
        for line in list(self.lines):
            match = re.search(r"job (\w+): (\w+)", line)
            if match:
                (running.add if match.group(2) == "started" else running.discard)(match.group(1))
        return running

    def kill(self) -> None:
        self.proc.kill()
        self.finish(10)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.terminate()
        return self.finish(timeout)

    def finish(self, timeout: float) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout}s\n{self.stderr()}") from None
        for reader in self._readers:
            reader.join(5)
        return int(self.proc.returncode)


def kill_during_a_scan(scheduler: Secmon, delay: float, timeout: float, chunk: int = 1) -> None:
    """SIGKILL while a scan chunk runs and no delivery is under way.

    Today a delivery records its outcomes after the whole batch, so a kill in the
    middle of one re-sends what it sent: that is the delivery's own test. Here
    the kill lands in the scan: the watermark, incidents and queued alerts.
    """
    for _ in range(chunk):  # the chunk-th chunk from now
        since = len(scheduler.lines)
        scheduler.wait_for(r"scan: events ingested in", timeout, since)
    time.sleep(delay)
    deadline = time.monotonic() + timeout
    while "deliver" in scheduler.busy():
        assert time.monotonic() < deadline, scheduler.stderr()
        time.sleep(0.005)
    scheduler.kill()


@dataclass
class Mailbox:
    """A loopback SMTP server's side: every message accepted, parsed as MIME, with its envelope recipients.

    `refuse` answers DATA with it (e.g. "451 4.3.0 try again later": an SMTP outage);
    a recipient in `unknown` is refused at RCPT with 550 (a mailbox that does not exist).
    """

    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[tuple[str, ...]] = field(default_factory=list)  # of each message, in order
    refuse: str | None = None
    refused: int = 0
    unknown: frozenset[str] = frozenset()
    rejected_rcpt: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # aiosmtpd hook
                          rcpt_options: Any) -> str:
        if address in self.unknown:
            self.rejected_rcpt += 1
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd hook
        if self.refuse:
            self.refused += 1
            return self.refuse
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content,  # type: ignore[arg-type]
                                                policy=policy.default))
        self.recipients.append(tuple(envelope.rcpt_tos))
        return "250 OK"


def smtp_server(mailbox: Mailbox, port: int) -> Any:
    from aiosmtpd.controller import Controller

    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def message_text(message: EmailMessage) -> str:
    parts = [str(message.get("Subject", ""))]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(str(part.get_content()))
    return "\n".join(parts)


def emails_per_source(messages: list[EmailMessage], sources: Iterable[str]) -> Counter[str]:
    texts = [message_text(m) for m in messages]
    return Counter({s: sum(1 for text in texts if s in text) for s in sources})


def deliveries_per_source(mailbox: Mailbox, recipient: str, sources: Iterable[str]) -> Counter[str]:
    """Messages delivered to `recipient` (by envelope) that name each source."""
    texts = [message_text(m) for m, to in zip(mailbox.messages, mailbox.recipients) if recipient in to]
    return Counter({s: sum(1 for text in texts if s in text) for s in sources})


def incidents_per_source(es: Any, prefix: str, sources: Iterable[str]) -> Counter[str]:
    es.indices.refresh(index=f"{prefix}-incidents", ignore_unavailable=True)
    hits = es.search(index=f"{prefix}-incidents", size=10_000, ignore_unavailable=True)["hits"]["hits"]
    docs = [json.dumps(hit["_source"], ensure_ascii=False) for hit in hits]
    return Counter({s: sum(1 for doc in docs if s in doc) for s in sources})


def alerts_per_source(es: Any, prefix: str, sources: Iterable[str]) -> Counter[str]:
    """Queued alerts (any status) whose rendered text names each source."""
    es.indices.refresh(index=f"{prefix}-alerts", ignore_unavailable=True)
    hits = es.search(index=f"{prefix}-alerts", size=10_000, ignore_unavailable=True)["hits"]["hits"]
    docs = [json.dumps(hit["_source"], ensure_ascii=False) for hit in hits]
    return Counter({s: sum(1 for doc in docs if s in doc) for s in sources})


def watermark(es: Any, prefix: str) -> datetime | None:
    found = es.options(ignore_status=(404, 503)).get(index=f"{prefix}-state", id="watermark-scan")  # 503: being created
    value = found.get("_source", {}).get("value") if found.get("found") else None
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def last_ingested(es: Any, prefix: str) -> datetime | None:
    index = f"{prefix}-events-*"
    es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
    aggs = es.search(index=index, size=0, ignore_unavailable=True, allow_no_indices=True,
                     aggs={"last": {"max": {"field": "event.ingested"}}}).get("aggregations", {})
    value = aggs.get("last", {}).get("value")
    return datetime.fromtimestamp(value / 1000, timezone.utc) if value is not None else None


def events_count(es: Any, prefix: str) -> int:
    index = f"{prefix}-events-*"
    es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
    return int(es.count(index=index, ignore_unavailable=True, allow_no_indices=True)["count"])


def alerts_by_status(es: Any, prefix: str) -> dict[str, int]:
    index = f"{prefix}-alerts"
    es.indices.refresh(index=index, ignore_unavailable=True)
    response = es.search(index=index, size=0, ignore_unavailable=True,
                         aggs={"by": {"terms": {"field": "secmon.status"}}})
    return {b["key"]: b["doc_count"] for b in response.get("aggregations", {}).get("by", {}).get("buckets", [])}


def wait_until(condition: Callable[[], bool], timeout: float, why: Callable[[], str], step: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {why()}")
        time.sleep(step)


def progress(es: Any, prefix: str, mailbox: Mailbox, sources: list[str]) -> str:
    """What the counts are now, for a failure message."""
    emails = emails_per_source(mailbox.messages, sources)
    incidents = incidents_per_source(es, prefix, sources)
    return (f"events {events_count(es, prefix)} of {len(sources) * BURST}, watermark {watermark(es, prefix)}, "
            f"last ingested {last_ingested(es, prefix)}, alerts {alerts_by_status(es, prefix)}, "
            f"{len(mailbox.messages)} emails; bursts without an email: {[s for s in sources if not emails[s]]}, "
            f"without an incident: {[s for s in sources if not incidents[s]]}, "
            f"told twice: {[s for s in sources if emails[s] > 1]}")


def all_scanned(es: Any, prefix: str, events: int) -> bool:
    """Every one of `events` is stored, and the watermark is past the last one's ingest time."""
    if events_count(es, prefix) < events:
        return False
    mark, last = watermark(es, prefix), last_ingested(es, prefix)
    return mark is not None and last is not None and mark > last
