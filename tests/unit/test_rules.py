"""Rule loading and compilation: native Query DSL, collected errors, correlation windows."""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from secmon.detect.sigma.cidr import address_regexps
from secmon.detect.windowing.correlate import bursts
from secmon.detect.sigma.load import load_rule_file, load_rules

ROOT = Path(__file__).resolve().parents[2]


def rule_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rule.yml"
    path.write_text(text, encoding="utf-8")
    return path


def compiled(tmp_path: Path, detection: str) -> dict:  # type: ignore[type-arg]
    text = f"title: t\nid: 11111111-2222-4333-8444-555555555555\nlogsource: {{category: nothing}}\ndetection:\n{detection}\nlevel: low\n"
    ruleset = load_rule_file(rule_file(tmp_path, text))
    assert not ruleset.problems, ruleset.problems
    return ruleset.rules[0].query


def test_our_library_compiles_without_problems() -> None:
    ruleset = load_rules([ROOT / "rules"])
    assert not ruleset.problems, ruleset.problems
    assert any(r.kind == "event_count" for r in ruleset.rules)


def test_no_query_string_ever(tmp_path: Path) -> None:
    # An escaped star is a literal star; everything else that is query syntax elsewhere stays data.
    query = compiled(tmp_path, "  sel:\n    f|contains: 'a b:c\\* (x) OR \"y\"'\n  condition: sel")
    assert "query_string" not in json.dumps(query)
    assert query == {"wildcard": {"f": {"value": '*a b:c\\* (x) OR "y"*', "case_insensitive": True}}}


@pytest.mark.parametrize("detection,expected", [
    ("  sel:\n    f: abc\n  condition: sel", {"term": {"f": {"value": "abc", "case_insensitive": True}}}),
    ("  sel:\n    f|cased: abc\n  condition: sel", {"term": {"f": {"value": "abc", "case_insensitive": False}}}),
    ("  sel:\n    f|startswith: abc\n  condition: sel", {"prefix": {"f": {"value": "abc", "case_insensitive": True}}}),
    ("  sel:\n    f: null\n  condition: sel", {"bool": {"must_not": [{"exists": {"field": "f"}}]}}),
    ("  sel:\n    source.ip|cidr: 10.0.0.0/8\n  condition: sel", {"term": {"source.ip": {"value": "10.0.0.0/8"}}}),
    ("  sel:\n    f|cidr: 10.0.0.0/8\n  condition: sel",  # text field: every textual form (cidr.py)
     {"bool": {"should": [{"regexp": {"f": {"value": r, "flags": "NONE", "max_determinized_states": 100_000}}}
                          for r in address_regexps(ipaddress.ip_network("10.0.0.0/8"))],
               "minimum_should_match": 1}}),
    ("  sel:\n    f: '4688'\n  condition: sel", {"term": {"f": {"value": "4688", "case_insensitive": False}}}),
    ("  sel:\n    f|gte: 5\n  condition: sel", {"range": {"f": {"gte": 5}}}),
    ("  sel:\n    f|re: 'ab+c'\n  condition: sel", {"regexp": {"f": {"value": ".*ab+c.*", "flags": "NONE",
                                                              "max_determinized_states": 100_000}}}),
])
def test_value_compilation(tmp_path: Path, detection: str, expected: dict) -> None:  # type: ignore[type-arg]
    assert compiled(tmp_path, detection) == expected


def test_one_bad_rule_does_not_stop_the_others(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(
        "title: good\nid: 11111111-2222-4333-8444-555555555555\nlogsource: {product: linux}\n"
        "detection:\n  sel:\n    f: a\n  condition: sel\nlevel: low\n", encoding="utf-8")
    (tmp_path / "bad.yml").write_text(
        "title: bad\nlogsource: {product: linux}\ndetection:\n  sel:\n    f: a\n  condition: sel and nothere\n",
        encoding="utf-8")
    (tmp_path / "broken.yml").write_text("title: [unclosed\n", encoding="utf-8")
    ruleset = load_rules([tmp_path])
    assert [r.title for r in ruleset.rules] == ["good"]
    assert {Path(p.where.split(":")[0]).name for p in ruleset.problems} == {"bad.yml", "broken.yml"}


T0 = datetime(2005, 6, 14, 12, 0, 0)


def events(*seconds: int) -> list[tuple[datetime, str]]:
    return [(T0 + timedelta(seconds=s), f"e{s}") for s in seconds]


def test_burst_needs_threshold_within_timespan() -> None:
    assert bursts(events(0, 100, 200, 300), 3, timedelta(seconds=150)) == []
    found = bursts(events(0, 50, 100, 1000), 3, timedelta(seconds=150))
    assert [(b.count, b.ids) for b in found] == [(3, ("e0", "e50", "e100"))]


def test_close_bursts_merge_and_far_ones_do_not() -> None:
    found = bursts(events(0, 10, 20, 70, 80, 90, 5000, 5010, 5020), 3, timedelta(seconds=60))
    assert [(b.first, b.count) for b in found] == [(T0, 6), (T0 + timedelta(seconds=5000), 3)]


def test_bursts_are_deterministic_for_a_later_extended_window() -> None:
    base = events(0, 10, 20, 30)
    assert bursts(base, 3, timedelta(minutes=1))[0].first == bursts(base + events(40), 3, timedelta(minutes=1))[0].first


def test_single_rule_keeps_matches_that_lack_a_group_by_field(tmp_path: Path) -> None:
    from secmon.detect.windowing.findings import MISSING, findings, hits_from_docs

    text = ("title: t\nid: 11111111-2222-4333-8444-555555555555\nlogsource: {product: nothing}\n"
            "detection:\n  sel:\n    f: x\n  condition: sel\nlevel: low\n")
    rule = load_rule_file(rule_file(tmp_path, text)).rules[0]
    assert rule.group_by == ("host.hostname",)
    base = {"organization": {"id": "ag"}, "event": {"module": "nothing"}, "f": "x"}  # logsource -> event.module
    docs = [("a", {**base, "@timestamp": "2005-06-14T00:00:00Z", "host": {"hostname": "h1"}}),
            ("b", {**base, "@timestamp": "2005-06-14T00:00:01Z"})]
    found = findings(rule, hits_from_docs(rule, docs))
    assert sorted(f.group for f in found) == [(("host.hostname", MISSING),), (("host.hostname", "h1"),)]
