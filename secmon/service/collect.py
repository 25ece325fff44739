"""The collect flow: files, EVTX files or stdin -> pipeline -> bulk batches -> Elasticsearch -> checkpoints.

It wires the stages (collect, normalize, store) and owns no policy of its own
beyond batching and the time window of the agency's indices (`time_bounds`).
A record the readers could not take whole (over the line cap, unreadable EVTX
data) becomes a dead letter here, with the reader's reason. `collect_files` ships inputs to their end; `service.follow`
reuses the batching and state here for the long-running mode. With a state
folder, a checkpoint registry lets a restarted collector resume exactly, and a
bounded spool keeps batches while Elasticsearch is unreachable.
"""

from __future__ import annotations

import fcntl
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from secmon.collect.evtxfiles import is_evtx, read_evtx
from secmon.collect.files import (
    FINGERPRINT_BYTES,
    MAX_LINE,
    FileReader,
    Record,
    digest,
    open_log,
    read_records,
    stream_identity,
)
from secmon.collect.registry import Mark, Registry
from secmon.config import Agency, Settings
from secmon.errors import InputError
from secmon.model import Event
from secmon.normalize.engine import Normalizer, Result, Skipped, TimeBounds
from secmon.normalize.pipeline import Pipeline, load_pipelines, pipeline_named
from secmon.service.common import audit, indices_of
from secmon.service.records import SourceCounts, normalize_record
from secmon.store.client import check, reporting
from secmon.store.indices import Indices
from secmon.store.ship import DEFAULT_IN_FLIGHT, Batch, Shipper
from secmon.store.spool import Spool
from secmon.store.templates import install_templates
from secmon.store.writer import BulkWriter, Doc, Origin, WriteStats
from secmon.types import parse_duration

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from secmon.service.collect_workers import Workers

log = logging.getLogger(__name__)
_new_tuple = tuple.__new__

MB = 1 << 20
DEFAULT_WORKERS = 1  # processes normalizing: on 2 cores busy with the node, 2 and 3 reached 0.45 and 0.54 of the
# ceiling (one run each, bench/ingest "curve_workers"), no better than one process, with 209 and 267 MB RSS


@dataclass(frozen=True)
class CollectOptions:
    state_dir: Path | None = None  # checkpoints and spool; None: read whole files, no spool
    multiline_start: str | None = None  # a line matching it starts a record; others continue it
    from_end: bool = False  # follow: files never seen before start at their end
    spool_max_bytes: int = 512 * MB
    batch_events: int = 2000
    batch_bytes: int = 8 * MB
    batch_wait: float = 1.0  # seconds: a partial batch is shipped after this long
    poll_interval: float = 0.25
    max_line: int = MAX_LINE  # bytes: a longer record becomes a dead letter keeping its head
    in_flight: int = DEFAULT_IN_FLIGHT  # bulk requests out at once
    workers: int = DEFAULT_WORKERS  # processes normalizing (collect_workers.py); 1: this one

    def multiline(self) -> re.Pattern[str] | None:
        if not self.multiline_start:
            return None
        try:
            return re.compile(self.multiline_start)
        except re.error as exc:
            raise InputError(f"--multiline-start: invalid regular expression: {exc}") from None


@dataclass
class CollectReport:
    stats: WriteStats
    sources: dict[str, SourceCounts] = field(default_factory=dict)  # per file / syslog peer, as normalized
    syslog_dropped: int = 0
    notes: list[str] = field(default_factory=list)
    pipeline: str = ""
    unmatched: tuple[str, ...] = ()  # --follow: patterns that matched no file while it ran

    @property
    def damaged(self) -> bool:
        """Data could not be read: events were lost (their dead letters say where)."""
        return any(c.lost or c.unreadable for c in self.sources.values())

    @property
    def url_undecodable(self) -> int:
        """Events stored with a URL that could not be decoded exactly: web rules saw it partly encoded."""
        return sum(c.url_undecodable for c in self.sources.values())

    @property
    def all_dead(self) -> bool:
        """Not one record became an event, and some were dead-lettered: the wrong source, most likely."""
        return self.stats.events == 0 and bool(self.stats.dead_letters + self.stats.rejected)


def time_bounds(agency: Agency) -> TimeBounds:
    return TimeBounds(parse_duration(agency.retention), parse_duration(agency.future_skew))


def find_pipeline(settings: Settings, pipeline_id: str) -> Pipeline:
    folders = [settings.resolve(p) for p in settings.pipelines]
    named = pipeline_named(folders, pipeline_id)
    if named is None:  # ids are file names: listing them parses nothing (and no broken neighbour hides them)
        available = sorted({path.stem for folder in folders for path in folder.glob("*.yml")})
        raise InputError(f"unknown source {pipeline_id!r}", hint=f"pipelines available: {', '.join(available)}")
    return named


class Batcher:
    """Collects normalized items into batches by count, bytes and age; ships them through the shipper."""

    def __init__(self, writer: BulkWriter, shipper: Shipper, agency: str, pipeline: str, options: CollectOptions,
                 marks_of: Callable[[dict[str, int]], Any]):
        self._shipper = shipper
        self._agency = agency
        self._pipeline = pipeline
        self._options = options
        self._marks_of = marks_of
        self._docs: list[Doc] = []
        self._document = writer.document
        self._bytes = 0
        self._ends: dict[str, int] = {}
        self._since = 0.0
        self._events, self._max_bytes = options.batch_events, options.batch_bytes  # read once a line

    def add(self, item: Result, record: Record, name: str) -> None:
        """`name`: the file or peer the record came from, for the dead letter should Elasticsearch refuse it."""
        offset, text, _, end, source = record[:5]  # one unpacking, not five property reads (once a line)
        if source and end > self._ends.get(source, 0):  # a skipped record moves the checkpoint too
            self._ends[source] = end
        if item.__class__ is Skipped:
            return
        docs = self._docs
        if not docs:
            self._since = time.monotonic()
        # Serialized now, while the document is fresh in the caches; its origin Origin("event", agency, name,
        # offset, pipeline) made without the NamedTuple's Python-level constructor (one a line)
        docs.append(self._document(item, self._agency,  # type: ignore[arg-type]
                                   _new_tuple(Origin, ("event", self._agency, name, offset, self._pipeline, False))))
        self._bytes += len(text) * 3  # the document is about three times its line
        if len(docs) >= self._events or self._bytes >= self._max_bytes:
            self.flush()

    def due(self) -> bool:
        return bool(self._docs or self._ends) and time.monotonic() - self._since >= self._options.batch_wait

    def flush(self) -> None:
        if not self._docs and not self._ends:
            return
        self._shipper.submit(Batch(self._docs, self._marks_of(self._ends)))
        self._docs, self._bytes, self._ends = [], 0, {}


class CollectorState:
    """The state folder of one collector (agency + pipeline): checkpoints, spool, and a lock."""

    def __init__(self, folder: Path, agency: str, pipeline: str, options: CollectOptions):
        self.folder = folder
        name = f"{agency}-{pipeline}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._lock = (folder / f"{name}.lock").open("w")
        except OSError as exc:
            raise InputError(f"cannot use the state folder: {exc.strerror}", hint=str(folder)) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another collector for agency {agency!r} and source {pipeline!r} is running with "
                             f"the state folder {folder}", hint="one collector per agency and source") from None
        self.registry = Registry(folder / f"{name}.checkpoints.json").load()
        self.spool = Spool(folder / f"{name}.spool", options.spool_max_bytes).open()

    def close(self) -> None:
        self._lock.close()


def prepare(es: Elasticsearch, settings: Settings) -> Indices:
    check(es)
    indices = Indices(settings.elasticsearch.index_prefix)
    # Events written before the templates exist would get dynamic mappings (text, not
    # keyword/ip) that no later setup can fix; installing is idempotent and cheap.
    install_templates(es, indices)
    return indices


def _refresh(es: Elasticsearch, indices: Indices, agency: str) -> None:
    with reporting(es, "refresh the event indices"):
        es.indices.refresh(index=[indices.events_pattern(agency), indices.deadletter(agency)],
                           ignore_unavailable=True, allow_no_indices=True)


def source_hint(settings: Settings, samples: list[tuple[str, str]], tried: str, now: datetime) -> str:
    """What to say when every record of an input was dead-lettered: the pipeline that parses most of the
    sample lines, if one does better than `tried` (which is given the same chance, time window aside)."""
    if not samples:
        return "wrong --source?"
    lines, first = [line for line, _ in samples], samples[0][1]
    try:
        pipelines = load_pipelines([settings.resolve(p) for p in settings.pipelines])
    except InputError:  # a broken pipeline file elsewhere: no guess
        return f"wrong --source? the first reason: {first}"
    scores: dict[str, int] = {}
    for pipeline in pipelines.values():
        normalizer = Normalizer(pipeline, agency="guess", timezone="UTC", source="-", now=now)
        scores[pipeline.id] = sum(isinstance(normalizer.normalize(line, 0, str(i)), Event)
                                  for i, line in enumerate(lines))
    best = max((p for p in scores if p != tried), key=lambda p: scores[p], default=None)
    if best is None or scores[best] == 0 or scores.get(tried, 0) >= scores[best]:
        return f"the first reason: {first}" if scores.get(tried, 0) else f"wrong --source? the first reason: {first}"
    return f"wrong --source? the lines look like {best} ({scores[best]} of {len(lines)} sampled lines parse)"


def collect_once(es: Elasticsearch, settings: Settings, path: Path | None, agency_id: str, source: str,
                 now: datetime, year: int | None = None, options: CollectOptions = CollectOptions(),
                 progress: Callable[[int], None] | None = None, stream: BinaryIO | None = None,
                 ) -> CollectReport:
    """Ship one file (or EVTX file, or `stream` when `path` is None) to its end."""
    reports = collect_inputs(es, settings, [path], agency_id, source, now, year, options,
                             (lambda _: progress) if progress else None, stream)
    return list(reports)[0][1]


def collect_inputs(es: Elasticsearch, settings: Settings, inputs: list[Path | None], agency_id: str, source: str,
                   now: datetime, year: int | None = None, options: CollectOptions = CollectOptions(),
                   progress_for: Callable[[Path], Callable[[int], None] | None] | None = None,
                   stream: BinaryIO | None = None) -> Iterator[tuple[str, CollectReport]]:
    """Ship files (or EVTX files, or `stream` for a None input) to their end, one report each.

    `progress_for(path)` gives a callback for the bytes read so far. With a state
    folder, a file resumes at its checkpoint and the spool absorbs an outage;
    without one, the whole file is read and an outage longer than the retries
    fails the run. Settings, pipeline and templates are prepared once for all inputs.
    """
    agency = settings.agency(agency_id)
    pipeline = find_pipeline(settings, source)
    multiline = options.multiline()
    indices = prepare(es, settings)
    bounds = time_bounds(agency)
    state = CollectorState(options.state_dir, agency.id, source, options) if options.state_dir else None
    try:
        for path in inputs:
            name = str(path) if path is not None else "-"
            normalizer = Normalizer(pipeline, agency=agency.id, timezone=agency.timezone, source=name, now=now,
                                    year=year, bounds=bounds)
            progress = progress_for(path) if progress_for and path is not None else None
            yield name, _ship_once(es, indices, agency.id, path, stream, normalizer, state, options, multiline,
                                   progress)
    finally:
        if state:
            state.close()
    _refresh(es, indices, agency.id)  # what was shipped is searchable when the command returns


def _ship_once(es: Elasticsearch, indices: Indices, agency: str, path: Path | None, stream: BinaryIO | None,
               normalizer: Normalizer, state: CollectorState | None, options: CollectOptions,
               multiline: re.Pattern[str] | None, progress: Callable[[int], None] | None) -> CollectReport:
    name = normalizer.source
    writer = BulkWriter(es, indices, unreachable_attempts=2 if state else None)

    def durable(marks: dict[str, Mark]) -> None:
        if state and marks:
            state.registry.advance(marks)
            state.registry.save()

    shipper = Shipper(writer, state.spool if state else None, durable, in_flight=options.in_flight)
    counts = SourceCounts()
    report = CollectReport(WriteStats(), {name: counts}, pipeline=normalizer.pipeline.id)
    workers = None
    if options.workers > 1:
        if normalizer.stateless_parser:  # forked before the shipper's threads start
            from secmon.service.collect_workers import Job, Workers  # only this road needs multiprocessing
            workers = Workers(Job(normalizer, writer, agency, name), options.workers, counts)
        else:
            report.notes.append(f"pipeline {normalizer.pipeline.id} reads column names from header lines: "
                                f"normalized in one process (--workers applies to other pipelines)")
    shipper.start()
    reader: FileReader | None = None
    handle: BinaryIO | None = None
    try:
        mark: Mark = (0, FINGERPRINT_BYTES, name, "")
        if path is not None and is_evtx(path):
            records: Iterable[Record] = read_evtx(path)
        else:
            handle, records, reader, mark = _text_records(path, stream, normalizer, state, options, multiline)

        def marks_of(ends: dict[str, int]) -> dict[str, Mark]:
            return {k: (v, *mark[1:]) for k, v in ends.items()}

        def report_progress() -> None:
            if progress and reader:
                progress(reader.position)

        if workers is not None:
            _ship_from_workers(workers, records, shipper, marks_of, options, report_progress)
        else:
            batcher = Batcher(writer, shipper, agency, normalizer.pipeline.id, options, marks_of)
            last = 0.0
            for record in records:
                batcher.add(normalize_record(normalizer, record, counts), record, name)
                if progress and time.monotonic() - last > 0.2:
                    last = time.monotonic()
                    report_progress()
            batcher.flush()
        shipper.close()
    finally:
        shipper.abandon()
        if workers is not None:
            workers.close()
        if handle is not None and path is not None:
            handle.close()
    report.stats = shipper.stats
    if reader is not None:
        report.stats.skipped += reader.skipped
        if reader.start:
            report.notes.append(f"resumed at byte {reader.start} (the checkpoint of an earlier run)")
        if progress:
            progress(reader.position)
    report.stats.skipped += counts.skipped
    return report


def _ship_from_workers(workers: Workers, records: Iterable[Record], shipper: Shipper,
                       marks_of: Callable[[dict[str, int]], Any], options: CollectOptions,
                       progress: Callable[[], None]) -> None:
    """Batches of records to the worker processes, their documents to the shipper in the order read."""
    from secmon.service.collect_workers import batches

    for rows in batches(records, options.batch_events, options.batch_bytes):
        # Each record's checkpoint end, the last one's per source (records come in order).
        for docs, marks in workers.submit(rows, marks_of({row[4]: row[3] for row in rows if row[4]})):
            shipper.submit(Batch(docs, marks))
        progress()
    for docs, marks in workers.drain():
        shipper.submit(Batch(docs, marks))


def _text_records(path: Path | None, stream: BinaryIO | None, normalizer: Normalizer, state: CollectorState | None,
                  options: CollectOptions, multiline: re.Pattern[str] | None
                  ) -> tuple[BinaryIO, Iterator[Record], FileReader, Mark]:
    """A text input opened at its checkpoint (found by content: a copy of a file read before resumes too):
    the handle, its records, their reader, and the checkpoint mark (offset, length, path, ident)."""
    handle, ident, head = _open_input(path, stream)
    if path is None:  # a stream: its first bytes, read to name it, are given back first
        reader = FileReader("-", multiline=multiline, max_line=options.max_line)
        return handle, reader.records(_prefixed(head, handle), ident), reader, (0, FINGERPRINT_BYTES, "-", ident)
    size = path.stat().st_size
    start, length = 0, min(FINGERPRINT_BYTES, size)
    key = digest(head[:length])
    known = state.registry.find(head, size) if state else None
    if known is not None:
        start, key, length, ident = known.offset, known.key, known.length, known.ident
        replay(normalizer, path, start, multiline, options.max_line)
    handle.seek(start)
    reader = FileReader(str(path), start=start, multiline=multiline, max_line=options.max_line)
    return handle, reader.records(handle, ident, key), reader, (0, length, str(path), ident)


def replay(normalizer: Normalizer, path: Path, upto: int, multiline: re.Pattern[str] | None,
           max_line: int = MAX_LINE) -> None:
    """Run the records before a checkpoint through the pipeline again, shipping nothing.

    A stream's state depends on what came before: the year of yearless syslog
    times (it turns at New Year), the columns of a Zeek or W3C header. Resuming
    without it would give the same record another timestamp (another index: a
    duplicate) or no columns at all.
    """
    for record in read_records(path, multiline=multiline, max_line=max_line):
        if record.offset >= upto:
            return
        if not record.problem:
            normalizer.normalize(record.text, record.offset, record.record_id)


class _Prefixed:
    """A stream whose first bytes were already read (to name it): gives them back first."""

    def __init__(self, head: bytes, rest: IO[bytes]):
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._rest.read(size)


def _open_input(path: Path | None, stream: BinaryIO | None) -> tuple[BinaryIO, str, bytes]:
    """The input, its identity, and its first KiB (a stream: read already, given back by _prefixed)."""
    if path is not None:
        return open_log(path)
    assert stream is not None
    head, ident = stream_identity(stream)
    return stream, ident, head


def _prefixed(head: bytes, handle: BinaryIO) -> Any:
    return _Prefixed(head, handle) if head else handle


# --- the flow's entry points (the CLI calls these) -------------------------------------------

def collect_files(es: Elasticsearch, settings: Settings, paths: list[Path], agency_id: str, source: str,
                  now: datetime, year: int | None = None, options: CollectOptions | None = None,
                  progress_for: Callable[[Path], Callable[[int], None] | None] | None = None
                  ) -> Iterator[tuple[Path, CollectReport]]:
    """Ship log files one after the other, yielding each one's report as it is done."""
    reports = collect_inputs(es, settings, list(paths), agency_id, source, now, year,
                             options or CollectOptions(), progress_for)
    by_name = {str(path): path for path in paths}
    for name, report in reports:  # driven to its end, so that its final refresh runs
        audit_collect(es, settings, report, {"file": name, "source": source}, now, agency_id)
        yield by_name[name], report


def collect_stream(es: Elasticsearch, settings: Settings, stream: BinaryIO, agency_id: str, source: str,
                   now: datetime, year: int | None = None, options: CollectOptions | None = None
                   ) -> CollectReport:
    """Ship a stream (stdin) to its end."""
    report = collect_once(es, settings, None, agency_id, source, now, year, options or CollectOptions(),
                          stream=stream)
    audit_collect(es, settings, report, {"file": "-", "source": source}, now, agency_id)
    return report


def audit_collect(es: Elasticsearch, settings: Settings, report: CollectReport, details: dict[str, Any],
                  now: datetime, agency_id: str) -> None:
    stats = report.stats
    lost = sum(c.lost for c in report.sources.values())
    audit(es, indices_of(settings), "collect", "failure" if report.damaged or report.all_dead else "success", now,
          {**details, "events": stats.events, "dead_letters": stats.dead_letters + stats.rejected,
           "rejected": stats.rejected, "skipped": stats.skipped, "lost": lost,
           "url_undecodable": report.url_undecodable}, settings.agency(agency_id).id)
