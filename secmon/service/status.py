"""The status flow: is unattended monitoring healthy? Lease, watermarks, alerts and rules, and what is wrong.

Everything is read from Elasticsearch, so any host can ask (a container health
check, a monitoring probe, an analyst), whichever instance is running.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from secmon.config import Settings
from secmon.lease import LEASE_ID, JobState, Lease
from secmon.service.common import indices_of
from secmon.service.run import JOBS
from secmon.store import state
from secmon.store.client import check
from secmon.store.overview import count_by, latest
from secmon.types import parse_duration, parse_iso

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


@dataclass(frozen=True)
class JobStatus:
    job: str
    state: JobState | None  # None: never ran
    lag_seconds: float | None = None  # scan: how far its watermark is behind now


@dataclass(frozen=True)
class LastScan:
    id: str
    at: datetime
    rules_run: int
    failures: tuple[tuple[str, str], ...]  # (rule, reason)


@dataclass(frozen=True)
class Status:
    checked: datetime
    lease: Lease | None
    active: bool  # someone holds a live lease
    jobs: tuple[JobStatus, ...]
    alerts: dict[str, int]  # documents by secmon.status: pending, sending, sent, failed
    last_scan: LastScan | None
    max_scan_lag_seconds: float
    problems: tuple[str, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return not self.problems


def status(es: Elasticsearch, settings: Settings, now: datetime) -> Status:
    check(es)
    indices = indices_of(settings)
    found = state.read_many(es, indices, [LEASE_ID, *(JobState.doc_id(j) for j in JOBS)])
    lease = Lease.from_doc(found[LEASE_ID].doc) if LEASE_ID in found else None
    jobs = []
    for job in JOBS:
        stored = found.get(JobState.doc_id(job))
        job_state = JobState.from_doc(stored.doc) if stored else None
        lag = (now - job_state.value).total_seconds() if job_state and job_state.value else None
        jobs.append(JobStatus(job, job_state, lag))
    scan = latest(es, indices.scans, {"term": {"secmon.trigger": "scheduler"}})
    last_scan = None
    if scan is not None:
        failures = tuple((str(f.get("rule")), str(f.get("reason"))) for f in scan["secmon"].get("failures") or ())
        last_scan = LastScan(scan["_id"], parse_iso(scan["@timestamp"]), int(scan["secmon"]["rules_run"]), failures)
    schedule = settings.schedule
    threshold = (3 * parse_duration(schedule.scan_interval) + parse_duration(schedule.ingest_delay)).total_seconds()
    result = Status(now, lease, lease is not None and lease.alive(now), tuple(jobs),
                    count_by(es, indices.alerts, "secmon.status"), last_scan, threshold)
    return replace(result, problems=problems(result))


def problems(s: Status) -> tuple[str, ...]:
    """What makes it unhealthy, one line each (empty: healthy)."""
    out = []
    if s.lease is None:
        out.append("no scheduler has ever held the lease (is `secmon run` running?)")
    elif not s.active:
        out.append(f"no active scheduler: the lease of {s.lease.holder} expired at {s.lease.expires.isoformat()}")
    scan = next(j for j in s.jobs if j.job == "scan")
    if scan.state is None or scan.state.value is None:
        out.append("no scheduled scan has completed yet")
    elif scan.lag_seconds is not None and scan.lag_seconds > s.max_scan_lag_seconds:
        out.append(f"scans are {scan.lag_seconds:.0f}s behind ingest (more than {s.max_scan_lag_seconds:.0f}s)")
    for job in s.jobs:
        if job.state is not None and job.state.outcome == "failure":
            out.append(f"the last {job.job} run failed: {job.state.error}")
    if s.alerts.get("failed"):
        out.append(f"{s.alerts['failed']} alerts failed for good (secmon alerts retry sends them again)")
    if s.last_scan is not None and s.last_scan.failures:
        out.append(f"{len(s.last_scan.failures)} rules failed in the last scheduled scan")
    if s.last_scan is not None and s.last_scan.rules_run == 0:
        out.append("the last scheduled scan ran no rule")
    return tuple(out)
