"""One active scheduler, and how far each of its jobs got: the decisions, no I/O.

The lease and the job documents live in Elasticsearch (`{prefix}-state`, read and
written by `store/state.py`); this module decides what to write. Every takeover
raises the lease's fencing token; every job document carries the token of the
instance that wrote it, and a writer whose token is lower than the stored one is
stale (a newer holder exists) and must not commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from secmon.types import iso, parse_iso

LEASE_ID = "scheduler-lease"

LeaseStep = Literal["create", "take_over", "renew", "standby"]
Outcome = Literal["success", "partial", "failure"]


@dataclass(frozen=True)
class Lease:
    holder: str  # host:pid:random, unique to one process
    token: int  # fencing: +1 on every takeover
    expires: datetime
    acquired: datetime

    def alive(self, now: datetime) -> bool:
        return now < self.expires

    def to_doc(self, now: datetime) -> dict[str, Any]:
        return {"kind": "lease", "holder": self.holder, "token": self.token, "expires": iso(self.expires),
                "acquired": iso(self.acquired), "@timestamp": iso(now)}

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> Lease:
        return Lease(str(doc["holder"]), int(doc["token"]), parse_iso(doc["expires"]), parse_iso(doc["acquired"]))


def lease_step(stored: Lease | None, me: str, now: datetime) -> LeaseStep:
    """What an instance named `me` does on seeing `stored`."""
    if stored is None:
        return "create"
    if stored.holder == me:
        return "renew"  # ours, even if it lapsed: nobody took it over, so nobody committed since
    return "standby" if stored.alive(now) else "take_over"


def next_lease(stored: Lease | None, step: LeaseStep, me: str, now: datetime, ttl: timedelta) -> Lease:
    if step == "create" or stored is None:
        return Lease(me, 1, now + ttl, now)
    if step == "take_over":
        return Lease(me, stored.token + 1, now + ttl, now)
    if step == "renew":
        return replace(stored, expires=now + ttl)
    raise ValueError(f"a standby writes no lease ({step})")


def released(lease: Lease, now: datetime) -> Lease:
    """Given up on shutdown: expired now, so a standby takes over at its next look; the token stays."""
    return replace(lease, expires=min(lease.expires, now))


def may_commit(stored_token: int | None, ours: int) -> bool:
    """A job document written by a newer holder (a higher token) refuses our writes: we are stale."""
    return stored_token is None or stored_token <= ours


@dataclass(frozen=True)
class JobState:
    """The job document `watermark-<job>`: how far it got and how its last run went."""

    job: str
    token: int  # of the writer
    holder: str
    value: datetime | None = None  # scan: every event ingested before this was scanned
    outcome: Outcome | None = None
    ran_at: datetime | None = None
    error: str = ""
    lag_seconds: float | None = None  # scan: how far behind ingest it was when it committed

    @staticmethod
    def doc_id(job: str) -> str:
        return f"watermark-{job}"

    def to_doc(self, now: datetime) -> dict[str, Any]:
        return {"@timestamp": iso(now), "kind": "job", "job": self.job, "token": self.token, "holder": self.holder,
                "value": iso(self.value) if self.value else None,
                "last": {"outcome": self.outcome, "at": iso(self.ran_at) if self.ran_at else None,
                         "error": self.error},
                "lag_seconds": self.lag_seconds}

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> JobState:
        last = doc.get("last") or {}
        return JobState(
            job=str(doc["job"]), token=int(doc["token"]), holder=str(doc.get("holder", "")),
            value=parse_iso(doc["value"]) if doc.get("value") else None, outcome=last.get("outcome"),
            ran_at=parse_iso(last["at"]) if last.get("at") else None, error=str(last.get("error") or ""),
            lag_seconds=doc.get("lag_seconds"))


def chunks(watermark: datetime | None, now: datetime, lookback: timedelta, delay: timedelta, max_chunk: timedelta
           ) -> Iterator[tuple[datetime, datetime]]:
    """The ingest-time windows still to scan, oldest first: from the watermark (first run: now - lookback)
    up to now - delay (bulks in flight settle), each at most `max_chunk` long."""
    start = watermark if watermark is not None else now - lookback
    limit = now - delay
    while start < limit:
        end = min(start + max_chunk, limit)
        yield start, end
        start = end
