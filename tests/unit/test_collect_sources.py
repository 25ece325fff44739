"""Sources without Elasticsearch: file reading, multi-line joining, the tail through rotation,
checkpoints, and syslog framing. Real files in a temporary folder; no fakes needed."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from secmon.collect.files import FileReader, read_records
from secmon.collect.multiline import Joiner, Line
from secmon.collect.registry import Registry
from secmon.collect.syslog import Address, frames
from secmon.collect.tail import Follower
from secmon.errors import InputError


def lines(n: int, start: int = 0) -> list[str]:
    return [f"Jun 14 15:16:{i % 60:02d} combo sshd[{10000 + i}]: session opened for user u{i}\n"
            for i in range(start, start + n)]


def test_records_have_offsets_ends_and_stable_ids(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("one\n\ntwo\nthree-without-newline")
    records = list(read_records(log))
    assert [r.text for r in records] == ["one\n", "two\n", "three-without-newline"]
    assert [(r.offset, r.end) for r in records] == [(0, 4), (5, 9), (9, 30)]
    assert list(read_records(log)) == records
    assert list(read_records(log, start=5)) == records[1:]


def test_blank_lines_are_counted_as_skipped(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("one\n\n  \ntwo\n")
    reader = FileReader(str(log))
    with log.open("rb") as handle:
        assert len(list(reader.records(handle, "x"))) == 2
    assert reader.skipped == 2


def test_multiline_joins_continuations_into_the_record_before() -> None:
    joiner = Joiner(re.compile(r"^\d{4}-"))
    out: list[Line] = []
    for i, text in enumerate(["2024-01-01 error\n", "  at a.b(C.java:1)\n", "  at c.d(E.java:2)\n",
                              "2024-01-01 next\n"]):
        out += joiner.feed(Line(i * 100, i * 100 + len(text), text))
    out += joiner.flush()
    assert [o.text for o in out] == ["2024-01-01 error\n  at a.b(C.java:1)\n  at c.d(E.java:2)\n",
                                     "2024-01-01 next\n"]
    assert (out[0].offset, out[0].end) == (0, 219)


def test_registry_survives_reload_and_only_moves_forward(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.json").load()
    registry.advance({"abc": (100, 1024, "/var/log/a", "fabc")})
    registry.advance({"abc": (50, 1024, "/var/log/a", "fabc")})
    registry.save()
    again = Registry(tmp_path / "r.json").load()
    assert again.get("abc") is not None and again.get("abc").offset == 100  # type: ignore[union-attr]
    assert not list(tmp_path.glob("*.tmp"))


def test_unreadable_registry_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text("{not json")
    with pytest.raises(InputError, match="checkpoint registry is unreadable"):
        Registry(tmp_path / "r.json").load()


def _drain(follower: Follower) -> dict[str, str]:
    """record id -> text: a record read twice under the same id is stored once (no duplicate)."""
    got: dict[str, str] = {}
    for _ in range(6):
        got.update((r.record_id, r.text) for r in follower.poll())
    return got


def test_tail_reads_only_complete_lines_and_resumes_from_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    first = lines(30)
    log.write_text("".join(first) + "Jun 14 15:16:59 partial")
    registry = Registry(tmp_path / "r.json")
    follower = Follower([str(tmp_path / "app.log*")], registry)
    records = follower.poll()
    assert [r.text for r in records] == first
    registry.advance({records[9].source: (records[9].end, *follower.marks_path(records[9].source))})
    with log.open("a") as handle:
        handle.write(" line\n")
    assert [r.text for r in follower.poll()] == ["Jun 14 15:16:59 partial line\n"]
    follower.close()
    restarted = Follower([str(tmp_path / "app.log*")], registry)
    assert [r.text for r in restarted.poll()] == first[10:] + ["Jun 14 15:16:59 partial line\n"]


def test_tail_follows_rotation_by_rename_and_by_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(lines(40)))
    registry = Registry(tmp_path / "r.json")
    follower = Follower([str(tmp_path / "app.log*")], registry)
    got = _drain(follower)
    with log.open("a") as handle:
        handle.write("".join(lines(5, 40)))
    os.rename(log, tmp_path / "app.log.1")  # rename rotation: the last 5 lines are read from the old file
    log.write_text("".join(lines(20, 45)))
    got.update(_drain(follower))
    with log.open("a") as handle:
        handle.write("".join(lines(5, 65)))
    shutil.copyfile(log, tmp_path / "app.log.2")  # copytruncate: the copy holds the 5 unread lines
    with log.open("r+") as handle:
        handle.truncate(0)
    got.update(_drain(follower))
    log.write_text("".join(lines(10, 70)))
    got.update(_drain(follower))
    assert sorted(got.values()) == sorted(lines(80))


def test_from_end_skips_what_was_there_before(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(lines(40)))
    follower = Follower([str(log)], Registry(tmp_path / "r.json"), from_end=True)
    assert follower.poll() == []
    with log.open("a") as handle:
        handle.write("".join(lines(2, 40)))
    assert [r.text for r in follower.poll()] == lines(2, 40)


@pytest.mark.parametrize("stream,messages,rest", [
    (b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed\n<13>second\n", [b"<34>Oct 11 22:14:15 mymachine su: "
                                                                          b"'su root' failed", b"<13>second"], b""),
    (b"11 <13>1 - - -11 <13>hello\r\nxx", [b"<13>1 - - -", b"<13>hello"], b"xx"),
    (b"20 <13>only part", [], b"20 <13>only part"),
    (b"<13>no newline yet", [], b"<13>no newline yet"),
    (b"<13>a\0<13>b\0", [b"<13>a", b"<13>b"], b""),
])
def test_syslog_framing_octet_counted_and_newline(stream: bytes, messages: list[bytes], rest: bytes) -> None:
    assert frames(stream) == (messages, rest)


def test_syslog_address_is_checked() -> None:
    assert Address.parse("127.0.0.1:5514", "--syslog-udp") == Address("127.0.0.1", 5514)
    with pytest.raises(InputError, match="is not HOST:PORT"):
        Address.parse("localhost", "--syslog-udp")


def test_evtx_records_are_compact_json_with_record_number_ids(datasets: Path) -> None:
    from secmon.collect.evtxfiles import read_evtx

    path = sorted((datasets / "evtx_attack_samples").rglob("*.evtx"))[0]
    records = list(read_evtx(path))
    assert records and len({r.record_id for r in records}) == len(records)
    first = json.loads(records[0].text)
    assert "System" in first["Event"] and "\n" not in records[0].text


def test_a_damaged_evtx_chunk_becomes_a_record_saying_so(tmp_path: Path, datasets: Path) -> None:
    from secmon.collect.evtxfiles import read_evtx

    source = max((datasets / "evtx_attack_samples").rglob("*.evtx"), key=lambda p: p.stat().st_size)
    damaged = bytearray(source.read_bytes())
    damaged[70_000:80_000] = b"\xff" * 10_000  # inside the second chunk (chunks are 64 KiB after a 4 KiB header)
    (tmp_path / "damaged.evtx").write_bytes(bytes(damaged))
    records = list(read_evtx(tmp_path / "damaged.evtx"))
    assert any(r.problem.startswith(("unreadable EVTX data", "EVTX record")) for r in records)
    assert sum(1 for r in records if r.text.startswith("{")) > 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@given(JSON_VALUES)
def test_an_evtx_record_text_is_what_json_writes(value: object) -> None:
    """compact() (orjson when it writes the same) gives json.dumps's compact text: event ids come from it."""
    from secmon.collect.evtxfiles import compact

    record = json.dumps({"Event": value}, indent=2)
    assert compact(record)[1] == json.dumps(json.loads(record), ensure_ascii=False, separators=(",", ":"))
