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
from secmon.store.ship import Batch, Shipper, _Ledger
from secmon.store.spool import Spool
from secmon.store.writer import Doc, Origin, WriteStats


class ScriptedWriter:
    """Stands in for BulkWriter.send: down until `up` is set; records what it shipped."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.shipped: list[Doc] = []

    def send(self, docs: list[Doc]) -> WriteStats:
        if not self.up.is_set():
            raise StoreUnavailable("cannot write events: Elasticsearch at http://x is unreachable")
        self.shipped += docs
        return WriteStats(events=len(docs))


def batch(i: int) -> Batch:
    return Batch([Doc(b'{"index":{"_id":"%d"}}' % i, b'{"n":%d}' % i, Origin("event", "a", "f.log", i))], marks=i)


SIZE = 141  # bytes of one batch in the spool (a version line, then three lines a document)


def test_spool_is_bounded_durable_and_reopens(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=2 * SIZE).open()
    assert spool.append(batch(1).docs) and spool.append(batch(2).docs)
    assert spool.size <= 2 * SIZE
    assert not spool.append(batch(3).docs * 3)  # would pass the bound: refused, nothing written
    (tmp_path / "spool" / "000000000009.tmp").write_bytes(b"torn")
    again = Spool(tmp_path / "spool", max_bytes=2 * SIZE).open()
    assert len(again) == 2 and not list((tmp_path / "spool").glob("*.tmp"))
    oldest = again.oldest()
    assert oldest is not None and oldest[1] == batch(1).docs  # the origin comes back too


def test_spool_segments_of_an_older_secmon_are_read(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "000000000001.ndjson").write_bytes(
        b'{"index":{"_index":"s-events-a-2005.06","_id":"1"}}\n{"n":1}\n'
        b'{"index":{"_index":"s-deadletter-a","_id":"2"}}\n{"n":2}\n')
    oldest = Spool(tmp_path / "spool", max_bytes=1 << 20).open().oldest()
    assert oldest is not None and [d.origin.kind for d in oldest[1]] == ["event", "dead_letter"]


def test_outage_spools_then_backpressure_then_everything_ships(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    writer = ScriptedWriter()
    spool = Spool(tmp_path / "spool", max_bytes=3 * SIZE + SIZE // 2).open()  # room for three batches
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
    assert writer.shipped == [doc for i in range(8) for doc in batch(i).docs]
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
    assert writer.shipped == batch(1).docs


def test_the_ledger_acknowledges_in_submission_order_whatever_the_completion_order() -> None:
    acknowledged: list[str] = []
    ledger = _Ledger(acknowledged.append)
    for number in (2, 0, 3, 5, 1):
        ledger.durable(number, f"m{number}")
    assert acknowledged == ["m0", "m1", "m2", "m3"] and ledger.next == 4  # 5 waits for 4
    ledger.durable(4, "m4")
    assert acknowledged == [f"m{n}" for n in range(6)]


def test_several_in_flight_acknowledge_in_order_and_spool_once_each(tmp_path: Path) -> None:
    """Four senders, the node down then back: every batch is acknowledged once, in submission order,
    and shipped once (the spool is drained by one sender at a time)."""
    writer = ScriptedWriter()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20).open()
    durable: list[int] = []
    shipper = Shipper(writer, spool, durable.append, in_flight=4, retry_every=0.05).start()  # type: ignore[arg-type]
    for i in range(10):
        shipper.submit(batch(i))
    writer.up.set()
    for i in range(10, 20):
        shipper.submit(batch(i))
    shipper.close()
    assert durable == list(range(20)) and len(spool) == 0
    assert sorted(writer.shipped, key=lambda doc: doc.origin.offset or 0) == [d for i in range(20) for d in batch(i).docs]
    assert shipper.stats.events == 20
