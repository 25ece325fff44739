"""Ship batches in the background: to Elasticsearch, else to the spool; then checkpoint.

The reader (file tail, syslog listener) hands over serialized batches and
carries on reading while `in_flight` sender threads each have a bulk request
out: a node indexes several requests at once, so one at a time leaves it idle
between them. `submit` blocks when the small queue is full, which is what stops
reading when Elasticsearch is slow and the spool is full (backpressure, bounded
memory). Batches may become durable out of order - acknowledged by
Elasticsearch, or fsynced into the spool - and that is harmless for the
documents (their ids are deterministic: a batch sent twice leaves one copy), but
not for the checkpoints: the `marks` of batch n are given to `on_durable` only
once batches 0..n are all durable, so a checkpoint never passes a record that
could still be lost, whatever order the node answers in.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from secmon.errors import SecmonError, StoreUnavailable
from secmon.store.spool import Spool
from secmon.store.writer import BulkWriter, Doc, WriteStats

log = logging.getLogger(__name__)


DEFAULT_IN_FLIGHT = 4  # bulk requests out at once: the best of 3, 4, 6 measured together on 2 cores, and the
# ceiling's best stream count was 3 or 4 in each run (bench/ingest, "curve_in_flight")


@dataclass(frozen=True)
class Batch:
    docs: list[Doc]
    marks: Any  # opaque to the shipper: what `on_durable` needs to checkpoint


class _Ledger:
    """Batches numbered as submitted; `on_durable` is called for each, in that order, once it and every
    batch before it is durable (a later batch that finished first waits for the earlier ones)."""

    def __init__(self, on_durable: Callable[[Any], None]):
        self._on_durable = on_durable
        self._lock = threading.Lock()
        self._done: dict[int, Any] = {}
        self.next = 0  # the first batch not yet durable: every one before it is

    def durable(self, number: int, marks: Any) -> None:
        with self._lock:  # one caller at a time, so the checkpoints are written in order
            self._done[number] = marks
            while self.next in self._done:
                self._on_durable(self._done.pop(self.next))
                self.next += 1


class Shipper:
    def __init__(self, writer: BulkWriter, spool: Spool | None, on_durable: Callable[[Any], None], *,
                 in_flight: int = DEFAULT_IN_FLIGHT, retry_every: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep):
        self._writer = writer
        self._spool = spool
        self._ledger = _Ledger(on_durable)
        self._senders = max(1, in_flight)
        self._queue: queue.Queue[tuple[int, Batch] | None] = queue.Queue(self._senders)
        self._submitted = 0
        self._retry_every = retry_every
        self._sleep = sleep
        self._down_since: float | None = None
        self._next_try = 0.0
        self._failure: BaseException | None = None
        self._failed = threading.Event()  # stays set after the reader took `_failure`
        self._threads: list[threading.Thread] = []
        self.stats = WriteStats()
        self.spool_full_waits = 0
        self._lock = threading.Lock()  # the counters
        # The spool and the up/down state: one sender at a time appends, drains (sending the oldest
        # segment, then deleting it: two drainers would send and count it twice) or decides the node is back.
        self._spool_lock = threading.RLock()

    def start(self) -> Shipper:
        self._threads = [threading.Thread(target=self._run, name=f"secmon-shipper-{i}", daemon=True)
                         for i in range(self._senders)]
        for thread in self._threads:
            thread.start()
        return self

    def submit(self, batch: Batch) -> None:
        item = (self._submitted, batch)
        while True:
            self._raise_failure()
            if not any(thread.is_alive() for thread in self._threads):
                raise RuntimeError("the shipper threads are not running (a bug: the traceback is above)")
            try:
                self._queue.put(item, timeout=0.5)
                self._submitted += 1
                return
            except queue.Full:
                continue

    def close(self, drain: bool = True) -> None:
        """Ship what is queued; with `drain`, also try to empty the spool (StoreUnavailable if it cannot)."""
        for _ in self._threads:  # one end mark per sender
            while any(thread.is_alive() for thread in self._threads):
                try:
                    self._queue.put(None, timeout=0.5)
                    break
                except queue.Full:
                    continue
        for thread in self._threads:
            thread.join()
        self._raise_failure()
        if drain and self._spool is not None and len(self._spool):
            self._drain(force=True)
            if len(self._spool):
                raise StoreUnavailable(f"Elasticsearch is unreachable: {len(self._spool)} batches stay in the "
                                       f"spool {self._spool.folder}; the next run of the collector ships them")

    def abandon(self) -> None:
        """Stop the background threads without waiting (after the reader failed); no-op once closed."""
        for thread in self._threads:
            if thread.is_alive():
                with contextlib.suppress(queue.Full):  # the threads are daemonic: they die with the process
                    self._queue.put_nowait(None)

    @property
    def healthy(self) -> bool:
        return self._down_since is None

    @property
    def durable_batches(self) -> int:
        """Batches durable in a contiguous run from the first: what the checkpoints have passed."""
        return self._ledger.next

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self._retry_every)
                except queue.Empty:  # idle: a good time to empty the spool
                    if self._spool is not None and len(self._spool):
                        self._drain(force=False)
                    continue
                if item is None:
                    return
                if self._failed.is_set():  # another sender failed: its batch never becomes durable,
                    continue  # so no checkpoint passes it; the reader raises on its next submit
                self._deliver(*item)
        except (SecmonError, OSError) as exc:  # handed to the reader's thread, which reports it
            self._failure = exc
            self._failed.set()
            while self._queue.get() is not None:  # unblock the reader; it raises on its next submit
                pass

    def _count(self, stats: WriteStats) -> None:
        with self._lock:
            self.stats.add(stats)

    def _deliver(self, number: int, batch: Batch) -> None:
        full_since: float | None = None
        while True:
            if self._spool is not None and len(self._spool):
                self._drain(force=False)
            if self._down_since is None and (self._spool is None or not len(self._spool)):
                try:
                    self._count(self._writer.send(batch.docs))
                    self._ledger.durable(number, batch.marks)
                    return
                except StoreUnavailable as exc:
                    if self._spool is None:
                        raise
                    self._went_down(exc)
            assert self._spool is not None
            with self._spool_lock:
                appended = self._spool.append(batch.docs)
            if appended:
                with self._lock:
                    self.stats.spooled_batches += 1
                self._ledger.durable(number, batch.marks)
                return
            if full_since is None:
                full_since = time.monotonic()
                log.warning("the spool %s is full (%.0f MB of %.0f MB) and Elasticsearch is unreachable: "
                            "collection is paused until it is back", self._spool.folder, self._spool.size / 1e6,
                            self._spool.max_bytes / 1e6)
                with self._lock:  # counted after the warning: whoever sees the count can also see the warning
                    self.spool_full_waits += 1
            self._sleep(min(1.0, self._retry_every))

    def _went_down(self, exc: StoreUnavailable) -> None:
        with self._spool_lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("%s; spooling batches to %s and retrying every %g s", exc,
                            self._spool.folder if self._spool is not None else "-", self._retry_every)
            self._next_try = time.monotonic() + self._retry_every

    def _drain(self, *, force: bool) -> None:
        assert self._spool is not None
        with self._spool_lock:
            if not force and self._down_since is not None and time.monotonic() < self._next_try:
                return
            while (oldest := self._spool.oldest()) is not None:
                path, docs = oldest
                try:
                    self._count(self._writer.send(docs))
                except StoreUnavailable as exc:
                    self._went_down(exc)
                    return
                self._spool.remove(path)
                if self._down_since is not None:
                    log.warning("Elasticsearch is back after %.0f s; shipping the spool",
                                time.monotonic() - self._down_since)
                    self._down_since = None
