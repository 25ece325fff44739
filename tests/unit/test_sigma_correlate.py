"""Sigma correlations (every type and condition operator), windowed in Python over matching events."""

from __future__ import annotations

from pathlib import Path

import pytest

from secmon.detect.inprocess.examples import fires
from secmon.detect.sigma.load import CompiledRule, RuleSet, load_rule_file

BASE = """title: {name}
name: {name}
logsource: {{product: linux, service: sshd}}
detection:
  sel:
    event.action: {action}
  condition: sel
level: low
"""


def rule_file(tmp_path: Path, docs: list[str]) -> RuleSet:
    """One file holding several Sigma documents (rules and the correlations over them)."""
    path = tmp_path / "rules.yml"
    path.write_text("---\n".join(docs), encoding="utf-8")
    return load_rule_file(path)


def correlation(tmp_path: Path, body: str, *actions: str) -> CompiledRule:
    docs = [BASE.format(name=f"r_{a}", action=a) for a in actions]
    docs.append(f"title: corr\nid: 11111111-2222-4333-8444-555555555555\ncorrelation:\n{body}\nlevel: high\n")
    ruleset = rule_file(tmp_path, docs)
    assert not ruleset.problems, ruleset.problems
    assert len(ruleset.rules) == 1
    return ruleset.rules[0]


def event(second: int, action: str, ip: str = "1.2.3.4", user: str = "u", size: int = 1) -> dict:  # type: ignore[type-arg]
    return {"@timestamp": f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}Z", "event.module": "system",
            "event.dataset": "system.auth", "process.name": "sshd", "event.action": action, "source.ip": ip,
            "user.name": user, "source.bytes": size}


@pytest.mark.parametrize("condition,count,expected", [
    ("gte: 3", 3, True), ("gte: 3", 2, False), ("gt: 2", 3, True), ("eq: 2", 2, True), ("eq: 2", 3, False),
    ("lt: 3", 2, True), ("lte: 2", 3, False), ("neq: 2", 1, True),
])
def test_event_count_operators(tmp_path: Path, condition: str, count: int, expected: bool) -> None:
    rule = correlation(tmp_path, f"  type: event_count\n  rules: [r_fail]\n  group-by: [source.ip]\n"
                                 f"  timespan: 1m\n  condition: {{{condition}}}", "fail")
    assert fires(rule, [event(i, "fail") for i in range(count)]) is expected


def test_event_count_needs_the_events_within_the_timespan_and_group(tmp_path: Path) -> None:
    rule = correlation(tmp_path, "  type: event_count\n  rules: [r_fail]\n  group-by: [source.ip]\n"
                                 "  timespan: 1m\n  condition: {gte: 3}", "fail")
    assert not fires(rule, [event(0, "fail"), event(50, "fail"), event(110, "fail")])
    assert not fires(rule, [event(0, "fail", ip="1.1.1.1"), event(1, "fail"), event(2, "fail", ip="9.9.9.9")])


def test_value_count(tmp_path: Path) -> None:
    rule = correlation(tmp_path, "  type: value_count\n  rules: [r_fail]\n  group-by: [source.ip]\n"
                                 "  timespan: 5m\n  condition: {gte: 3, field: user.name}", "fail")
    assert fires(rule, [event(i, "fail", user=f"user{i}") for i in range(3)])
    assert not fires(rule, [event(i, "fail", user=f"user{i % 2}") for i in range(6)])


def test_value_sum_and_avg(tmp_path: Path) -> None:
    rule = correlation(tmp_path, "  type: value_sum\n  rules: [r_fail]\n  group-by: [source.ip]\n"
                                 "  timespan: 5m\n  condition: {gt: 100, field: source.bytes}", "fail")
    assert fires(rule, [event(0, "fail", size=60), event(1, "fail", size=50)])
    assert not fires(rule, [event(0, "fail", size=60), event(1, "fail", size=40)])
    avg = correlation(tmp_path, "  type: value_avg\n  rules: [r_fail]\n  group-by: [source.ip]\n"
                                "  timespan: 5m\n  condition: {gte: 50, field: source.bytes}", "fail")
    assert fires(avg, [event(0, "fail", size=60), event(1, "fail", size=40)])
    assert not fires(avg, [event(0, "fail", size=10), event(1, "fail", size=40)])


def test_temporal_any_order(tmp_path: Path) -> None:
    rule = correlation(tmp_path, "  type: temporal\n  rules: [r_a, r_b]\n  group-by: [source.ip]\n  timespan: 1m",
                       "a", "b")
    assert fires(rule, [event(0, "b"), event(30, "a")])
    assert not fires(rule, [event(0, "b"), event(90, "a")])
    assert not fires(rule, [event(0, "a"), event(1, "a")])


def test_temporal_ordered(tmp_path: Path) -> None:
    rule = correlation(tmp_path, "  type: temporal_ordered\n  rules: [r_a, r_b]\n  group-by: [source.ip]\n"
                                 "  timespan: 1m", "a", "b")
    assert fires(rule, [event(0, "a"), event(30, "b")])
    assert not fires(rule, [event(0, "b"), event(30, "a")])


def test_temporal_ordered_over_a_nested_event_count(tmp_path: Path) -> None:
    docs = [BASE.format(name="r_fail", action="fail"), BASE.format(name="r_ok", action="ok"),
            "title: many\nname: many\ncorrelation:\n  type: event_count\n  rules: [r_fail]\n"
            "  group-by: [source.ip]\n  timespan: 1m\n  condition: {gte: 3}\nlevel: low\n",
            "title: corr\ncorrelation:\n  type: temporal_ordered\n  rules: [many, r_ok]\n  group-by: [source.ip]\n"
            "  timespan: 5m\nlevel: high\n"]
    ruleset = rule_file(tmp_path, docs)
    assert not ruleset.problems and len(ruleset.rules) == 1
    rule = ruleset.rules[0]
    assert fires(rule, [event(0, "fail"), event(1, "fail"), event(2, "fail"), event(60, "ok")])
    assert not fires(rule, [event(0, "fail"), event(1, "fail"), event(60, "ok")])
    assert not fires(rule, [event(0, "ok"), event(1, "fail"), event(2, "fail"), event(3, "fail")])


def test_fieldref_inside_a_correlated_rule(tmp_path: Path) -> None:
    docs = ["title: same\nname: same\nlogsource: {product: linux, service: sshd}\ndetection:\n"
            "  sel:\n    user.name|fieldref: source.user\n  condition: sel\nlevel: low\n",
            "title: corr\ncorrelation:\n  type: event_count\n  rules: [same]\n  group-by: [source.ip]\n"
            "  timespan: 1m\n  condition: {gte: 2}\nlevel: high\n"]
    ruleset = rule_file(tmp_path, docs)
    assert not ruleset.problems and ruleset.rules[0].refine_fields
    rule = ruleset.rules[0]
    same = [{**event(i, "x", user="bob"), "source.user": "BOB"} for i in range(2)]
    differ = [{**event(i, "x", user="bob"), "source.user": "alice"} for i in range(2)]
    assert fires(rule, same) and not fires(rule, differ)
