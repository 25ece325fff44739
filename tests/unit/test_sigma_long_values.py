"""Long values (issue 10, item 5) in-process: read whole, so a value longer than ignore_above is
matched as if indexed; the cluster side is tests/integration/test_sigma_long_values_cluster.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from secmon.detect.sigma.load import CompiledRule, load_rule_file
from secmon.detect.inprocess.match import matches
from secmon.detect.inprocess.router import scan_documents
from secmon.types import AGENCY_FIELD

RULES = Path(__file__).resolve().parents[2] / "rules" / "windows"
AT = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


def rule_and_example(name: str) -> tuple[CompiledRule, dict[str, Any]]:
    path = RULES / name
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    example = yaml.safe_load(path.read_text(encoding="utf-8"))["secmon"]["examples"]["match"][0]
    return ruleset.rules[0], dict(example)


def padded_script(marker: str) -> str:
    line = "$data = [System.Convert]::FromBase64String('QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=')  # padding\n"
    body = line * (20_000 // len(line))
    return body[:10_000] + marker + body[10_000:]


CASES = [  # (rule file, field, value, detected)
    ("offensive-powershell-toolkit-in-a-script-block.yml", "winlog.event_data.ScriptBlockText",
     padded_script("Invoke-Mimikatz -DumpCreds\n"), True),
    ("offensive-powershell-toolkit-in-a-script-block.yml", "winlog.event_data.ScriptBlockText",
     padded_script("Write-Output 'nothing to see'\n"), False),
    ("event-log-cleared-from-the-command-line.yml", "winlog.event_data.CommandLine",
     "wevtutil  cl Security " + " " * 9_000 + "/bu:C:\\Temp\\x.evtx", True),
    ("event-log-cleared-from-the-command-line.yml", "winlog.event_data.CommandLine",
     "wevtutil  qe Security " + " " * 9_000 + "/c:5", False),
]


def test_long_values_are_matched_whole_in_process() -> None:
    for name, field, value, detected in CASES:
        rule, example = rule_and_example(name)
        doc = {**example, field: value, "@timestamp": AT.isoformat(), AGENCY_FIELD: "a"}
        assert "_ignored" in str(rule.long_query) and field in str(rule.long_query)
        assert not matches(rule.query, doc)  # what the node's keyword field sees: nothing
        assert matches(rule.query, doc, whole=True) is detected
        assert bool(scan_documents([rule], [("e", doc)])) is detected


def test_a_correlation_says_long_group_values_are_not_grouped(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("""title: base
name: base
logsource: {product: linux, service: auth}
detection:
  sel: {event.action: ssh_login}
  condition: sel
---
title: many
correlation: {type: event_count, rules: [base], group-by: [user.name], timespan: 5m,
              condition: {gte: 2}}
""", encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    correlation = next(r for r in ruleset.rules if r.kind != "single")
    assert any("user.name over 1024" in note for note in correlation.notes), correlation.notes

    def docs(user: str) -> list[tuple[str, dict[str, object]]]:
        return [(f"e{n}", {"event": {"module": "system", "dataset": "system.auth", "action": "ssh_login"},
                           "user": {"name": user}, "@timestamp": AT.isoformat(), AGENCY_FIELD: "a"})
                for n in range(3)]
    assert [f for f in scan_documents([correlation], docs("u" * 1024)) if f.rule_id == correlation.id]
    # The cluster has no doc value to group these by; in-process drops them alike.
    assert not [f for f in scan_documents([correlation], docs("u" * 1025)) if f.rule_id == correlation.id]


def test_a_rule_on_a_field_that_is_not_searchable_says_so(tmp_path: Path) -> None:
    path = tmp_path / "r.yml"
    path.write_text("title: t\nlogsource: {category: webserver}\ndetection:\n  sel:\n"
                    "    event.original|contains: 'union select'\n  condition: sel\n", encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    assert any("event.original" in n and "not searchable" in n for n in ruleset.rules[0].notes), ruleset.rules[0].notes
