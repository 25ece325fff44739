"""Every Sigma value modifier, compiled to Query DSL and run by the in-process matcher.

Each case is a detection, events it must match and events it must not: the
semantics of the Sigma specification, checked end to end (pySigma parse ->
pipeline -> compiler -> matcher). tests/integration/test_sigma_cluster.py holds
the matcher to the real node.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from secmon.detect.sigma.load import CompiledRule, load_rule_file
from secmon.detect.inprocess.match import matches


def compile_rule(tmp_path: Path, detection: str, logsource: str = "{category: testing}") -> CompiledRule:
    text = (f"title: t\nid: 11111111-2222-4333-8444-555555555555\nlogsource: {logsource}\n"
            f"detection:\n{detection}\nlevel: low\n")
    path = tmp_path / "rule.yml"
    path.write_text(text, encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    return ruleset.rules[0]


def fires(rule: CompiledRule, doc: dict) -> bool:  # type: ignore[type-arg]
    return matches(rule.refine or rule.query, doc)


B64 = base64.b64encode(b"whoami /all").decode()

CASES = [
    # plain values: case-insensitive, whole value
    ("f: Abc", [{"f": "aBC"}], [{"f": "xabc"}, {"g": "abc"}]),
    ("f|cased: Abc", [{"f": "Abc"}], [{"f": "abc"}]),
    ("f|contains: 'b*c'", [{"f": "xB*Cx"}, {"f": "xbzzcx"}], [{"f": "xcb"}]),  # * is a wildcard
    ("f|contains: b\\*c", [{"f": "xb*cx"}], [{"f": "xbzcx"}]),
    ("f|startswith: ab", [{"f": "ABx"}], [{"f": "xab"}]),
    ("f|endswith: '\\cmd.exe'", [{"f": "C:\\Windows\\CMD.EXE"}], [{"f": "cmd.exe"}]),
    ("f|contains|all: [a1, b2]", [{"f": "b2 a1"}], [{"f": "a1"}]),
    ("f: [x, y]", [{"f": "Y"}], [{"f": "z"}]),
    ("f: 'a?c'", [{"f": "abc"}], [{"f": "ac"}]),
    ("f: ''", [{"f": ""}], [{"f": "a"}, {}]),
    ("f: null", [{}, {"f": None}], [{"f": ""}, {"f": "a"}]),
    ("f|exists: true", [{"f": ""}], [{}]),
    ("f|exists: false", [{}], [{"f": "x"}]),
    ("f: '*'", [{"f": "x"}, {"f": ""}], [{}]),
    ("f: 4688", [{"f": "4688"}, {"f": 4688}], [{"f": "46880"}]),
    ("f|re: 'ab+c'", [{"f": "xxabbc"}], [{"f": "ac"}, {"f": "ABC"}]),
    ("f|re|i: '^ab+c$'", [{"f": "ABBC"}], [{"f": "xabc"}]),
    ("f|re|s: 'a.b'", [{"f": "a\nb"}], [{"f": "ab"}]),
    ("f|re: 'a.b'", [{"f": "axb"}], [{"f": "a\nb"}]),
    ("f|re: '(?i)powershell.*-enc'", [{"f": "PowerShell.exe -ENC x"}], [{"f": "cmd -enc"}]),
    ("f|re: '[\\d]{2}-x'", [{"f": "12-x"}], [{"f": "1-x"}]),
    ("f|re: '.*\\.exe[\"'']?\\s+[^\"]{0,64}werfault\\.exe'", [{"f": "a.exe  x werfault.exe"}],
     [{"f": "a.exe " + "x" * 70 + "werfault.exe"}]),  # relaxed on the cluster, exact in-process
    ("source.ip|cidr: 10.0.0.0/8", [{"source": {"ip": "10.2.3.4"}}], [{"source": {"ip": "11.0.0.1"}}]),
    ("f|cidr: 192.168.0.0/16", [{"f": "192.168.7.1"}], [{"f": "192.169.0.1"}]),  # address stored as text
    ("source.port|gte: 1024", [{"source": {"port": 1024}}], [{"source": {"port": 22}}]),
    ("source.port|lt: 1024", [{"source": {"port": 22}}], [{"source": {"port": 1024}}]),
    ("f|base64: 'whoami /all'", [{"f": B64}], [{"f": "whoami /all"}]),
    ("f|base64offset|contains: 'whoami /all'", [{"f": "xx" + B64 + "yy"}], [{"f": "whoami"}]),
    ("f|wide|base64offset|contains: 'ping'",
     [{"f": base64.b64encode("ping".encode("utf-16le")).decode()}], [{"f": "ping"}]),
    ("f|utf16le|base64offset|contains: 'ping'",
     [{"f": base64.b64encode("ping".encode("utf-16le")).decode()}], [{"f": "cGluZw=="}]),
    ("f|utf16|base64offset|contains: 'ping'",
     [{"f": base64.b64encode("ping".encode("utf-16")).decode()}], [{"f": "ping"}]),
    ("f|neq: x", [{"f": "y"}], [{"f": "X"}]),
    ("f|windash|contains: ' -enc '", [{"f": "ps /enc x"}, {"f": "ps \u2013enc x"}], [{"f": "ps enc x"}]),
    ("f|fieldref: g", [{"f": "Ab", "g": "aB"}], [{"f": "a", "g": "b"}, {"f": "a"}]),
    ("f|fieldref|endswith: g", [{"f": "C:\\x\\y.exe", "g": "y.exe"}], [{"f": "y.exe.bak", "g": "y.exe"}]),
]


@pytest.mark.parametrize("selection,yes,no", CASES, ids=[c[0] for c in CASES])
def test_modifier(tmp_path: Path, selection: str, yes: list, no: list) -> None:  # type: ignore[type-arg]
    rule = compile_rule(tmp_path, f"  sel:\n    {selection}\n  condition: sel")
    assert "query_string" not in json.dumps(rule.query)
    assert [fires(rule, d) for d in yes] == [True] * len(yes), rule.query
    assert [fires(rule, d) for d in no] == [False] * len(no), rule.query


def test_conditions(tmp_path: Path) -> None:
    rule = compile_rule(tmp_path, "  a_1:\n    f: 1\n  a_2:\n    g: 2\n  b:\n    h: 3\n"
                                  "  condition: (1 of a_* and not b) or all of them")
    assert fires(rule, {"f": "1"})
    assert not fires(rule, {"f": "1", "h": "3"})
    assert fires(rule, {"f": "1", "g": "2", "h": "3"})


def test_keywords_search_the_message(tmp_path: Path) -> None:
    rule = compile_rule(tmp_path, "  keywords:\n    - 'Failed password'\n    - 'invalid user'\n  condition: keywords")
    assert fires(rule, {"message": "sshd: FAILED PASSWORD for root"})
    assert not fires(rule, {"message": "Accepted password"})


def test_fieldref_under_not_keeps_every_candidate_on_the_cluster(tmp_path: Path) -> None:
    rule = compile_rule(tmp_path, "  sel:\n    a: x\n  same:\n    f|fieldref: g\n  condition: sel and not same")
    assert rule.refine is not None and "secmon_fieldref" not in json.dumps(rule.query)
    doc_same, doc_differ = {"a": "x", "f": "1", "g": "1"}, {"a": "x", "f": "1", "g": "2"}
    assert matches(rule.query, doc_same) and matches(rule.query, doc_differ)  # superset on the cluster
    assert not fires(rule, doc_same) and fires(rule, doc_differ)


def test_windows_fields_and_logsource(tmp_path: Path) -> None:
    rule = compile_rule(tmp_path, "  sel:\n    EventID: 4625\n    TargetUserName: admin\n  condition: sel",
                        "{product: windows, service: security}")
    doc = {"event": {"module": "windows"}, "winlog": {"channel": "Security", "event_id": "4625",
                                                      "event_data": {"TargetUserName": "Admin"}}}
    assert fires(rule, doc)
    assert not fires(rule, {**doc, "winlog": {**doc["winlog"], "channel": "System"}})


def test_process_creation_is_sysmon_1_or_security_4688(tmp_path: Path) -> None:
    rule = compile_rule(tmp_path, "  sel:\n    CommandLine|contains: whoami\n  condition: sel",
                        "{product: windows, category: process_creation}")
    base = {"event": {"module": "windows"}, "winlog": {"event_data": {"CommandLine": "whoami /all"}}}
    sysmon = {**base, "winlog": {**base["winlog"], "channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "1"}}
    security = {**base, "winlog": {**base["winlog"], "channel": "Security", "event_id": "4688"}}
    other = {**base, "winlog": {**base["winlog"], "channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "3"}}
    assert fires(rule, sysmon) and fires(rule, security) and not fires(rule, other)


def test_user_data_services_look_in_both_places(tmp_path: Path) -> None:
    rule = compile_rule(tmp_path, "  sel:\n    Operation|contains: ClearEventLog\n  condition: sel",
                        "{product: windows, service: wmi}")
    doc = {"event": {"module": "windows"}, "winlog": {"channel": "Microsoft-Windows-WMI-Activity/Operational",
                                                      "user_data": {"Operation": "x.ClearEventLog()"}}}
    assert fires(rule, doc)


@pytest.mark.parametrize("selection,reason", [
    ("f|expand: '%admins%'", "admins"),
    ("source.ip|startswith: '10.'", "use |cidr"),
    ("f|re: '\\bword'", "\\b"),
    ("winlog.event_data.X|gt: 5", "text (keyword) field"),
])
def test_unsupported_is_reported_with_the_reason(tmp_path: Path, selection: str, reason: str) -> None:
    path = tmp_path / "rule.yml"
    path.write_text("title: t\nlogsource: {category: testing}\ndetection:\n"
                    f"  sel:\n    {selection}\n  condition: sel\n", encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.rules
    assert reason in ruleset.problems[0].reason
    assert ruleset.problems[0].where.startswith(f"{path}:")


def test_yaml_error_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "rule.yml"
    path.write_text("title: t\ndetection:\n  sel: [unclosed\n", encoding="utf-8")
    problem = load_rule_file(path).problems[0]
    assert problem.where.startswith(f"{path}:") and problem.where.count(":") >= 2
