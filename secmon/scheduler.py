"""`secmon run`: APScheduler says when; the jobs are `secmon.service` functions.

One instance is active at a time: the holder of the lease (`service/run.py`,
renewed every lease/3). The others stand by, look again when the holder's lease
expires, and take over then; every job first asks whether this process holds a
live lease. Jobs: scan (by ingest-time watermark, in chunks), deliver (the only
job that sends), daily digests (cron, agency local time), retention, and the
retraining of the anomaly models (the scan scores their windows). Each interval
job first runs at start, and again at a takeover.

A stop request (SIGTERM/SIGINT, set by the CLI as `stop`) ends the scheduler:
the running jobs finish their current step (a scan stops between chunks), the
lease is released so that a standby takes over at once, and `run` returns.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from secmon.config import Settings
from secmon.errors import LeaseLost, StoreUnavailable
from secmon.service import run as jobs
from secmon.service.common import audit, indices_of, setup
from secmon.types import DEFAULT_TIMEZONE, iso, parse_duration, utcnow

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger(__name__)

# Digests run at their agency-local time only; retrain at start only retrains models that are not fresh.
FIRST_RUN_AT_START = ("scan", "deliver", "retention", "retrain")


@dataclass(frozen=True)
class Stopped:
    abandoned: tuple[str, ...]  # jobs still running when the grace period ended


class _Running:
    """Which jobs are running now, so that a stop can wait for them."""

    def __init__(self) -> None:
        self._names: list[str] = []
        self._idle = threading.Condition()

    def __call__(self, name: str, body: Callable[[], Any]) -> Callable[[], None]:
        def tracked() -> None:
            with self._idle:
                self._names.append(name)
            try:
                body()
            finally:
                with self._idle:
                    self._names.remove(name)
                    self._idle.notify_all()
        return tracked

    def wait_idle(self, timeout: float) -> tuple[str, ...]:
        with self._idle:
            self._idle.wait_for(lambda: not self._names, timeout)
            return tuple(self._names)


def run(es: Elasticsearch, settings: Settings, stop: threading.Event, clock: Callable[[], datetime] = utcnow,
        keeper: jobs.Keeper | None = None) -> Stopped:
    """Run until `stop` is set; then release the lease and return."""
    setup(es, settings, clock())  # templates first: a fresh cluster works at once
    keeper = keeper or jobs.Keeper(es, settings)
    indices = indices_of(settings)
    quick = es.options(request_timeout=5, max_retries=0)  # listeners must not stall the scheduler's loop
    schedule = settings.schedule
    ttl = parse_duration(schedule.lease)
    grace = max(60, int(parse_duration(schedule.scan_interval).total_seconds()))
    scheduler = BlockingScheduler(timezone=DEFAULT_TIMEZONE, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": grace})
    running = _Running()

    def note(action: str, outcome: str, details: dict[str, Any]) -> None:
        try:
            audit(quick, indices, action, outcome, clock(), {"holder": keeper.me, **details})
        except StoreUnavailable as exc:
            log.error("could not write the audit trail (%s): %s", action, exc)

    seen_holder: list[str] = []

    def keep_lease() -> None:
        now = clock()
        try:
            change = keeper.keep(now)
        except LeaseLost as exc:
            log.warning("lost the lease: %s", exc)
            note("schedule.lease_lost", "failure", {"error": str(exc)})
            return
        except StoreUnavailable as exc:
            log.error("cannot renew the lease: %s", exc)
            return
        lease = change.lease
        if change.became_active and lease is not None:
            log.info("active: holding the lease (token %d) until %s", lease.token, iso(lease.expires))
            note("schedule.active", "success", {"token": lease.token})
            for job_id in FIRST_RUN_AT_START:
                if scheduler.get_job(job_id) is not None:  # at start they are added with a first run now
                    scheduler.modify_job(job_id, next_run_time=now)
        elif change.lost:
            log.warning("lost the lease to %s: standing by", lease.holder if lease else "another scheduler")
            note("schedule.lease_lost", "failure", {"holder_now": lease.holder if lease else ""})
        if not change.active and lease is not None:
            if seen_holder != [lease.holder]:
                seen_holder[:] = [lease.holder]
                log.info("standby: the lease is held by %s until %s", lease.holder, iso(lease.expires))
            # Look again right when it expires, rather than up to lease/3 later.
            again = max(lease.expires, now) + timedelta(milliseconds=50)
            job = scheduler.get_job("lease")
            planned = getattr(job, "next_run_time", None)  # a job added before start has none yet
            if job is not None and (planned is None or again < planned):
                scheduler.modify_job("lease", next_run_time=again)

    def every(value: str) -> IntervalTrigger:
        return IntervalTrigger(seconds=parse_duration(value).total_seconds(), timezone=DEFAULT_TIMEZONE)

    def add(job_id: str, body: Callable[[int], jobs.JobResult], trigger: Any, first_now: bool) -> None:
        def job() -> None:
            jobs.run_job(es, settings, keeper, job_id.split(":")[0], body, clock, stop)
        extra = {"next_run_time": clock()} if first_now else {}
        scheduler.add_job(running(job_id, job), trigger, id=job_id, name=job_id, **extra)

    scheduler.add_job(running("lease", keep_lease), IntervalTrigger(seconds=ttl.total_seconds() / 3), id="lease",
                      name="lease", misfire_grace_time=max(1, int(ttl.total_seconds() / 3)))
    keep_lease()  # before the first runs: they only run on the active instance
    add("scan", lambda token: jobs.scan_due(es, settings, keeper, token, clock, stop), every(schedule.scan_interval),
        True)
    add("deliver", lambda token: jobs.deliver_due(es, settings, clock), every(schedule.outbox_interval), True)
    add("retention", lambda token: jobs.retention_due(es, settings, clock), every(schedule.retention_interval), True)
    add("retrain", lambda token: jobs.retrain_due(es, settings, keeper, token, clock, stop=stop),
        every(schedule.retrain_interval), True)
    if settings.alerts.daily_digest:
        hour, minute = (int(part) for part in settings.alerts.daily_digest.split(":"))
        for agency in settings.agencies:  # the agency's own 08:00, not the server's
            add(f"digests:{agency.id}", lambda token: jobs.digests_due(es, settings, clock),
                CronTrigger(hour=hour, minute=minute, timezone=agency.timezone), False)

    def listen(event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("job %s missed its run at %s", event.job_id, event.scheduled_run_time)
            note("schedule.job_missed", "failure", {"job": event.job_id,
                                                    "scheduled": iso(event.scheduled_run_time)})
        else:  # a bug: expected failures are recorded by run_job
            log.error("job %s crashed: %r", event.job_id, event.exception)
            note("schedule.job_failed", "failure", {"job": event.job_id, "error": repr(event.exception),
                                                    "traceback": event.traceback or ""})

    scheduler.add_listener(listen, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    threading.Thread(target=_stop_when_asked, args=(scheduler, stop), name="secmon-stop", daemon=True).start()
    note("schedule.start", "success", {})
    scheduler.start()
    abandoned = running.wait_idle(max(5.0, ttl.total_seconds()))
    if abandoned:
        log.warning("stopping without waiting for: %s", ", ".join(abandoned))
    try:
        keeper.release(clock())
    except StoreUnavailable as exc:
        log.error("could not release the lease (a standby takes over when it expires): %s", exc)
    note("schedule.stop", "success", {"abandoned": list(abandoned)})
    log.info("stopped")
    return Stopped(abandoned)


def _stop_when_asked(scheduler: BlockingScheduler, stop: threading.Event) -> None:
    stop.wait()
    while not scheduler.running:  # asked before the scheduler started: shut it down as soon as it runs
        time.sleep(0.05)
    scheduler.shutdown(wait=False)
