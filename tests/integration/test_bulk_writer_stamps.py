"""The bulk writer stamps event.ingested into the bytes it sends, on the real node: the caller's
Events are left as they were (frozen models, shared with other threads), and the stamp lands in the
top-level `event` of every shape of document, never in a look-alike nested inside one."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest

from secmon.model import Event
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import load_pipelines
from secmon.store.indices import Indices
from secmon.store.writer import BulkWriter
from secmon.types import parse_iso
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration]

LINE = "Jun 14 15:16:01 combo sshd[19939]: Failed password for root from 218.188.2.4 port 4222 ssh2"


def test_a_ship_leaves_the_events_unchanged_and_stamps_the_top_level_event(es, prefix) -> None:  # type: ignore[no-untyped-def]
    pipeline = load_pipelines([ROOT / "pipelines"])["linux-auth"]
    normalizer = Normalizer(pipeline, agency="so-tttt", timezone="Asia/Ho_Chi_Minh", source="auth.log",
                            now=datetime(2026, 1, 1, tzinfo=timezone.utc), year=2005)
    real = normalizer.normalize(LINE, 0, "r0")
    assert isinstance(real, Event)
    stamp = "2005-06-14T08:16:01Z"
    items = [
        real,
        Event(id="a" * 32, doc={"@timestamp": stamp, "event": {}}),  # an empty event: no comma to add
        Event(id="b" * 32, doc={"message": "event first is not our shape", "@timestamp": stamp,
                                "event": {"kind": "event"}}),
        # a hostile look-alike of the top-level prefix, nested in a field: its copy is never stamped
        Event(id="c" * 32, doc={"@timestamp": stamp, "event": {"kind": "event"},
                                "x": {"@timestamp": stamp, "event": {"kind": "event"}}}),
    ]
    before = [copy.deepcopy(item.doc) for item in items]
    orders = [json.dumps(item.doc) for item in items]  # key order too: the same dicts, untouched
    sent = datetime.now(timezone.utc)
    stats = BulkWriter(es, Indices(prefix)).write(items, "so-tttt")
    assert stats.events + stats.dead_letters + stats.rejected == len(items), stats
    assert [item.doc for item in items] == before and [json.dumps(item.doc) for item in items] == orders
    es.indices.refresh(index=f"{prefix}-*")
    stored = {hit["_id"]: hit["_source"] for hit in es.search(index=f"{prefix}-events-*", size=10)["hits"]["hits"]}
    for item in items:
        source = stored[item.id]
        assert parse_iso(source["event"]["ingested"]) >= sent.replace(microsecond=0), source
        assert {k: v for k, v in source["event"].items() if k != "ingested"} == item.doc["event"]
    assert "ingested" not in stored["c" * 32]["x"]["event"]
