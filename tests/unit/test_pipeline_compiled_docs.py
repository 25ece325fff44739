"""A compiled pipeline (normalize/codegen.py, the address cache, the dispatch) gives the documents the
interpreter gives (`Normalizer(compiled=False)`: `_apply_fields` and `put_path`), byte for byte as
serialized, or the same reason: on every pipeline's examples, on the bench's real syslog lines, and on
lines made from the examples with hostile pieces put in (CR/LF, escapes, odd addresses, long values)."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from secmon.normalize.convert import YearlessClock, parse_timestamp
from secmon.normalize.engine import Normalizer
from secmon.normalize.examples import EXAMPLE_NOW, EXAMPLE_TIMEZONE, EXAMPLE_YEAR
from secmon.normalize.pipeline import Pipeline, load_pipelines
from tests.conftest import DATASETS, ROOT

PIPELINES = load_pipelines([ROOT / "pipelines"])
WITH_EXAMPLES = sorted(pid for pid, pipeline in PIPELINES.items() if pipeline.examples)
HOSTILE = ["", " ", "\r", "\n", "\r\n", "\x1b[31m", "\\", '"', "'", "=", ";", ":", "[", "]", "(", ")", "%",
           "1.2.3.4", "256.1.1.1", "::1", "fe80::1%eth0", "host.example.org", "HOST.Example.ORG", "1.2.3",
           "bad host", "99999999999999999999", "-1", "١٢٣", "é", "x" * 300, " port 22", " from 10.0.0.1",
           "user=root", "rhost=", "Failed password for ", "authentication failure; ", "[preauth]"]


def normalizers(pipeline: Pipeline) -> tuple[Normalizer, Normalizer]:
    def make(compiled: bool) -> Normalizer:
        return Normalizer(pipeline, agency="test", timezone=EXAMPLE_TIMEZONE, source="t", now=EXAMPLE_NOW,
                          year=EXAMPLE_YEAR, compiled=compiled)
    return make(True), make(False)


def outcome(normalizer: Normalizer, line: str) -> Any:
    try:
        doc = normalizer._to_doc(line)
    except ValueError as exc:
        return ("dead letter", str(exc))
    return doc if isinstance(doc, str) else orjson.dumps(doc)  # key order counts: the bytes stored


def assert_alike(pipeline: Pipeline, lines: list[str]) -> None:
    compiled, interpreted = normalizers(pipeline)
    for line in lines:
        assert outcome(compiled, line) == outcome(interpreted, line), (pipeline.id, line)


@pytest.mark.parametrize("pipeline_id", WITH_EXAMPLES)
def test_examples_give_the_interpreters_documents(pipeline_id: str) -> None:
    pipeline = PIPELINES[pipeline_id]
    lines = [line for example in pipeline.examples for line in (*example.before, example.line)]
    assert_alike(pipeline, lines + lines)  # twice: the second time from the caches (times, addresses)


def test_real_syslog_lines_give_the_interpreters_documents() -> None:
    log = DATASETS / "loghub_linux_full" / "Linux" / "Linux.log"
    if not log.is_file():
        pytest.skip(f"dataset not found: {log}")
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    assert_alike(PIPELINES["linux-auth"], lines[::7] + lines[:500])


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    """An example line of some pipeline with hostile pieces put in at random places."""
    pipeline_id = draw(st.sampled_from(WITH_EXAMPLES))
    line = draw(st.sampled_from([example.line for example in PIPELINES[pipeline_id].examples]))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(line)))
        cut = draw(st.integers(0, min(12, len(line) - at)))
        line = line[:at] + draw(st.sampled_from(HOSTILE) | st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)) + line[at + cut:]
    return pipeline_id, line


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_hostile_lines_give_the_interpreters_documents(case: tuple[str, str]) -> None:
    pipeline_id, line = case
    pipeline = PIPELINES[pipeline_id]
    before = [earlier for example in pipeline.examples for earlier in example.before][:4]  # a Zeek header
    assert_alike(pipeline, [*before, line, line])


# linux-auth's line regex as first written; the pipeline's is spelled for speed (see its comment).
PLAIN_LINUX_AUTH = re.compile(
    r"^(?:<\d{1,3}>)?(?P<ts>[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?"
    r"(?:Z|[+-]\d\d:?\d\d)?) (?P<host>[^\s\[\]:]+) (?:(?P<program>[^\s:\[(]+)(?:\((?P<module>[^)]*)\))?"
    r"(?:\[(?P<pid>\d+)\])?: ?)?(?P<message>.*)$")
SYSLOG_PIECES = ["<13>", "<1234>", "Jun  9 ", "Jun 14 ", "jun 14 ", "06:06:20 ", "2024-03-01T10:00:00.123456+07:00 ",
                 "2024-03-01T10:00:00Z ", "2024-03-01T10:00:00.5 ", "combo ", "combo", "sshd", "sshd(pam_unix)",
                 "su(pam_unix", "[19939]", "[19939", "[]", "[x]", "()", ":", ": ", "::", " ", "  ", "\n", "\r",
                 "\t", "message", "[preauth]", "a:b", "(", ")", "[", "]"]


def groups(regex: re.Pattern[str], line: str) -> dict[str, str | None] | None:
    found = regex.match(line)
    return None if found is None else found.groupdict()


def test_linux_auth_regex_captures_what_its_plain_spelling_does_on_real_lines() -> None:
    log = DATASETS / "loghub_linux_full" / "Linux" / "Linux.log"
    if not log.is_file():
        pytest.skip(f"dataset not found: {log}")
    regex = PIPELINES["linux-auth"].parse.regex
    assert regex is not None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        assert groups(regex, line) == groups(PLAIN_LINUX_AUTH, line), line


PIECES = st.lists(st.sampled_from(SYSLOG_PIECES) | st.text(max_size=4), max_size=10).map("".join)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(PIECES, st.tuples(st.sampled_from(["", "<13>", "<1234>", "<x>"]),  # most of a syslog line, then pieces
                                   st.sampled_from(["Jun  9 06:06:20 combo ", "Jun 14 06:06:20 combo ",
                                                    "2024-03-01T10:00:00.123+07:00 web01 ", "Jun 14 06:06:20 a:b "]),
                                   PIECES).map("".join)))
def test_linux_auth_regex_captures_what_its_plain_spelling_does(line: str) -> None:
    regex = PIPELINES["linux-auth"].parse.regex
    assert regex is not None
    assert groups(regex, line) == groups(PLAIN_LINUX_AUTH, line)


MONTHS = ["Jan", "Feb", "Mar", "Oct", "Nov", "Dec"]


@st.composite
def syslog_times(draw: st.DrawFn) -> list[str]:
    """Times as a log gives them: mostly the next seconds of one minute, sometimes another minute, month
    (back: a new year), day (Feb 29, Feb 30), odd spellings and seconds (60, 7, a space)."""
    month, day, hour, minute = draw(st.sampled_from(MONTHS)), draw(st.integers(1, 31)), draw(st.integers(0, 23)), 0
    times = []
    for _ in range(draw(st.integers(1, 30))):
        if draw(st.integers(0, 5)) == 0:
            month, day = draw(st.sampled_from(MONTHS)), draw(st.integers(1, 31))
            hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
        second = draw(st.sampled_from(["00", "07", "59", "60", "7", " 7", "5x"]) | st.integers(0, 59).map("{:02d}".format))
        times.append(f"{month} {day:2d} {hour:02d}:{minute:02d}:{second}")
    return times


@settings(max_examples=300, deadline=None)
@given(syslog_times(), st.sampled_from(["Asia/Ho_Chi_Minh", "America/New_York", "Australia/Lord_Howe",
                                        "Asia/Kathmandu", "UTC"]), st.sampled_from([None, 2004, 2005]))
def test_the_minute_read_last_gives_what_parsing_gives(times: list[str], zone: str, year: int | None) -> None:
    """`_timestamp`'s caches (the last time, the last minute) answer what parsing each time with its own
    clock answers: the same texts, the same errors, and the clock in the same state after."""
    pipeline = PIPELINES["linux-auth"]
    assert pipeline.timestamp is not None
    normalizer = Normalizer(pipeline, agency="t", timezone=zone, source="t", now=EXAMPLE_NOW, year=year)
    clock = YearlessClock(year, EXAMPLE_NOW)
    for raw in times:
        try:
            expected = parse_timestamp(raw, pipeline.timestamp.formats, ZoneInfo(zone), clock).isoformat()
            expected = expected.replace("+00:00", "Z")
        except ValueError as exc:
            expected = str(exc)
        try:
            got = normalizer._timestamp({"ts": raw})
        except ValueError as exc:
            got = str(exc)
        assert got == expected, (raw, times)
        assert normalizer.state() == clock.state
