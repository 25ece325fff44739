"""APScheduler jobs that call service functions, nothing else.

Every job is idempotent (deterministic incident and alert ids), so a job that
runs twice, or a scheduler restarted mid-way, never alerts twice. A failing
job logs one line and runs again at its next time; state lives in Elasticsearch.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from elasticsearch import Elasticsearch

from secmon.config import Settings
from secmon.service.common import setup
from secmon.service.deliver import deliver
from secmon.service.scan import ScanOptions, scan
from secmon.types import DEFAULT_TIMEZONE, parse_duration, utcnow
from secmon.errors import SecmonError

log = logging.getLogger(__name__)


def scan_job(es: Elasticsearch, settings: Settings) -> None:
    now = utcnow()
    window = parse_duration(settings.schedule.lookback)
    try:
        summary = scan(es, settings, ScanOptions(now - window, now, trigger="scheduler"), now)
    except SecmonError as exc:
        log.error("scan failed: %s", exc)
        return
    log.info("scan %s: %d incidents, %d new, %d alerts queued", summary.id[:12], len(summary.incidents),
             len(summary.new_incident_ids), summary.deliveries_pending)


def deliver_job(es: Elasticsearch, settings: Settings) -> None:
    try:
        report = deliver(es, settings, utcnow())
    except SecmonError as exc:
        log.error("alert delivery failed: %s", exc)
        return
    if report.errors:
        log.warning("alerts still queued: %d (%s)", report.pending, "; ".join(report.errors))


def build(es: Elasticsearch, settings: Settings) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone=DEFAULT_TIMEZONE)
    common = {"args": (es, settings), "coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
    scheduler.add_job(scan_job, IntervalTrigger(seconds=parse_duration(settings.schedule.scan_interval).total_seconds()),
                      id="scan", **common)
    scheduler.add_job(deliver_job,
                      IntervalTrigger(seconds=parse_duration(settings.schedule.outbox_interval).total_seconds()),
                      id="deliver", **common)
    return scheduler


def run_forever(es: Elasticsearch, settings: Settings) -> None:
    setup(es, settings, utcnow())  # templates first: a fresh cluster works at once
    build(es, settings).start()
