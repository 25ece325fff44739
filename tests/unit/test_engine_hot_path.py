"""The ingest hot path's shortcuts give what the plain code gives (collect/files.py `_plain`,
normalize/engine.py `Normalizer.normalize`): the same records and counts from hostile bytes, and the same
tuples as the constructors make."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import given, settings, strategies as st

from secmon.collect.files import FileReader, Record, split_lines
from secmon.model import Event, stable_id
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import load_pipelines
from secmon.store.writer import Doc, Origin
from tests.conftest import ROOT

# Pieces of hostile input: CR, blank and whitespace-only lines (the ASCII separators \x1c-\x1f and \x0b
# count as whitespace), long lines, non-ASCII bytes and invalid UTF-8.
PIECES = st.sampled_from([b"\n", b"\r\n", b" ", b"\t", b"\x0b", b"\x1c", b"\x1f", b"\x00", b"a", b"sshd[1]: x",
                          b"\xc3\xa9", b"\xff", b"\xe2\x80\xa8", b"x" * 40, b"\r"])


def general_records(data: bytes, cap: int, ident: str) -> tuple[list[Record], int]:
    """What `FileReader.records` made before `_plain`: `split_lines`, each line through `_emit`."""
    reader = FileReader("-", max_line=cap)
    cut = data.rfind(b"\n") + 1
    records = [record for line in split_lines(data[:cut], 0, cap) for record in reader._emit([line], ident, ident)]
    return records, reader.skipped


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=60).map(b"".join), st.sampled_from([8, 64, 1 << 20]))
def test_plain_lines_give_the_records_of_the_general_path(data: bytes, cap: int) -> None:
    data += b"\n"  # complete lines: what `records` hands to `_plain`
    reader = FileReader("-", max_line=cap)
    got = list(reader._plain(data, 0, "id", "id"))
    expected, skipped = general_records(data, cap, "id")
    assert got == expected
    assert [type(r) for r in got] == [Record] * len(got)
    assert reader.skipped == skipped



@settings(max_examples=200, deadline=None)
@given(st.lists(PIECES, max_size=60).map(b"".join), st.integers(1, 40), st.sampled_from([8, 64, 1 << 20]))
def test_whole_lines_handed_over_a_slice_at_a_time_read_as_the_general_path(data: bytes, slice_: int,
                                                                           cap: int) -> None:
    """`records` hands `_plain` about PLAIN_SLICE bytes of whole lines at a time (so that a chunk of tiny
    hostile lines is not a million Records at once): wherever the slices fall, the same records."""
    import pytest

    from secmon.collect import files

    data += b"\n"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "PLAIN_SLICE", slice_)
        reader = FileReader("-", max_line=cap)
        got = list(reader.records(io.BytesIO(data), "id"))
    expected, skipped = general_records(data, cap, "id")

    def seen(records: list[Record]) -> list[tuple[object, ...]]:
        # (a line over the cap keeps a head whose size depends on the road that read it: compared without it)
        return [(r.offset, r.end, r.record_id, r.length) if r.problem else r for r in records]
    assert seen(got) == seen(expected)
    assert reader.skipped == skipped

class Trickle(io.BytesIO):
    """A stream that gives at most `size` bytes a read: chunk edges anywhere, inside a line or a character."""

    def __init__(self, data: bytes, size: int):
        super().__init__(data)
        self.size = size

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self.size)


@settings(max_examples=150, deadline=None)
@given(st.lists(PIECES, max_size=80).map(b"".join), st.integers(1, 50))
def test_a_stream_reads_the_same_whatever_its_chunks(data: bytes, size: int) -> None:
    whole, trickled = FileReader("-", max_line=64), FileReader("-", max_line=64)

    def seen(records: list[Record]) -> list[tuple[object, ...]]:
        # (a line over the cap keeps a head whose size depends on where the chunks fell: compared without it)
        return [(r.offset, r.end, r.record_id, r.length) if r.problem else r for r in records]
    assert seen(list(trickled.records(Trickle(data, size), "id"))) == seen(list(whole.records(io.BytesIO(data), "id")))
    assert trickled.skipped == whole.skipped


def test_events_made_on_the_hot_path_equal_constructed_ones() -> None:
    pipeline = load_pipelines([ROOT / "pipelines"])["linux-auth"]
    normalizer = Normalizer(pipeline, agency="a", timezone="UTC", source="-",
                            now=datetime(2026, 1, 1, tzinfo=timezone.utc), year=2025)
    event = normalizer.normalize("Jun  9 06:06:20 combo sshd[7]: Accepted password for u from 10.0.0.1 port 2 ssh2\n",
                                 0, "f1:0")
    assert isinstance(event, Event)
    assert event == Event(id=event.id, doc=event.doc) and event.__class__ is Event and hash(event.id)
    assert event.id == stable_id("event", "a", "f1:0")  # the dedup key, whichever SHA-256 computes it
    assert event._replace(id="x") == Event("x", event.doc)


def test_origins_and_docs_made_without_their_constructor_are_the_same_tuples() -> None:
    assert tuple.__new__(Origin, ("event", "a", "f", 3, "p", False)) == Origin("event", "a", "f", 3, "p")
    assert Origin._fields == ("kind", "agency", "source", "offset", "pipeline", "last_resort")
    assert Doc._fields == ("head", "body", "origin")
    assert Record._fields == ("offset", "text", "record_id", "end", "source", "problem", "length", "lost")


def test_the_bench_input_reads_the_same(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_bytes(b"Jun  9 06:06:20 combo sshd[1]: ok\n\n \nJun  9 06:06:21 combo su: \xc3\xa9\nlast")
    reader = FileReader(str(log))
    with log.open("rb") as handle:
        records = list(reader.records(handle, "i"))
    assert [r.text for r in records] == ["Jun  9 06:06:20 combo sshd[1]: ok\n", "Jun  9 06:06:21 combo su: é\n",
                                         "last"]
    assert reader.skipped == 2


def test_a_whole_bulk_body_goes_out_as_it_is_and_other_bodies_as_before() -> None:
    from secmon.config import ElasticsearchSettings
    from secmon.store.client import connect

    serializers = connect(ElasticsearchSettings()).transport.serializers  # no request is made
    ndjson = "application/vnd.elasticsearch+x-ndjson; compatible-with=9"
    body = b'{"index":{"_index":"i","_id":"1"}}\n{"a":"\\r\\n"}\n'
    assert serializers.dumps(body, ndjson) is body
    assert serializers.dumps(body[:-1], ndjson) == body
    assert serializers.dumps([{"index": {}}, {"a": 1}], ndjson) == b'{"index":{}}\n{"a":1}\n'


def test_serialize_splices_as_the_general_road_writes_whatever_events_share_a_stamp() -> None:
    """`BulkWriter.serialize` keeps each stamp's action line and body start for the events after it: events
    of one second with another shape (an empty, a missing or an already stamped `event`, a
    stamp that is not UTC text) still get the document and index the general road (`_action`) gives."""
    import orjson

    from secmon.store.indices import Indices
    from secmon.store.writer import INGESTED_PLACEHOLDER, BulkWriter

    writer = BulkWriter(None, Indices("p"))  # type: ignore[arg-type]  # serialize makes no request
    stamp = "2005-06-08T23:06:20Z"
    docs: list[dict[str, Any]] = [
        {"@timestamp": stamp, "event": {"kind": "event"}, "message": "a"},
        {"@timestamp": stamp, "event": {}},
        {"@timestamp": stamp, "message": "no event"},
        {"@timestamp": stamp, "event": {"ingested": "x", "kind": "event"}},
        {"@timestamp": "2005-07-01T00:00:00Z", "event": {"kind": "event"}},
        {"@timestamp": "2005-07-01T07:00:00+07:00", "event": {"kind": "event"}},
        {"message": "first", "@timestamp": stamp, "event": {"kind": "event"}},
    ]
    items = [Event(f"{i:032x}", doc) for i, doc in enumerate(docs)]
    # an id that needs escaping, a stamp equal to the one before but another object, another agency
    items += [Event('id "quoted" \\ \n', docs[0]), Event("x", {**docs[0], "@timestamp": "".join(stamp)})]
    for item, got in zip(items, writer.serialize(items, "a")):
        head, want = writer._action(item, "a", "2026-11-30T00:00:00Z")
        assert orjson.loads(got.head) == head
        assert orjson.loads(got.body) == want
        assert orjson.loads(got.body)["event"]["ingested"] == INGESTED_PLACEHOLDER
    other = writer.document(items[0], "b", Origin("event", "b"))
    assert orjson.loads(other.head) == writer._action(items[0], "b", "")[0] and other.origin.agency == "b"


@cache
def _linux_auth() -> Normalizer:  # compiled once for all examples (the year clock only moves forward here)
    pipeline = load_pipelines([ROOT / "pipelines"])["linux-auth"]
    return Normalizer(pipeline, agency="a", timezone="UTC", source="-",
                      now=datetime(2026, 1, 1, tzinfo=timezone.utc), year=2025)


HOSTILE_TEXT = st.text(st.sampled_from(['"', "\\", "\r", "\n", "\x00", "\x1b", "\x7f", "\u2028", "é", "\U0001f600",
                                        "\ufffd", "a", " ", "/", "<", "'", "}", "{", ":"]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(HOSTILE_TEXT, HOSTILE_TEXT, HOSTILE_TEXT, st.sampled_from(["sshd(pam_unix)", "ftpd", "su", "x\\y", "q\"t"]))
def test_bulk_bytes_of_hostile_lines_are_the_spliced_serialization_of_the_document(
        message: str, user: str, host: str, program: str) -> None:
    """`BulkWriter.document`'s body, made by concatenation, is byte for byte what orjson writes for the event's
    document with the ingest placeholder put first into its `event` (what `replace` gave before), it is the
    general road's (`_action`) document as JSON, and the event is left as it was."""
    import orjson

    from secmon.store.indices import Indices
    from secmon.store.writer import _PLACEHOLDER_BYTES, BulkWriter

    normalizer = _linux_auth()
    writer = BulkWriter(None, Indices("p"))  # type: ignore[arg-type]  # no request is made
    host = host.replace(" ", "").replace("\n", "") or "h"
    lines = [f"Jun  9 06:06:20 {host} {program}[7]: {message}",
             f"Jun  9 06:06:20 {host} {program}[7]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh "
             f"ruser= rhost={user} user={user}",
             f"Jun  9 06:06:21 {host} sshd[8]: Failed password for {user} from 10.0.0.{len(user)} port 22 ssh2"]
    for line in lines:
        event = normalizer.normalize(line, 0, "f:0")
        if not isinstance(event, Event):
            continue
        before = orjson.dumps(event.doc)
        doc = writer.document(event, "a", Origin("event", "a"))
        start = b'{"@timestamp":"' + str(event.doc["@timestamp"]).encode() + b'","event":{'
        assert doc.body == before.replace(start, start + _PLACEHOLDER_BYTES + b",", 1)
        assert orjson.loads(doc.body) == writer._action(event, "a", "")[1]
        assert orjson.dumps(event.doc) == before
