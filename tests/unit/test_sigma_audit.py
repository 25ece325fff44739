"""Sysmon-named Sigma rules on Windows Security-audit events, in-process (audit.py, windows.yml `audit:`).

Real events from EVTX-ATTACK-SAMPLES where they exist (4688 with and without Target accounts,
Sysmon 1, 5156); synthetic 4657 events (the samples hold none). The pattern algebra the
translations rest on (splitting `DOMAIN\\name`, stripping a hive prefix) is checked against
brute force with hypothesis. tests/integration/test_sigma_audit_cluster.py runs the same rules
on the node.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sigma.types import SpecialChars

from secmon.detect.sigma.audit import constant_matches, derive, split
from secmon.detect.sigma.compile import Tokens
from secmon.detect.sigma.load import CompiledRule, load_rule_file
from secmon.detect.inprocess.match import matches
from secmon.detect.inprocess.router import RuleRouter
from secmon.normalize.winlog import flatten_evtx

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "evtx_attack_samples" / "jsonl"
STAR, ONE = SpecialChars.WILDCARD_MULTI, SpecialChars.WILDCARD_SINGLE


# --- the pattern algebra ----------------------------------------------------------------------

tokens_strategy = st.lists(st.sampled_from(["a", "B", "\\", "x", STAR, ONE]), max_size=7).map(tuple)
text = st.text(alphabet="aAbBx\\", max_size=6)


@settings(max_examples=400, deadline=None)
@given(tokens_strategy, text, text, st.booleans(), st.booleans())
def test_split_is_exact(pattern: Tokens, left: str, right: str, insensitive: bool, left_may_hold_sep: bool) -> None:
    right = right.replace("\\", "")
    if not left_may_hold_sep:
        left = left.replace("\\", "")
    whole = constant_matches(pattern, left + "\\" + right, insensitive)
    parts = any(constant_matches(a, left, insensitive) and constant_matches(b, right, insensitive)
                for a, b in split(pattern, "\\", left_may_hold_sep))
    assert whole == parts


@settings(max_examples=400, deadline=None)
@given(tokens_strategy, st.text(alphabet="aAB\\", max_size=4), text, st.booleans())
def test_derive_is_exact(pattern: Tokens, prefix: str, rest: str, insensitive: bool) -> None:
    assert constant_matches(pattern, prefix + rest, insensitive) == any(
        constant_matches(q, rest, insensitive) for q in derive(pattern, prefix, insensitive))


# --- rules and events ---------------------------------------------------------------------------

def rule(tmp_path: Path, detection: str, category: str = "process_creation") -> CompiledRule:
    path = tmp_path / "rule.yml"
    path.write_text(f"title: t\nlogsource: {{product: windows, category: {category}}}\ndetection:\n{detection}\n",
                    encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    return ruleset.rules[0]


@lru_cache(maxsize=None)
def sample(name: str, line: int) -> str:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is absent (../shared/datasets/evtx_attack_samples)")
    path = next(SAMPLES.rglob(name))
    return path.read_text(encoding="utf-8").splitlines()[line]


def event(name: str, line: int) -> dict[str, Any]:
    return flatten_evtx(json.loads(sample(name, line)))


PLINK_4688 = ("DE_RDP_Tunnel_5156.evtx.jsonl", 15)  # Security 4688, no command line auditing
PLINK_SYSMON = ("DE_sysmon-3-rdp-tun.evtx.jsonl", 2)  # Sysmon 1 of the same tunnel
SECLOGON = "tutto_malseclogon.evtx.jsonl"  # 4688 with Target accounts: lines 0, 3, 7, 10, 11, 14


def test_a_process_creation_rule_fires_on_4688_and_on_sysmon_1(datasets: Path) -> None:
    corpus = datasets / "sigma_rules" / "rules-threat-hunting" / "windows" / "process_creation"
    ruleset = load_rule_file(corpus / "proc_creation_win_susp_exfil_and_tunneling_tool_execution.yml")
    (tunnel,) = ruleset.rules
    security, sysmon = event(*PLINK_4688), event(*PLINK_SYSMON)
    assert security["winlog"]["event_data"]["NewProcessName"].endswith("\\plink.exe")
    assert matches(tunnel.query, security) and matches(tunnel.query, sysmon)
    router = RuleRouter([tunnel])  # the offline scan's path: routing and needles too
    assert router.matching(security) == [tunnel] and router.matching(sysmon) == [tunnel]
    other = event("DE_RDP_Tunnel_5156.evtx.jsonl", 13)  # AtBroker.exe
    assert not matches(tunnel.query, other)


def test_channel_is_compared_case_insensitively(tmp_path: Path) -> None:
    image = rule(tmp_path, "  sel:\n    Image|endswith: '\\plink.exe'\n  condition: sel")
    security, sysmon = event(*PLINK_4688), event(*PLINK_SYSMON)
    security["winlog"]["channel"] = "security"
    sysmon["winlog"]["channel"] = "MICROSOFT-WINDOWS-SYSMON/OPERATIONAL"
    router = RuleRouter([image])
    assert router.matching(security) == [image] and router.matching(sysmon) == [image]
    assert matches(image.query, security) and matches(image.query, sysmon)


@pytest.mark.parametrize("detection,lines", [
    # The new process's account: Target when named, else Subject; SYSTEM by SID (S-1-5-18).
    ("User|contains: 'AUTHORI'", [3, 11, 14]),  # SYSTEM (subject), SYSTEM (target), LOCAL SERVICE (target)
    ("User|endswith: '\\IEUser'", [0, 7, 10]),
    ("User: 'MSEDGEWIN10\\IEUser'", [0, 7, 10]),
    ("User|startswith: 'NT AUTHORITY\\SYS'", [3, 11]),
    ("ParentUser|contains: 'AUTHORI'", [3, 7, 14]),  # the creator: Subject
    ("IntegrityLevel: High", [0, 7, 10]),
    ("IntegrityLevel: System", [3, 11, 14]),
    ("ParentImage|endswith: '\\lsass.exe'", [7, 11]),
    ("Image|endswith: '\\MalSeclogon.exe'", [0, 7]),
    ("ProcessId: 6072", [7]),  # NewProcessId 0x17b8
])
def test_4688_fields_as_sysmon_names_them(tmp_path: Path, detection: str, lines: list[int]) -> None:
    compiled = rule(tmp_path, f"  sel:\n    {detection}\n  condition: sel")
    fired = [n for n in (0, 3, 7, 10, 11, 14) if matches(compiled.query, event(SECLOGON, n))]
    assert fired == lines, compiled.query


def test_a_value_that_does_not_translate_leaves_that_event_kind_out_with_a_note(tmp_path: Path) -> None:
    compiled = rule(tmp_path, "  sel:\n    User|re: '.*admin.*'\n  condition: sel")
    assert any("Security 4688" in note and "User" in note for note in compiled.notes)
    sysmon = event(*PLINK_SYSMON)
    sysmon["winlog"]["event_data"]["User"] = "PC01\\admin"
    assert matches(compiled.query, sysmon)


def test_network_connection_on_5156(tmp_path: Path) -> None:
    outbound = rule(tmp_path, "  sel:\n    Initiated: 'true'\n    DestinationIp|cidr: 'ff00::/8'\n"
                              "    DestinationPort: 547\n    Protocol: udp\n    Image|endswith: '\\svchost.exe'\n"
                              "  condition: sel", "network_connection")
    inbound = rule(tmp_path, "  sel:\n    Initiated: 'false'\n  condition: sel", "network_connection")
    wfp = event("DE_1102_security_log_cleared.evtx.jsonl", 1)
    assert wfp["winlog"]["event_id"] in (5156, "5156")
    assert matches(outbound.query, wfp) and not matches(inbound.query, wfp)


def registry_event(key: str, value: str, operation: str = "%%1905") -> dict[str, Any]:
    return {"event": {"module": "windows"},
            "winlog": {"channel": "Security", "event_id": "4657",
                       "event_data": {"ObjectName": key, "ObjectValueName": value, "OperationType": operation,
                                      "ProcessName": "C:\\Windows\\regedit.exe", "NewValue": "evil.exe"}}}


RUN = registry_event("\\REGISTRY\\MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run", "evil")
SERVICE = registry_event("\\REGISTRY\\MACHINE\\SYSTEM\\ControlSet001\\Services\\Evil", "ImagePath")
USER_RUN = registry_event("\\REGISTRY\\USER\\S-1-5-21-1\\Software\\Microsoft\\Windows\\CurrentVersion\\Run", "x")


@pytest.mark.parametrize("detection,expected", [
    ("TargetObject|contains: '\\CurrentVersion\\Run\\'", [RUN, USER_RUN]),
    ("TargetObject|endswith: '\\CurrentVersion\\Run\\evil'", [RUN]),
    ("TargetObject|startswith: 'HKLM\\SOFTWARE\\Microsoft\\'", [RUN]),
    ("TargetObject|startswith: 'HKU\\'", [USER_RUN]),
    ("TargetObject|contains: 'HKLM\\System\\CurrentControlSet\\Services\\'", [SERVICE]),
    ("TargetObject|endswith: '\\ImagePath'", [SERVICE]),
    ("TargetObject: 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\Evil\\ImagePath'", [SERVICE]),
    ("TargetObject|contains: 'REGISTRY'", []),  # Sysmon abbreviates the hive: no \\REGISTRY\\ in its text
    ("Details: evil.exe", [RUN, SERVICE, USER_RUN]),
    ("Image|endswith: '\\regedit.exe'", [RUN, SERVICE, USER_RUN]),
])
def test_registry_on_4657(tmp_path: Path, detection: str, expected: list[dict[str, Any]]) -> None:
    compiled = rule(tmp_path, f"  sel:\n    {detection}\n  condition: sel", "registry_set")
    assert [e for e in (RUN, SERVICE, USER_RUN) if matches(compiled.query, e)] == expected
    deleted = registry_event(RUN["winlog"]["event_data"]["ObjectName"], "evil", "%%1906")
    assert not matches(compiled.query, deleted)  # registry_set: values set, not deleted


def test_audit_fields_name_every_field_the_security_variants_read(tmp_path: Path) -> None:
    # What the events template must map for these rules to match Security events on the node
    # (the in-process matcher reads any field): Logsources.audit_fields() lists it.
    from secmon.detect.sigma.compile import query_fields
    from secmon.detect.sigma.pipeline import logsources

    tables = logsources().windows["audit"]
    categories = {"process_creation": "process_creation", "process_termination": "process_termination",
                  "network_connection": "network_connection", "file_access": "file_access", "registry": "registry_set"}
    listed = set(logsources().audit_fields())
    for table, category in categories.items():
        selection = "\n".join(f"    {name}: '1'" for name in tables[table])
        compiled = rule(tmp_path, f"  sel:\n{selection}\n  condition: sel", category)
        sysmon_names = {f"winlog.event_data.{name}" for name in tables[table]}
        read = {f for f in query_fields(compiled.query) if f.startswith("winlog.event_data.")}
        assert read - sysmon_names <= listed, (table, sorted(read - sysmon_names - listed))


def test_fieldref_on_windows_compares_the_mapped_fields(tmp_path: Path) -> None:
    # pySigma leaves a |fieldref item's field unmapped (`User`); it must still mean the event's field.
    from secmon.detect.inprocess.examples import fires

    compiled = rule(tmp_path, "  sel:\n    Image|endswith: '\\plink.exe'\n  same:\n    User|fieldref: ParentUser\n"
                              "  condition: sel and not same")
    sysmon = event(*PLINK_SYSMON)
    sysmon["winlog"]["event_data"]["ParentUser"] = "pc01\\ieuser"
    assert not fires(compiled, sysmon)
    sysmon["winlog"]["event_data"]["ParentUser"] = "PC01\\admin"
    assert fires(compiled, sysmon)
    assert any("Security 4688" in note for note in compiled.notes)  # not translated there: said, not guessed
