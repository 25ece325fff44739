"""What the alert delivery tests share: a config, notifications built from model objects, and a real
loopback SMTP server whose answers a test can switch (451 for a while, 550 for one recipient, slow)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from secmon.config import Settings, load_settings
from secmon.model import Finding, Incident, Notification, Severity
from tests.conftest import free_port

T0 = datetime(2025, 6, 14, 1, 30, tzinfo=timezone.utc)  # 08:30 in Asia/Ho_Chi_Minh


def write_settings(path: Path, es_url: str, prefix: str, smtp_port: int, alerts: str = "", agencies: str = "") -> Settings:
    """A real secmon.yml, loaded and validated as `secmon -c` does. Agencies A (vi) and B (en) by default."""
    agencies = agencies or """\
  - id: agency-a
    name: "Sở Thông tin và Truyền thông"
    language: vi
    recipients: [soc@a.example.vn]
  - id: agency-b
    name: Provincial public portal
    language: en
    timezone: Asia/Ho_Chi_Minh
    recipients: [admin@b.example.vn, ops@b.example.vn]
"""
    path.write_text(f"""\
elasticsearch:
  hosts: [{es_url}]
  index_prefix: {prefix}
agencies:
{agencies}smtp:
  host: 127.0.0.1
  port: {smtp_port}
  sender: secmon@monitoring.example.vn
  timeout: 5
alerts:
  hourly_cap: 100000
  daily_digest: ""
{alerts}""", encoding="utf-8")
    return load_settings(path)


def notification(agency: str, severity: Severity = Severity.HIGH, *, host: str = "web01", user: str = "root",
                 title: str = "SSH password brute force", description: str = "Many failed logins.",
                 translations: tuple[tuple[str, str, str], ...] = (), first: datetime = T0, count: int = 12,
                 rule_id: str = "", reason: str = "opened", key: str = "opened") -> Notification:
    finding = Finding(rule_id=rule_id or f"rule-{uuid.uuid4().hex[:8]}", rule_title=title, severity=severity,
                      agency=agency, group=(("host.hostname", host), ("user.name", user)), first_seen=first,
                      last_seen=first + timedelta(minutes=10), count=count, tags=("attack.credential_access",
                                                                                  "attack.t1110.001"),
                      description=description, translations=translations)
    return Notification(Incident(finding.incident_id, finding, created=first), reason, key)  # type: ignore[arg-type]


@dataclass
class Received:
    rcpt: tuple[str, ...]
    message: EmailMessage
    raw: bytes


@dataclass
class Switchboard:
    """The server's behaviour, switched by the test while it runs."""

    data_reply: str = "250 OK"  # e.g. "451 4.3.0 try again later"
    refused: set[str] = field(default_factory=set)  # RCPT TO these gets 550
    delay: float = 0.0  # seconds per message, so a kill can land mid-run
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refused:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.data_reply.startswith("250"):
            return self.data_reply
        raw = envelope.original_content or envelope.content
        with self.lock:
            self.received.append(Received(tuple(envelope.rcpt_tos),
                                          message_from_bytes(raw, policy=policy.default), raw))  # type: ignore[arg-type]
        return "250 2.0.0 Ok: queued"

    def by_message_id(self) -> Counter[str]:
        with self.lock:
            return Counter(str(r.message["Message-ID"]) for r in self.received)

    def count(self) -> int:
        with self.lock:
            return len(self.received)


@contextmanager
def smtp_server(board: Switchboard) -> Iterator[int]:
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(board, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
