"""Security-audit mappings and channel case on the real node: the same rules and events as
tests/unit/test_sigma_audit.py, indexed with secmon's events template; the node must return
exactly what the in-process matcher says, which is what the unit tests expect."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest

from secmon.detect.sigma.load import CompiledRule, load_rule_file
from secmon.detect.inprocess.match import matches
from tests.unit.test_sigma_audit import PLINK_4688, PLINK_SYSMON, RUN, SECLOGON, SERVICE, USER_RUN, event

pytestmark = [pytest.mark.integration, pytest.mark.dataset]


def documents() -> dict[str, dict[str, Any]]:
    docs = {"plink-4688": event(*PLINK_4688), "plink-sysmon": event(*PLINK_SYSMON),
            "atbroker-4688": event("DE_RDP_Tunnel_5156.evtx.jsonl", 13),
            "wfp-5156": event("DE_1102_security_log_cleared.evtx.jsonl", 1),
            "reg-run": copy.deepcopy(RUN), "reg-service": copy.deepcopy(SERVICE), "reg-user": copy.deepcopy(USER_RUN)}
    docs.update({f"seclogon-{n}": event(SECLOGON, n) for n in (0, 3, 7, 10, 11, 14)})
    for name in ("plink-4688", "plink-sysmon"):  # the channel as some shippers write it
        variant = copy.deepcopy(docs[name])
        variant["winlog"]["channel"] = variant["winlog"]["channel"].lower()
        docs[f"{name}-lower"] = variant
    for doc in docs.values():
        doc["organization"] = {"id": "audit"}
    return docs


@pytest.fixture
def index(windows_indices: dict[str, str]) -> str:
    """The documents above on the node (tests/integration/conftest.py indexes them with the ECS module's)."""
    return windows_indices["audit"]


def rule(tmp_path: Path, detection: str, category: str) -> CompiledRule:
    path = tmp_path / f"{uuid.uuid4().hex}.yml"
    path.write_text(f"title: t\nlogsource: {{product: windows, category: {category}}}\ndetection:\n"
                    f"  sel:\n    {detection}\n  condition: sel\n", encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    return ruleset.rules[0]


CASES = [
    ("process_creation", "Image|endswith: '\\plink.exe'",
     {"plink-4688", "plink-sysmon", "plink-4688-lower", "plink-sysmon-lower"}),
    ("process_creation", "User|contains: 'AUTHORI'", {"seclogon-3", "seclogon-11", "seclogon-14", "atbroker-4688"}),
    ("process_creation", "User|endswith: '\\IEUser'", {"seclogon-0", "seclogon-7", "seclogon-10", "plink-sysmon",
                                                       "plink-sysmon-lower"}),
    ("process_creation", "ParentUser|contains: 'AUTHORI'", {"seclogon-3", "seclogon-7", "seclogon-14",
                                                            "atbroker-4688"}),
    ("process_creation", "IntegrityLevel: System", {"seclogon-3", "seclogon-11", "seclogon-14"}),
    ("process_creation", "ParentImage|endswith: '\\lsass.exe'", {"seclogon-7", "seclogon-11"}),
    ("process_creation", "ProcessId: 6072", {"seclogon-7"}),
    ("network_connection", "DestinationIp|cidr: 'ff00::/8'", {"wfp-5156"}),
    ("network_connection", "Initiated: 'true'", {"wfp-5156"}),
    ("registry_set", "TargetObject|contains: '\\CurrentVersion\\Run\\'", {"reg-run", "reg-user"}),
    ("registry_set", "TargetObject|startswith: 'HKLM\\System\\CurrentControlSet\\Services\\'", {"reg-service"}),
    ("registry_set", "TargetObject|endswith: '\\Run\\evil'", {"reg-run"}),
]


@pytest.mark.parametrize("category,detection,expected", CASES, ids=[c[1] for c in CASES])
def test_node_and_in_process_agree(es, index: str, tmp_path: Path, category: str, detection: str,  # type: ignore[no-untyped-def]
                                   expected: set[str]) -> None:
    compiled = rule(tmp_path, detection, category)
    response = es.search(index=index, query=compiled.query, size=100, _source=False)
    on_node = {hit["_id"] for hit in response["hits"]["hits"]}
    local = {ident for ident, doc in documents().items() if matches(compiled.query, doc)}
    assert on_node == local == expected


def test_a_community_process_creation_rule_on_4688_and_sysmon_1(es, index: str, datasets: Path) -> None:  # type: ignore[no-untyped-def]
    path = (datasets / "sigma_rules" / "rules-threat-hunting" / "windows" / "process_creation"
            / "proc_creation_win_susp_exfil_and_tunneling_tool_execution.yml")
    (tunnel,) = load_rule_file(path).rules
    response = es.search(index=index, query=tunnel.query, size=100, _source=False)
    assert {hit["_id"] for hit in response["hits"]["hits"]} == {
        "plink-4688", "plink-sysmon", "plink-4688-lower", "plink-sysmon-lower"}
