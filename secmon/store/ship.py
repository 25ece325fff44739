"""Ship batches in the background: to Elasticsearch, else to the spool; then checkpoint.

The reader (file tail, syslog listener) hands over serialized batches and
carries on reading while one batch is in flight; `submit` blocks when the
small queue is full, which is what stops reading when Elasticsearch is slow
and the spool is full (backpressure, bounded memory). After a batch is
durable - acknowledged by Elasticsearch, or fsynced into the spool - its
`marks` are given to `on_durable`, which advances the checkpoints: a
checkpoint never passes a record that could still be lost.
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


@dataclass(frozen=True)
class Batch:
    docs: list[Doc]
    marks: Any  # opaque to the shipper: what `on_durable` needs to checkpoint


class Shipper:
    def __init__(self, writer: BulkWriter, spool: Spool | None, on_durable: Callable[[Any], None], *,
                 in_flight: int = 2, retry_every: float = 5.0, sleep: Callable[[float], None] = time.sleep):
        self._writer = writer
        self._spool = spool
        self._on_durable = on_durable
        self._queue: queue.Queue[Batch | None] = queue.Queue(in_flight)
        self._retry_every = retry_every
        self._sleep = sleep
        self._down_since: float | None = None
        self._next_try = 0.0
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.stats = WriteStats()
        self.spool_full_waits = 0
        self._lock = threading.Lock()

    def start(self) -> Shipper:
        self._thread = threading.Thread(target=self._run, name="secmon-shipper", daemon=True)
        self._thread.start()
        return self

    def submit(self, batch: Batch) -> None:
        while True:
            self._raise_failure()
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("the shipper thread is not running (a bug: its traceback is above)")
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self, drain: bool = True) -> None:
        """Ship what is queued; with `drain`, also try to empty the spool (StoreUnavailable if it cannot)."""
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.put(None, timeout=0.5)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        self._raise_failure()
        if drain and self._spool is not None and len(self._spool):
            self._drain(force=True)
            if len(self._spool):
                raise StoreUnavailable(f"Elasticsearch is unreachable: {len(self._spool)} batches stay in the "
                                       f"spool {self._spool.folder}; the next run of the collector ships them")

    def abandon(self) -> None:
        """Stop the background thread without waiting (after the reader failed); no-op once closed."""
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):  # the thread is daemonic: it dies with the process
                self._queue.put_nowait(None)

    @property
    def healthy(self) -> bool:
        return self._down_since is None

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _run(self) -> None:
        try:
            while True:
                try:
                    batch = self._queue.get(timeout=self._retry_every)
                except queue.Empty:  # idle: a good time to empty the spool
                    if self._spool is not None and len(self._spool):
                        self._drain(force=False)
                    continue
                if batch is None:
                    return
                self._deliver(batch)
        except (SecmonError, OSError) as exc:  # handed to the reader's thread, which reports it
            self._failure = exc
            while self._queue.get() is not None:  # unblock the reader; it raises on its next submit
                pass

    def _count(self, stats: WriteStats) -> None:
        with self._lock:
            self.stats.add(stats)

    def _deliver(self, batch: Batch) -> None:
        full_since: float | None = None
        while True:
            if self._spool is not None and len(self._spool):
                self._drain(force=False)
            if self._down_since is None and (self._spool is None or not len(self._spool)):
                try:
                    self._count(self._writer.send(batch.docs))
                    self._on_durable(batch.marks)
                    return
                except StoreUnavailable as exc:
                    if self._spool is None:
                        raise
                    self._went_down(exc)
            assert self._spool is not None
            if self._spool.append(batch.docs):
                with self._lock:
                    self.stats.spooled_batches += 1
                self._on_durable(batch.marks)
                return
            if full_since is None:
                full_since = time.monotonic()
                self.spool_full_waits += 1
                log.warning("the spool %s is full (%.0f MB of %.0f MB) and Elasticsearch is unreachable: "
                            "collection is paused until it is back", self._spool.folder, self._spool.size / 1e6,
                            self._spool.max_bytes / 1e6)
            self._sleep(min(1.0, self._retry_every))

    def _went_down(self, exc: StoreUnavailable) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("%s; spooling batches to %s and retrying every %g s", exc,
                        self._spool.folder if self._spool is not None else "-", self._retry_every)
        self._next_try = time.monotonic() + self._retry_every

    def _drain(self, *, force: bool) -> None:
        assert self._spool is not None
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
