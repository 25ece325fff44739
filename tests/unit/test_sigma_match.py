"""The in-process matcher: the compiler's Query DSL subset with Elasticsearch's semantics."""

from __future__ import annotations

import re

import pytest

from secmon.detect.sigma.lucene_regexp import UnsupportedRegex, from_sigma, to_python
from secmon.detect.fields import field_values
from secmon.detect.inprocess.match import UnsupportedQuery, matches


def term(field: str, value: object, ci: bool = False) -> dict:  # type: ignore[type-arg]
    return {"term": {field: {"value": value, "case_insensitive": ci}}}


def test_field_values_nested_dotted_and_lists() -> None:
    doc = {"a": {"b": "1", "c.d": ["2", None, "3"]}, "a.e": "4", "l": [{"x": "5"}, {"x": ["6"]}]}
    assert field_values(doc, "a.b") == ["1"]
    assert field_values(doc, "a.c.d") == ["2", "3"]
    assert field_values(doc, "a.e") == ["4"]
    assert field_values(doc, "l.x") == ["5", "6"]
    assert field_values(doc, "a") == []  # an object is not a value


@pytest.mark.parametrize("query,doc,expected", [
    (term("f", "Abc"), {"f": "Abc"}, True),
    (term("f", "Abc"), {"f": "abc"}, False),
    (term("f", "Abc", True), {"f": "aBC"}, True),
    (term("f", "abc", True), {"f": ["x", "ABC"]}, True),  # multi-valued: any value
    (term("f", "5"), {"f": 5}, True),  # a number indexed in a keyword field is its text
    (term("f", "true"), {"f": True}, True),
    (term("f", ""), {"f": ""}, True),
    (term("f", "x"), {}, False),
    (term("source.ip", "10.0.0.0/8"), {"source": {"ip": "10.1.2.3"}}, True),
    (term("source.ip", "10.0.0.0/8"), {"source": {"ip": "11.1.2.3"}}, False),
    (term("source.ip", "10.1.2.3"), {"source": {"ip": "10.1.2.3"}}, True),
    (term("source.ip", "::1"), {"source": {"ip": "0:0::1"}}, True),
    (term("source.port", "22"), {"source": {"port": 22}}, True),
    (term("process.pid", 7), {"process.pid": "7"}, True),
    ({"terms": {"f": ["a", "b"]}}, {"f": "b"}, True),
    ({"terms": {"f": ["a", "b"]}}, {"f": "B"}, False),
    ({"prefix": {"f": {"value": "ab", "case_insensitive": True}}}, {"f": "ABc"}, True),
    ({"prefix": {"f": {"value": "ab"}}}, {"f": "ABc"}, False),
    ({"wildcard": {"f": {"value": "*a?c*", "case_insensitive": True}}}, {"f": "xxAbCyy"}, True),
    ({"wildcard": {"f": {"value": "*a\\*c*"}}}, {"f": "xa*cx"}, True),
    ({"wildcard": {"f": {"value": "*a\\*c*"}}}, {"f": "xabcx"}, False),
    ({"wildcard": {"f": {"value": "a*"}}}, {"f": "a\nb"}, True),  # * crosses newlines
    ({"regexp": {"f": {"value": ".*ab+c.*", "flags": "NONE"}}}, {"f": "xabbbcx"}, True),
    ({"regexp": {"f": {"value": "ab+c", "flags": "NONE"}}}, {"f": "xabbbcx"}, False),  # anchored
    ({"regexp": {"f": {"value": "ab+c", "flags": "NONE", "case_insensitive": True}}}, {"f": "ABBC"}, True),
    ({"range": {"source.port": {"gte": 1024}}}, {"source.port": 1024}, True),
    ({"range": {"source.port": {"gt": 1024}}}, {"source.port": 1024}, False),
    ({"range": {"n": {"lt": 10}}}, {"n": 9}, True),
    ({"range": {"@timestamp": {"gte": "2020-01-01T00:00:00Z", "lt": "2020-01-02T00:00:00Z"}}},
     {"@timestamp": "2020-01-01T12:00:00Z"}, True),
    ({"exists": {"field": "f"}}, {"f": ""}, True),
    ({"exists": {"field": "f"}}, {"f": None}, False),
    ({"exists": {"field": "f"}}, {"f": []}, False),
    ({"exists": {"field": "a"}}, {"a": {"b": "x"}}, True),
    ({"exists": {"field": "event.original"}}, {"event": {"original": "x"}}, False),  # index: false
    ({"bool": {"must_not": [{"exists": {"field": "f"}}]}}, {"g": 1}, True),
    ({"bool": {"filter": [term("a", "1"), term("b", "2")]}}, {"a": "1", "b": "2"}, True),
    ({"bool": {"filter": [term("a", "1"), term("b", "2")]}}, {"a": "1", "b": "3"}, False),
    ({"bool": {"should": [term("a", "1"), term("b", "2")], "minimum_should_match": 1}}, {"b": "2"}, True),
    ({"bool": {"should": [term("a", "1"), term("b", "2")], "minimum_should_match": 2}}, {"b": "2"}, False),
    ({"bool": {"should": [term("a", "1")]}}, {"b": "2"}, False),  # should alone: one must match
    ({"bool": {"filter": [term("b", "2")], "should": [term("a", "1")]}}, {"b": "2"}, True),
    ({"match_all": {}}, {}, True),
])
def test_matches(query: dict, doc: dict, expected: bool) -> None:  # type: ignore[type-arg]
    assert matches(query, doc) is expected


def test_ignore_above_values_are_not_indexed() -> None:
    long = "a" * 1025
    assert not matches({"wildcard": {"user.name": {"value": "a*"}}}, {"user.name": long})
    assert not matches({"wildcard": {"some.dynamic": {"value": "a*"}}}, {"some.dynamic": long})
    assert matches({"wildcard": {"process.command_line": {"value": "a*"}}}, {"process.command_line": long})
    assert matches({"wildcard": {"winlog.event_data.X": {"value": "a*"}}}, {"winlog.event_data.X": long})
    assert not matches({"wildcard": {"winlog.event_data.X": {"value": "a*"}}}, {"winlog.event_data.X": "a" * 8192})


def test_unsupported_queries_are_refused() -> None:
    with pytest.raises(UnsupportedQuery):
        matches({"query_string": {"query": "a:b"}}, {})
    with pytest.raises(UnsupportedQuery):
        matches({"regexp": {"f": {"value": "a"}}}, {})  # default flags ALL: never emitted


@pytest.mark.parametrize("sigma,values,expected", [
    ("ab+c", ["xabbcx", "ac"], [True, False]),
    ("^ab", ["abx", "xab"], [True, False]),
    ("ab$", ["xab", "abx"], [True, False]),
    ("^a|b$", ["ax", "xb", "xax"], [True, True, False]),
    (r"\d{2,3}\.exe", ["a12.exe", "a1.exe"], [True, False]),
    (r"[a-c]+\\x", ["zb\\x", "zd\\x"], [True, False]),
    ("(?P<n>ab)c", ["abc"], [True]),
    ("a.b", ["a\nb", "axb"], [False, True]),
    ('"q"#@&<>~', ['"q"#@&<>~'], [True]),
    ("(a|)b", ["b", "xab"], [True, True]),  # Lucene has no empty branch
    ("(^|/)[.]git", [".git", "a/.git", "a.git"], [True, True, False]),  # anchors inside a leading group
    ("(^[a-z]{4}$)|(^[a-z]{8}$)", ["abcd", "abcdefgh", "abcde"], [True, True, False]),
    ("a(b|c$)", ["xabx", "ac", "acx"], [True, True, False]),
])
def test_sigma_regex_to_lucene_and_back(sigma: str, values: list[str], expected: list[bool]) -> None:
    lucene = from_sigma(sigma)
    compiled = to_python(lucene)
    assert [bool(compiled.fullmatch(v)) for v in values] == expected
    assert [bool(re.search(sigma, v)) for v in values] == expected


@pytest.mark.parametrize("sigma", [r"(?=a)b", r"\bword\b", r"(a)\1", "a(^b)", "(?<!x)y"])
def test_regex_constructs_lucene_lacks_are_reported(sigma: str) -> None:
    with pytest.raises(UnsupportedRegex):
        from_sigma(sigma)
