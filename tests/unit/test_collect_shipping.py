"""The spool and the shipper's rules, with a scripted writer (a pure unit test: no Elasticsearch).

What must hold: a batch is acknowledged (its checkpoint may advance) only once it is in
Elasticsearch or durably in the spool; the spool never passes its bound; when it is full,
the reader is held back (backpressure) with a clear warning; everything spooled is shipped
once Elasticsearch is back."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from secmon.errors import StoreUnavailable
from secmon.store.ship import Batch, Shipper
from secmon.store.spool import Spool
from secmon.store.writer import WriteStats


class ScriptedWriter:
    """Stands in for BulkWriter.send: down until `up` is set; records what it shipped."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.shipped: list[bytes] = []

    def send(self, lines: list[bytes]) -> WriteStats:
        if not self.up.is_set():
            raise StoreUnavailable("cannot write events: Elasticsearch at http://x is unreachable")
        self.shipped += lines
        return WriteStats(events=len(lines) // 2)


def batch(i: int) -> Batch:
    return Batch([b'{"index":{"_id":"%d"}}' % i, b'{"n":%d}' % i], marks=i)


def test_spool_is_bounded_durable_and_reopens(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=100).open()
    assert spool.append(batch(1).lines) and spool.append(batch(2).lines)
    assert not spool.append(batch(3).lines * 3)  # would pass the bound: refused, nothing written
    (tmp_path / "spool" / "000000000009.tmp").write_bytes(b"torn")
    again = Spool(tmp_path / "spool", max_bytes=100).open()
    assert len(again) == 2 and not list((tmp_path / "spool").glob("*.tmp"))
    oldest = again.oldest()
    assert oldest is not None and oldest[1] == batch(1).lines


def test_outage_spools_then_backpressure_then_everything_ships(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    writer = ScriptedWriter()
    spool = Spool(tmp_path / "spool", max_bytes=3 * 40).open()  # room for three or four batches
    durable: list[int] = []
    shipper = Shipper(writer, spool, durable.append, in_flight=1, retry_every=0.05).start()  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING)
    submitted = threading.Event()

    def reader() -> None:
        for i in range(8):
            shipper.submit(batch(i))
        submitted.set()

    thread = threading.Thread(target=reader)
    thread.start()
    while shipper.spool_full_waits == 0:
        thread.join(0.01)
    # Full: the reader is held (it cannot have handed over all eight batches), nothing acknowledged
    # beyond what is on disk.
    assert not submitted.is_set()
    assert durable == list(range(len(spool))) and spool.size <= spool.max_bytes
    assert any("is full" in r.getMessage() and "paused" in r.getMessage() for r in caplog.records)
    writer.up.set()
    thread.join()
    shipper.close()
    assert durable == list(range(8)) and len(spool) == 0
    assert writer.shipped == [line for i in range(8) for line in batch(i).lines]
    assert shipper.stats.events == 8 and shipper.stats.spooled_batches >= 3


def test_without_a_spool_an_outage_fails_the_run(tmp_path: Path) -> None:
    shipper = Shipper(ScriptedWriter(), None, lambda marks: None).start()  # type: ignore[arg-type]
    shipper.submit(batch(1))
    with pytest.raises(StoreUnavailable, match="unreachable"):
        shipper.close()


def test_spool_left_over_is_reported_and_shipped_by_the_next_run(tmp_path: Path) -> None:
    writer = ScriptedWriter()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20).open()
    shipper = Shipper(writer, spool, lambda marks: None).start()  # type: ignore[arg-type]
    shipper.submit(batch(1))
    with pytest.raises(StoreUnavailable, match="1 batches stay in the spool"):
        shipper.close()
    writer.up.set()
    later = Shipper(writer, Spool(tmp_path / "spool", max_bytes=1 << 20).open(), lambda marks: None).start()  # type: ignore[arg-type]
    later.close()
    assert writer.shipped == batch(1).lines
