"""`collect --workers N`: records normalized and serialized in N worker processes; this one reads and ships.

The reader cuts the records into batches and sends each to a worker as plain
tuples; the worker runs the same `normalize_record` and `BulkWriter.serialize`
as one process does and sends back the batch's bulk lines and counts. Results
are taken in the order the batches were read, and each becomes one shipper
batch with the checkpoint marks of its records, so checkpoints (only past a
contiguous run of durable batches), spool and dead letters behave exactly as
with one process. Ids are deterministic: which process made a document does not
matter.

A stream carries state from record to record: the year of yearless syslog times.
A worker starts a batch from the latest state known when the batch was sent, and
says which year it gave the batch's first yearless time. Taking results in
order, this process checks that year against the state the batch before really
ended in (every later year follows from the first: `Normalizer.consistent`); a
batch that was sent while the one before it turned the year is normalized again
here, from the right state. A pipeline whose parser keeps its own state (Zeek
or W3C header columns) is not split: the caller normalizes it in one process.

The worker processes are forked before the shipper's threads start (a fork
copies the pipeline compiled once, and no thread's lock).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from multiprocessing.pool import AsyncResult, Pool
from typing import Any

from secmon.collect.files import Record
from secmon.model import DeadLetter, Event
from secmon.normalize.engine import Normalizer
from secmon.service.records import SourceCounts, normalize_record
from secmon.store.writer import BulkWriter, Doc, Origin

State = tuple[int | None, int | None]
Row = tuple[Any, ...]  # a Record as a plain tuple (cheaper to pickle)


@dataclass(frozen=True)
class Job:
    """What every batch of one input needs: copied into each worker by the fork."""

    normalizer: Normalizer
    writer: BulkWriter
    agency: str
    name: str  # the file, for the origin of each document


@dataclass(frozen=True)
class Done:
    """A batch normalized: its documents' parts, its counts, and the state it assumed and left."""

    assumed: State
    first: tuple[datetime, tzinfo, int] | None
    state: State
    heads: list[bytes]
    bodies: list[bytes]
    origins: list[tuple[Any, ...]]
    counts: SourceCounts


_JOB: Job | None = None  # set before the fork; each worker reads its own copy


def _run(job: Job, assumed: State, rows: list[Row]) -> Done:
    normalizer = job.normalizer
    normalizer.restore(assumed)
    counts = SourceCounts()
    items: list[Event | DeadLetter] = []
    origins: list[Origin] = []
    pipeline = normalizer.pipeline.id
    for row in rows:
        record = Record._make(row)
        item = normalize_record(normalizer, record, counts)
        if isinstance(item, (Event, DeadLetter)):
            items.append(item)
            origins.append(Origin("event", job.agency, job.name, record.offset, pipeline))
    docs = job.writer.serialize(items, job.agency, origins)
    return Done(assumed, normalizer.first_time, normalizer.state(), [d.head for d in docs],
                [d.body for d in docs], [tuple(d.origin) for d in docs], counts)


def _in_worker(assumed: State, rows: list[Row]) -> Done:
    assert _JOB is not None, "a collect worker started without its job"
    return _run(_JOB, assumed, rows)


class Workers:
    """A pool of `count` processes normalizing batches of one input, results in order."""

    def __init__(self, job: Job, count: int, counts: SourceCounts):
        global _JOB
        self._job = job
        self._counts = counts
        self._state: State | None = None  # the true state after the last batch taken (None: not read yet)
        self._pending: deque[tuple[AsyncResult[Done], list[Row], Any]] = deque()
        self._depth = 2 * count  # batches out at once: each worker has the next one waiting
        self.redone = 0  # batches normalized again here (sent from a state that turned out stale)
        _JOB = job
        try:
            self._pool: Pool = multiprocessing.get_context("fork").Pool(count)
        finally:
            _JOB = None

    def submit(self, rows: list[Row], marks: Any) -> Iterator[tuple[list[Doc], Any]]:
        """Send a batch; yield the batches done meanwhile, in order: (documents, marks)."""
        if self._state is None:  # the input's state now, after any replay up to its checkpoint
            self._state = self._job.normalizer.state()
        self._pending.append((self._pool.apply_async(_in_worker, (self._state, rows)), rows, marks))
        while len(self._pending) >= self._depth:
            yield self._take()

    def drain(self) -> Iterator[tuple[list[Doc], Any]]:
        while self._pending:
            yield self._take()

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()

    def _take(self) -> tuple[list[Doc], Any]:
        result, rows, marks = self._pending.popleft()
        done = result.get()
        assert self._state is not None
        if not self._job.normalizer.consistent(done.first, self._state):
            done = _run(self._job, self._state, rows)  # here, from the state the batch before left
            self.redone += 1
        if done.first is not None:  # else no record used the clock: the state passes through
            self._state = done.state
        self._counts.add(done.counts)
        docs = [Doc(head, body, Origin._make(origin))
                for head, body, origin in zip(done.heads, done.bodies, done.origins)]
        return docs, marks


def batches(records: Iterable[Record], size: int, max_bytes: int) -> Iterator[list[Row]]:
    """Records in batches of at most `size` records or about `max_bytes` of documents (3x the text)."""
    rows: list[Row] = []
    weight = 0
    for record in records:
        rows.append(tuple(record))
        weight += len(record.text) * 3
        if len(rows) >= size or weight >= max_bytes:
            yield rows
            rows, weight = [], 0
    if rows:
        yield rows
