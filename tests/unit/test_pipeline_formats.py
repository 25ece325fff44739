"""The pipeline format's building blocks, each on a small inline pipeline: formats, types,
timestamps, conditions, enrichment, and load-time validation with file:line errors."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secmon.errors import InputError
from secmon.model import DeadLetter, Event
from secmon.normalize.convert import CONVERTERS, LEAP_YEAR, SYSLOG, YearlessClock, parse_timestamp, syslog_time
from secmon.normalize.engine import Normalizer, Skipped, get
from secmon.normalize.formats import parse_cef, parse_leef
from secmon.normalize.pipeline import Pipeline, parse_pipeline
from secmon.yamlio import load_all_text

UTC = timezone.utc


def pipeline(text: str, name: str = "p") -> Pipeline:
    return parse_pipeline(next(load_all_text(text, f"pipelines/{name}.yml")))


def run(p: Pipeline, *lines: str, tz: str = "UTC") -> list[Event | DeadLetter | Skipped]:
    normalizer = Normalizer(p, agency="a", timezone=tz, source="s", now=datetime(2026, 1, 1, tzinfo=UTC), year=2005)
    return [normalizer.normalize(line, i, str(i)) for i, line in enumerate(lines)]


def doc(result: Any) -> Any:
    assert isinstance(result, Event), getattr(result, "reason", result)
    return result.doc


KV = """id: p
format: kv
parse:
  regex: '^(?P<host>\\S+) fw: (?P<payload>.*)$'
  separator: ';'
  assign: ':'
timestamp: {field: when, formats: [UNIX_MS]}
fields:
  source.ip: {from: src, type: ip}
  event.action: {from: act, type: lowercase}
  host.name: host
  tags: {from: tags, type: list}
"""


def test_kv_with_custom_separators_quotes_and_header() -> None:
    result = run(pipeline(KV), 'gw1 fw: when:1700000000123;src:10.0.0.1;act:"DROP now";tags:a,b')
    d = doc(result[0])
    assert d["@timestamp"] == "2023-11-14T22:13:20.123000Z"
    assert get(d, "source.ip") == "10.0.0.1" and get(d, "event.action") == "drop now"
    assert get(d, "host.name") == "gw1" and d["tags"] == ["a", "b"]


def test_kv_first_occurrence_wins_and_nested_lists_are_read() -> None:
    p = pipeline("id: p\nformat: kv\nparse: {nested: [msg]}\ntimestamp: {field: t, formats: [UNIX]}\n"
                 "fields: {network.bytes: {from: LEN, type: long}, user.name: acct}\n")
    d = doc(run(p, "t=1 LEN=40 LEN=20 msg='op=login acct=\"root\" res=failed'")[0])
    assert get(d, "network.bytes") == 40 and get(d, "user.name") == "root"


CSV = """id: p
format: csv
parse:
  layout_column: 1
  layouts:
    A: [t, kind, ip]
    B: [t, kind, user, ip]
timestamp: {field: t, formats: [ISO8601]}
fields: {source.ip: {from: ip, type: ip}, user.name: user}
"""


def test_csv_layout_is_chosen_by_a_column_and_quotes_are_honoured() -> None:
    a, b, c = run(pipeline(CSV), "2024-01-01T00:00:00Z,A,1.2.3.4", '2024-01-01T00:00:00Z,B,"doe, john",5.6.7.8',
                  "2024-01-01T00:00:00Z,C,x")
    assert get(doc(a), "source.ip") == "1.2.3.4"
    assert get(doc(b), "user.name") == "doe, john" and get(doc(b), "source.ip") == "5.6.7.8"
    assert isinstance(c, DeadLetter) and "no column layout for 'C'" in c.reason


def test_cef_header_extension_and_escapes() -> None:
    values = parse_cef(r"<13>Jan 1 host CEF:0|V|P|1.0|42|a \| b|7|src=1.2.3.4 msg=hello world a\=b cs1=x")
    assert values["observer.vendor"] == "V" and values["cef.name"] == "a | b" and values["cef.severity"] == "7"
    assert values["src"] == "1.2.3.4" and values["msg"] == "hello world a=b" and values["cs1"] == "x"
    with pytest.raises(ValueError, match="not a CEF record"):
        parse_cef("CEF:0|only|three")


def test_leef_1_and_2() -> None:
    one = parse_leef("LEEF:1.0|Microsoft|MSExchange|2013|15345|src=10.0.0.1\tdst=10.0.0.2\tusrName=joe")
    assert one["observer.vendor"] == "Microsoft" and one["leef.event_id"] == "15345"
    assert one["src"] == "10.0.0.1" and one["usrName"] == "joe"
    two = parse_leef("Jan 18 11:07:53 host LEEF:2.0|Lancope|StealthWatch|1.0|41|^|src=10.0.1.8^dst=10.0.0.5")
    assert two["src"] == "10.0.1.8" and two["dst"] == "10.0.0.5" and two["leef.version"] == "2.0"
    hexed = parse_leef("LEEF:2.0|V|P|1|9|x7C|a=1|b=2")
    assert hexed["a"] == "1" and hexed["b"] == "2"
    with pytest.raises(ValueError, match="LEEF"):
        parse_leef("LEEF:1.0|too|short")


def test_leef_pipeline_end_to_end() -> None:
    p = pipeline("id: p\nformat: leef\ntimestamp: {field: devTime, formats: ['%b %d %Y %H:%M:%S']}\n"
                 "fields: {source.ip: {from: src, type: ip}, observer.vendor: observer.vendor}\n")
    d = doc(run(p, "LEEF:1.0|IBM|QRadar|7|1|devTime=Jan 18 2024 11:07:53\tsrc=10.0.0.1", tz="Asia/Ho_Chi_Minh")[0])
    assert d["@timestamp"] == "2024-01-18T04:07:53Z" and get(d, "observer.vendor") == "IBM"


DROP = """id: p
format: json
timestamp: {field: ts, formats: [UNIX]}
drop: [{kind: noise}, {kind: debug, level: [0, 1]}]
keep: [{kind: [noise, debug, login]}]
fields: {event.action: kind}
enrich:
  - lookup: event.action
    table:
      login: {event.category: [authentication], event.outcome: success}
"""


def test_drop_and_keep_conditions_skip_records_and_enrich_adds_fields() -> None:
    p = pipeline(DROP)
    noise, debug0, debug5, login, other = run(p, '{"ts": 1, "kind": "noise"}', '{"ts": 1, "kind": "debug", "level": 0}',
                                              '{"ts": 1, "kind": "debug", "level": 5}', '{"ts": 1, "kind": "login"}',
                                              '{"ts": 1, "kind": "other"}')
    assert isinstance(noise, Skipped) and "drop" in noise.reason
    assert isinstance(debug0, Skipped)
    assert get(doc(debug5), "event.action") == "debug"
    assert get(doc(login), "event.category") == ["authentication"] and get(doc(login), "event.outcome") == "success"
    assert isinstance(other, Skipped) and "keep" in other.reason


def test_set_lists_are_not_shared_between_events() -> None:
    p = pipeline("id: p\nformat: json\ntimestamp: {field: ts, formats: [UNIX]}\nset: {event.type: [info]}\n")
    first, second = run(p, '{"ts": 1}', '{"ts": 2}')
    doc(first)["event"]["type"].append("changed")
    assert doc(second)["event"]["type"] == ["info"]


def test_patterns_without_regex_map_by_condition_and_from_alternatives() -> None:
    p = pipeline("id: p\nformat: json\ntimestamp: {field: ts, formats: [UNIX]}\n"
                 "patterns:\n  - when: {t: a}\n    fields: {user.name: {from: [u1, u2]}}\n    set: {event.action: a}\n")
    d = doc(run(p, '{"ts": 1, "t": "a", "u2": "bob"}')[0])
    assert get(d, "user.name") == "bob" and get(d, "event.action") == "a"


def test_timestamps_of_every_kind() -> None:
    clock = YearlessClock(2005, datetime(2026, 1, 1, tzinfo=UTC))
    from zoneinfo import ZoneInfo
    hcm = ZoneInfo("Asia/Ho_Chi_Minh")
    assert parse_timestamp("1700000000", ("UNIX",), hcm, clock).isoformat() == "2023-11-14T22:13:20+00:00"
    assert parse_timestamp(1700000000123, ("UNIX_MS",), hcm, clock).isoformat() == "2023-11-14T22:13:20.123000+00:00"
    assert parse_timestamp("2024-01-01T07:00:00", ("ISO8601",), hcm, clock).isoformat() == "2024-01-01T00:00:00+00:00"
    assert parse_timestamp("2022-07-10T23:50:05.5+0000", ("ISO8601",), hcm, clock).hour == 23
    assert parse_timestamp("Jun  9 06:06:20", ("%b %d %H:%M:%S",), hcm, clock).isoformat() == "2005-06-08T23:06:20+00:00"
    for bad in ("nan", "1e400", "", "0001-01-01T00:00:00+05:00"):
        with pytest.raises(ValueError, match="matches none|out of the range"):
            parse_timestamp(bad, ("UNIX", "ISO8601"), hcm, clock)


def test_join_timestamp_and_pipeline_timezone() -> None:
    p = pipeline("id: p\nformat: kv\ntimestamp: {join: [date, time], formats: ['%Y-%m-%d %H:%M:%S'], timezone: UTC}\n")
    assert doc(run(p, "date=2024-05-01 time=10:00:00", tz="Asia/Ho_Chi_Minh")[0])["@timestamp"] == "2024-05-01T10:00:00Z"
    assert "no timestamp" in run(p, "date=2024-05-01")[0].reason  # type: ignore[union-attr]


@pytest.mark.parametrize("kind,raw,expected", [
    ("long", "42", 42), ("long", 42.0, 42), ("float", "1.5", 1.5), ("ip", "[::1]", "::1"),
    ("lowercase", "ABC", "abc"), ("uppercase", "get", "GET"), ("list", "a, b,,c", ["a", "b", "c"]),
    ("bool", "T", True), ("bool", False, False), ("string", 5, "5"), ("string", True, "true"),
    ("address", "host.example", {"address": "host.example", "domain": "host.example"}),
])
def test_converters(kind: str, raw: Any, expected: Any) -> None:
    assert CONVERTERS[kind](raw) == expected


@pytest.mark.parametrize("kind,raw", [("long", "4x"), ("long", True), ("ip", "1.2.3.999"), ("float", "x"),
                                      ("bool", "maybe"), ("address", "1.2.3.999")])
def test_converters_reject(kind: str, raw: Any) -> None:
    with pytest.raises(ValueError):
        CONVERTERS[kind](raw)


BAD = [
    ("id: p\nformat: yaml\n", "2:1", "unknown format 'yaml'"),
    ("id: p\nformat: csv\ntimestamp: {field: t, formats: [UNIX]}\n", "1:1", "needs parse.columns"),
    ("id: p\nformat: csv\nparse: {header: bro}\ntimestamp: {field: t, formats: [UNIX]}\n", "3:9", "unknown header"),
    ("id: p\nformat: kv\nparse: {separator: ''}\ntimestamp: {field: t, formats: [UNIX]}\n", "3:9", "must not be empty"),
    ("id: p\nformat: kv\nparse: {regex: '(?P<x>.*)'}\ntimestamp: {field: t, formats: [UNIX]}\n", "3:9", "no group 'payload'"),
    ("id: p\nformat: kv\nparse: {columns: [a]}\ntimestamp: {field: t, formats: [UNIX]}\n", "3:9", "unknown key 'columns'"),
    ("id: p\nformat: json\ntimestamp: {field: t, formats: [EPOCH]}\n", "3:33", "unknown timestamp format 'EPOCH'"),
    ("id: p\nformat: json\ntimestamp: {field: t, formats: [UNIX], timezone: Mars/Base}\n", "3:40", "unknown timezone"),
    ("id: p\nformat: json\ntimestamp: {field: t, join: [a, b], formats: [UNIX]}\n", "3:1", "exactly one of field or join"),
    ("id: p\nformat: json\ntimestamp: {field: t, formats: [UNIX]}\nfields: {a: {from: b, typ: long}}\n", "4:23", "unknown key 'typ'"),
    ("id: p\nformat: json\ntimestamp: {field: t, formats: [UNIX]}\ndrop: [{a: [{x: 1}]}]\n", "4:13", "drop.0.a.0 must be"),
    ("id: p\nformat: json\n", "1:1", "missing required key 'timestamp'"),
    ("id: p\nformat: line\nparse: {regex: '(?P<t>x)'}\ntimestamp: {field: t, formats: [UNIX]}\n"
     "patterns:\n  - {when: {nope: x}}\n", "6:13", "condition value 'nope' does not exist"),
    ("id: p\nformat: json\ntimestamp: {field: t, formats: [UNIX]}\nenrich: [{lookup: a}]\n", "4:10", "enrich.0.table must be"),
    ("id: p\nformat: json\ntimestamp: {field: t, formats: [UNIX]}\nexamples: [{line: x, skiped: true}]\n", "4:22",
     "unknown key 'skiped'"),
]


@pytest.mark.parametrize("text,where,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_pipeline_names_file_line_and_what_is_allowed(text: str, where: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        pipeline(text)
    assert str(caught.value).startswith(f"pipelines/p.yml:{where}:"), str(caught.value)
    assert message in str(caught.value)


def test_windows_formats_need_no_parse_or_timestamp() -> None:
    p = pipeline("id: p\nformat: evtx\nset: {event.kind: event}\n")
    assert p.timestamp is None and p.parse.kind == "evtx"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["Jan", "Feb", "Jun", "Dec", "jun", "JUN", "Foo"]), st.integers(0, 32), st.integers(0, 25),
       st.integers(0, 61), st.integers(0, 61), st.sampled_from(["{:02d}", "{}", "{:>2}"]))
def test_the_syslog_time_fast_path_answers_what_strptime_answers(month: str, day: int, hour: int, minute: int,
                                                                   second: int, day_form: str) -> None:
    text = f"{month} {day_form.format(day)} {hour:02d}:{minute:02d}:{second:02d}"
    fast = syslog_time(text)
    try:  # both read it in a leap year (convert.LEAP_YEAR), so that Feb 29 reads
        slow: datetime | None = datetime.strptime(f"{LEAP_YEAR} {text}", f"%Y {SYSLOG}")
    except ValueError:
        slow = None
    assert fast is None or fast == slow  # None: strptime decides (and gives the same answer as before)


ORDERED = """id: p
format: line
parse: {regex: '^(?P<ts>\\S+) (?P<program>\\S+) (?P<message>.*)$'}
timestamp: {field: ts, formats: [ISO8601]}
fields: {message: message}
patterns:
  - {name: a, when: {program: [sshd]}, regex: '^x', set: {event.action: a}}
  - {name: b, regex: '^x', set: {event.action: b}}
  - {name: c, when: {program: [sshd, su]}, regex: '^y', set: {event.action: c}}
  - {name: d, regex: '^y', set: {event.action: d}}
"""


def test_patterns_are_tried_in_order_whatever_the_dispatch_field() -> None:
    # Patterns conditioned on the program and unconditioned ones interleave: the first that holds wins.
    lines = ("sshd x", "sshd y", "su x", "su y", "cron y")
    results = run(pipeline(ORDERED), *(f"2024-01-01T00:00:00Z {line}" for line in lines))
    actions = [get(doc(result), "event.action") for result in results]
    assert actions == ["a", "c", "b", "c", "d"]
