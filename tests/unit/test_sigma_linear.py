"""In-process regexes run on RE2 (linear.py): a crafted rule cannot stall the offline matcher.

No timed assertion: each case would take minutes to years under a backtracking engine (`(a+)+$`
against 40 `a`s and a `b` is 2^40 steps for Python's re), so finishing within the test run is the
proof. tests/integration/test_sigma_regex_cluster.py holds the answers to the node's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from secmon.detect.inprocess.linear import RegexTimeout, compile_fullmatch, encode
from secmon.detect.sigma.load import CompiledRule, load_rule_file
from secmon.detect.inprocess.match import matches, regex_fallbacks
from secmon.detect.inprocess.router import scan_documents

HOSTILE = "a" * 5000 + "b"  # a value an attacker writes into a log


def rule(tmp_path: Path, selection: str) -> CompiledRule:
    path = tmp_path / "rule.yml"
    path.write_text("title: crafted\nid: 31111111-2222-4333-8444-555555555555\nlogsource: {category: webserver}\n"
                    f"detection:\n  sel:\n    {selection}\n  condition: sel\nlevel: high\n", encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    return ruleset.rules[0]


def web(message: str, n: int = 0) -> dict[str, object]:
    return {"@timestamp": f"2026-01-01T00:00:{n:02d}Z", "event": {"category": "web"}, "message": message,
            "organization": {"id": "so-tttt"}, "host": {"hostname": "web1"}}


@pytest.mark.parametrize("selection", [
    "message|re: '(a+)+$'",
    "message|re: '^(a|a)*$'",
    "message|re: '(a|aa)+c'",
    "message|re: '(.*a){12}c'",
    "message|contains|all: [a, a, a, a, a, a, a, a, c]",  # wildcards *a*a*...*c*: polynomial when backtracking
])
def test_catastrophic_patterns_run_in_linear_time_offline(tmp_path: Path, selection: str) -> None:
    crafted = rule(tmp_path, selection)
    assert not regex_fallbacks(crafted.query)  # on RE2, not the fallback
    assert not matches(crafted.query, web(HOSTILE))  # every case needs a character the value lacks
    assert scan_documents([crafted], [(f"e{n}", web(HOSTILE, n)) for n in range(20)]) == []
    assert scan_documents([crafted], [("e0", web(HOSTILE[:-1] + "c"))]) or "c" not in selection


def test_the_hostile_value_still_matches_what_it_should(tmp_path: Path) -> None:
    crafted = rule(tmp_path, "message|re: '(a+)+$'")
    assert matches(crafted.query, web("x" + "a" * 5000))
    assert not matches(crafted.query, web("a" * 5000 + "b"))


def test_what_re2_refuses_runs_bounded_and_is_named() -> None:
    refused = compile_fullmatch("(?:x){1001}")
    assert refused.fallback and "1001" in refused.fallback
    assert refused.test(b"x" * 1001) and not refused.test(b"x" * 1000)
    query = {"regexp": {"message": {"value": "x{1001}", "flags": "NONE"}}}
    assert regex_fallbacks(query) and matches(query, {"message": "x" * 1001})


def test_a_fallback_timeout_is_raised_not_swallowed() -> None:
    # RE2 refuses the count; the fallback engine backtracks on the other branch until its timeout
    slow = compile_fullmatch("(?:x{1001})|(?:(?:a|aa)+)+b")
    assert slow.fallback
    with pytest.raises(RegexTimeout):
        slow.test(b"a" * 40)


def test_lone_surrogates_match_as_elasticsearch_indexes_them() -> None:
    assert encode("a\ud800b") == "a\ufffdb".encode()
    assert compile_fullmatch("a.b").test(encode("a\ud800b"))
