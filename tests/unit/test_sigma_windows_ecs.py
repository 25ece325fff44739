"""Windows rules that name our own fields (issue 10): `process.executable`, `source.ip`, `user.name`,
`winlog.channel`, `event.code`, `winlog.event_data.X` pass through the Windows field mapping unchanged,
while Sigma/EVTX names (`Image`, `LogonType`, `EventID`) keep theirs. In-process on real events from
EVTX-ATTACK-SAMPLES; tests/integration/test_sigma_windows_ecs_cluster.py runs the same cases on the node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sigma.rule import SigmaLogSource

from secmon.detect.sigma.load import CompiledRule, load_rule_file
from secmon.detect.inprocess.match import matches
from secmon.detect.inprocess.router import RuleRouter
from secmon.detect.sigma.pipeline import logsources
from tests.unit.test_sigma_audit import PLINK_4688, PLINK_SYSMON, event

TEMPLATE = Path(__file__).resolve().parents[2] / "secmon" / "store" / "templates" / "events.json"
TUNNEL = "DE_RDP_Tunneling_4624.evtx.jsonl"  # 4624s: 13 interactive from 127.0.0.1, 14 RDP (type 10)
# from 127.0.0.1 through the tunnel, 16 an anonymous network logon from 10.0.2.17


def documents() -> dict[str, dict[str, Any]]:
    return {"plink-4688": event(*PLINK_4688), "plink-sysmon": event(*PLINK_SYSMON),
            "atbroker-4688": event("DE_RDP_Tunnel_5156.evtx.jsonl", 13),
            **{f"logon-{n}": event(TUNNEL, n) for n in (13, 14, 16)}}


# (logsource, selection, the documents it must match)
CASES = [
    ("category: process_creation", "process.executable|endswith: '\\plink.exe'", {"plink-4688", "plink-sysmon"}),
    # an ECS name and a Sigma name in one selection: the Sigma name is still mapped (NewProcessName on 4688)
    ("category: process_creation", "process.executable|endswith: '\\plink.exe'\n    Image|endswith: '\\plink.exe'",
     {"plink-4688", "plink-sysmon"}),
    ("category: process_creation", "process.name: AtBroker.exe", {"atbroker-4688"}),
    ("service: security", "source.ip|cidr: 127.0.0.0/8\n    LogonType: 10", {"logon-14"}),
    ("service: security", "user.name: IEUser\n    event.code: '4624'", {"logon-13", "logon-14"}),
    ("service: security", "winlog.channel: security\n    winlog.event_data.LogonType: 3", {"logon-16"}),
    ("service: security", "source.ip: 10.0.2.17\n    user.domain: NT AUTHORITY", {"logon-16"}),
]


def rule(tmp_path: Path, logsource: str, selection: str) -> CompiledRule:
    path = tmp_path / "rule.yml"
    path.write_text(f"title: t\nlogsource: {{product: windows, {logsource}}}\ndetection:\n  sel:\n    {selection}\n"
                    "  condition: sel\n", encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    return ruleset.rules[0]


@pytest.mark.parametrize("logsource,selection,expected", CASES, ids=[c[1] for c in CASES])
def test_our_fields_pass_unchanged_on_real_events(tmp_path: Path, logsource: str, selection: str,
                                                  expected: set[str]) -> None:
    compiled = rule(tmp_path, logsource, selection)
    docs = documents()
    assert {name for name, doc in docs.items() if matches(compiled.query, doc)} == expected, compiled.query
    router = RuleRouter([compiled])  # the offline scan's path: routing and needles too
    assert {name for name, doc in docs.items() if router.matching(doc)} == expected


def test_sigma_names_are_still_mapped(tmp_path: Path) -> None:
    text = json.dumps(rule(tmp_path, "service: security", "LogonType: 10\n    EventID: 4624\n    message: x\n"
                                     "    process: y\n    messages: z").query)
    assert '"winlog.event_data.LogonType"' in text and '"winlog.event_id"' in text
    assert '"message"' in text  # a top-level field of ours
    assert '"winlog.event_data.process"' in text and '"winlog.event_data.messages"' in text  # Sigma names


@pytest.mark.parametrize("name,ours", [
    ("process.executable", True), ("source.ip", True), ("user.name", True), ("winlog.channel", True),
    ("event.code", True), ("winlog.event_data.Image", True), ("message", True), ("@timestamp", True),
    ("Image", False), ("process", False), ("messages", False), ("Data.Name", False), ("processes.x", False),
])
def test_which_names_are_ours(name: str, ours: bool) -> None:
    sources = logsources()
    assert sources.ours(name) is ours
    windows = SigmaLogSource(None, "windows", "security")
    assert sources.map_field(windows, name) == (name if ours else f"winlog.event_data.{name}")


def test_the_list_of_our_fields_is_the_events_template() -> None:
    properties = json.loads(TEMPLATE.read_text(encoding="utf-8"))["template"]["mappings"]["properties"]
    ecs = logsources().windows["ecs"]
    assert set(ecs["objects"]) == {k for k, v in properties.items() if "properties" in v or v.get("type") == "object"}
    assert set(ecs["fields"]) == {k for k, v in properties.items() if "properties" not in v
                                  and v.get("type") != "object"}
