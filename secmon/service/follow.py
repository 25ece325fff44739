"""The follow flow: files by glob through rotation, and syslog listeners, until stopped.

Shares batching, state and checkpoints with `service.collect`; needs a state
folder so that a restart resumes exactly and an outage fills the spool.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from secmon.collect.files import Record
from secmon.collect.registry import Mark
from secmon.collect.syslog import Listener
from secmon.collect.tail import Follower
from secmon.config import Settings
from secmon.errors import InputError, SecmonError, StoreUnavailable
from secmon.normalize.engine import Normalizer
from secmon.service.collect import (
    Batcher,
    CollectOptions,
    CollectorState,
    CollectReport,
    audit_collect,
    find_pipeline,
    prepare,
    replay,
    time_bounds,
)
from secmon.service.records import SourceCounts, normalize_record
from secmon.store.ship import Shipper
from secmon.store.writer import BulkWriter, WriteStats
from secmon.types import utcnow

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FollowSpec:
    patterns: tuple[str, ...] = ()
    listener: Listener | None = None  # started by the caller (it owns the sockets' lifetime)


def follow(es: Elasticsearch, settings: Settings, spec: FollowSpec, agency_id: str, source: str, now: datetime,
           stop: threading.Event, options: CollectOptions, year: int | None = None,
           report_every: float = 60.0) -> CollectReport:
    """Collect until `stop` is set: files by glob (through rotation) and the syslog listener.

    Needs a state folder: the checkpoints make a restart resume exactly, and the
    spool keeps batches while Elasticsearch is down (then reading pauses when it is full).
    """
    if options.state_dir is None:
        raise InputError("following needs a state folder for its checkpoints and spool (--state)")
    agency = settings.agency(agency_id)
    pipeline = find_pipeline(settings, source)
    multiline = options.multiline()
    indices = prepare(es, settings)
    state = CollectorState(options.state_dir, agency.id, source, options)
    follower = Follower(list(spec.patterns), state.registry, from_end=options.from_end, multiline=multiline,
                        max_line=options.max_line)
    bounds = time_bounds(agency)

    def durable(marks: dict[str, Mark]) -> None:
        if marks:
            state.registry.advance(marks)
            state.registry.save()

    writer = BulkWriter(es, indices, unreachable_attempts=2)
    shipper = Shipper(writer, state.spool, durable, in_flight=options.in_flight).start()
    batcher = Batcher(writer, shipper, agency.id, pipeline.id, options,
                      lambda ends: {k: (v, *follower.marks_path(k)) for k, v in ends.items()})
    report = CollectReport(WriteStats(), pipeline=pipeline.id)
    normalizers: dict[str, Normalizer] = {}
    started = time.monotonic()

    def normalizer_for(key: str, name: str, first: Record | None = None) -> Normalizer:
        if key not in normalizers:  # one per stream: each has its own year for yearless timestamps
            # A stream first seen months after the start gets its first year from the time it is opened.
            opened = now + timedelta(seconds=time.monotonic() - started)
            normalizers[key] = Normalizer(pipeline, agency=agency.id, timezone=agency.timezone, source=name,
                                          now=opened, year=year, bounds=bounds)
            report.sources.setdefault(name, SourceCounts())
            if first is not None and first.offset > 0 and Path(name).is_file():  # resumed: rebuild the state
                replay(normalizers[key], Path(name), first.offset, multiline, options.max_line)
        return normalizers[key]

    next_report = time.monotonic() + report_every
    try:
        while not stop.is_set():
            records = follower.poll() if spec.patterns else []
            for record in records:
                name = follower.marks_path(record.source)[1] or record.source
                _add(batcher, normalizer_for(record.source, name, record), record, name,
                     report.sources.setdefault(name, SourceCounts()))  # a renamed file counts under its new name
            if spec.listener is not None:
                wait = 0.0 if records else options.poll_interval
                for record in spec.listener.records(options.batch_events, wait):
                    name = record.record_id.split(":")[1] + ":" + record.record_id.split(":")[2]
                    _add(batcher, normalizer_for(name, name), record, name, report.sources[name])
            elif not records:
                stop.wait(options.poll_interval)
            if batcher.due():
                batcher.flush()
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + report_every
                _log_counts(report, shipper, spec.listener)
        batcher.flush()
        try:
            shipper.close()
        except StoreUnavailable as exc:
            report.notes.append(str(exc))
    finally:
        shipper.abandon()
        follower.close()
        state.close()
    report.stats = shipper.stats
    report.stats.skipped += follower.skipped + sum(c.skipped for c in report.sources.values())
    report.unmatched = tuple(p for p in spec.patterns if p not in follower.matched)
    report.syslog_dropped = spec.listener.dropped if spec.listener else 0
    if spec.listener and spec.listener.connections.accepted + spec.listener.connections.refused:
        report.notes.append(f"syslog: {spec.listener.connections.summary()}")
    return report


def _add(batcher: Batcher, normalizer: Normalizer, record: Record, name: str, counts: SourceCounts) -> None:
    batcher.add(normalize_record(normalizer, record, counts), record, name)


def _log_counts(report: CollectReport, shipper: Shipper, listener: Listener | None) -> None:
    stats = shipper.stats
    log.info("shipped %d events, %d dead letters; %d batches spooled%s", stats.events,
             stats.dead_letters + stats.rejected, stats.spooled_batches,
             f"; syslog: {listener.received} received, {listener.dropped} dropped; "
             f"{listener.connections.summary()}" if listener else "")
    for name, counts in sorted(report.sources.items()):
        log.info("  %s: %d events, %d dead letters", name, counts.events, counts.dead_letters)


def collect_follow(es: Elasticsearch, settings: Settings, spec: FollowSpec, agency_id: str, source: str,
                   now: datetime, stop: threading.Event, options: CollectOptions, year: int | None = None
                   ) -> CollectReport:
    """Collect files by glob and syslog until `stop` is set, then write the audit entry."""
    report = follow(es, settings, spec, agency_id, source, now, stop, options, year)
    try:
        audit_collect(es, settings, report, {"files": list(spec.patterns), "source": source, "follow": True},
                      utcnow(), agency_id)
    except SecmonError as exc:  # stopping while Elasticsearch is down: the audit entry is all that is lost
        report.notes.append(f"audit entry not written: {exc}")
    return report
