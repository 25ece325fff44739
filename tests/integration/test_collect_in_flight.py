"""Several bulk requests in flight, on the real node: the order the node stores batches in does not
matter (deterministic ids), and a checkpoint never passes a batch that is not stored, even when a
later batch was stored first. Real Linux.log lines, a real BulkWriter, a real `secmon collect`."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from secmon.collect.files import read_records
from secmon.errors import StoreUnavailable
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import load_pipelines
from secmon.store.indices import Indices
from secmon.store.ship import Batch, Shipper
from secmon.store.writer import BulkWriter, Doc, WriteStats
from tests.conftest import ROOT, free_port, write_config
from tests.integration.test_collect_crash import AGENCY, assert_exactly, checkpoint, expected_ids, make_log, secmon

pytestmark = [pytest.mark.integration, pytest.mark.dataset]

WAIT = 60.0  # seconds: a deadline for the held batch's wait, never reached when things work


def batches_of(log: Path, prefix: str, es, size: int) -> list[list[Doc]]:  # type: ignore[no-untyped-def]
    pipeline = load_pipelines([ROOT / "pipelines"])["linux-auth"]
    normalizer = Normalizer(pipeline, agency=AGENCY, timezone="Asia/Ho_Chi_Minh", source=str(log),
                            now=datetime(2026, 1, 1, tzinfo=timezone.utc), year=2005)
    items = [normalizer.normalize(r.text, r.offset, r.record_id) for r in read_records(log)]
    writer = BulkWriter(es, Indices(prefix))
    return [writer.serialize(items[i:i + size], AGENCY) for i in range(0, len(items), size)]


class FailsOneBatch(BulkWriter):
    """A real BulkWriter, except that the batch starting with `held` waits until `later` (a batch
    submitted after it) is stored in Elasticsearch, then fails as if the node had gone away."""

    def __init__(self, es, indices: Indices, held: Doc, later: Doc):  # type: ignore[no-untyped-def]
        super().__init__(es, indices)
        self._held, self._later = held, later
        self.later_stored = threading.Event()

    def send(self, docs: list[Doc]) -> WriteStats:
        if docs[0] == self._held:
            assert self.later_stored.wait(WAIT), "the later batch was never stored: were they sent in parallel?"
            raise StoreUnavailable("cannot write events: the test failed this batch")
        stats = super().send(docs)
        if docs[0] == self._later:
            self.later_stored.set()
        return stats


def test_a_failed_batch_holds_the_checkpoint_though_a_later_one_was_stored(tmp_path, es, prefix, datasets  # type: ignore[no-untyped-def]
                                                                           ) -> None:
    log = tmp_path / "auth.log"
    make_log(datasets, log, 600)
    batches = batches_of(log, prefix, es, 100)  # six batches
    writer = FailsOneBatch(es, Indices(prefix), held=batches[1][0], later=batches[2][0])
    durable: list[int] = []
    shipper = Shipper(writer, None, durable.append, in_flight=3).start()
    with pytest.raises(StoreUnavailable, match="the test failed this batch"):
        for number, docs in enumerate(batches):
            shipper.submit(Batch(docs, number))
        shipper.close()
    shipper.abandon()
    assert writer.later_stored.is_set()  # batch 2 is in Elasticsearch ...
    assert durable == [0] and shipper.durable_batches == 1  # ... yet the checkpoint stays before batch 1

    # A restarted collector resumes at the checkpoint: batches 1.. again, several in flight, in
    # whatever order; batch 2 is stored a second time under the same ids. Nothing lost, nothing doubled.
    again = Shipper(BulkWriter(es, Indices(prefix)), None, durable.append, in_flight=4).start()
    for number in range(durable[-1] + 1, len(batches)):
        again.submit(Batch(batches[number], number))
    again.close()
    assert again.stats.events == 500
    assert_exactly(es, prefix, expected_ids(log))


def test_collect_with_many_in_flight_stores_each_record_once(tmp_path, es, es_url, prefix, datasets  # type: ignore[no-untyped-def]
                                                             ) -> None:
    log = tmp_path / "auth.log"
    make_log(datasets, log, 6000)
    config = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    state = tmp_path / "state"
    args = ("collect", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005", "--state", str(state),
            "--batch-size", "250", "--in-flight", "6")
    out, err = secmon(config, *args).communicate(timeout=300)
    assert b"6000 events shipped" in out, (out, err)
    assert checkpoint(state) == log.stat().st_size
    ids = expected_ids(log)
    assert_exactly(es, prefix, ids)
    out, err = secmon(config, *args).communicate(timeout=300)  # again: nothing left to ship, nothing doubled
    assert b"0 events shipped" in out, (out, err)
    assert_exactly(es, prefix, ids)
