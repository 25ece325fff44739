"""Windows records -> the contract's winlog.* + ECS document, on both JSON dialects and real data."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from secmon.normalize.winlog import dataset_of, flatten_evtx, flatten_winlogbeat_like

SYSTEM = {"Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing", "Guid": "{54849625}"}},
          "EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 4625}, "EventRecordID": 42,
          "TimeCreated": {"#attributes": {"SystemTime": "2019-03-19T23:34:25.894341Z"}},
          "Channel": "Security", "Computer": "PC01.example.corp"}


def test_evtx_event_data_and_ecs() -> None:
    doc = flatten_evtx({"Event": {"System": SYSTEM, "EventData": {
        "TargetUserName": "admin", "TargetDomainName": "EXAMPLE", "IpAddress": "10.1.2.3", "IpPort": "51234",
        "LogonType": 3, "Elevated": True, "Empty": None, "Threat Name": "EICAR"}}})
    assert doc["@timestamp"] == "2019-03-19T23:34:25.894341Z"
    assert doc["winlog"]["event_id"] == "4625"  # {"#text": N} form, as a string
    assert doc["winlog"]["record_id"] == "42"
    data = doc["winlog"]["event_data"]
    assert data["LogonType"] == "3" and data["Elevated"] == "true" and "Empty" not in data
    assert data["ThreatName"] == "EICAR"  # spaces removed from names
    assert doc["event"]["code"] == "4625" and doc["event"]["dataset"] == "windows.security"
    assert doc["host"]["name"] == "PC01.example.corp"
    assert doc["user"] == {"name": "admin", "domain": "EXAMPLE"}
    assert doc["source"] == {"ip": "10.1.2.3", "port": 51234}
    assert "organization" not in doc and "original" not in doc["event"]


def test_evtx_user_data_unnamed_data_and_sysmon_process() -> None:
    system = {**SYSTEM, "EventID": 104, "Channel": "System"}
    doc = flatten_evtx({"Event": {"System": system, "UserData": {"LogFileCleared": {
        "#attributes": {"xmlns": "x"}, "SubjectUserName": "user01", "Channel": "System"}}}})
    assert doc["winlog"]["user_data"] == {"SubjectUserName": "user01", "Channel": "System"}
    doc = flatten_evtx({"Event": {"System": system, "EventData": {"Data": {"#text": ["a", "0"]}, "Binary": None}}})
    assert doc["winlog"]["event_data"] == {"param1": "a", "param2": "0"}
    sysmon = {**SYSTEM, "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational"}
    doc = flatten_evtx({"System": sysmon, "EventData": {
        "Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami", "ProcessId": 4460,
        "ParentImage": "C:\\Windows\\explorer.exe", "User": "PC01\\bob"}})
    assert doc["event"]["dataset"] == "windows.sysmon_operational"
    assert doc["process"] == {"executable": "C:\\Windows\\System32\\cmd.exe", "name": "cmd.exe",
                              "command_line": "cmd /c whoami", "pid": 4460,
                              "parent": {"executable": "C:\\Windows\\explorer.exe"}}
    assert doc["user"] == {"domain": "PC01", "name": "bob"}


@pytest.mark.parametrize("channel,dataset", [
    ("Microsoft-Windows-PowerShell/Operational", "windows.powershell_operational"),
    ("Windows PowerShell", "windows.powershell"),
    ("Microsoft-Windows-Windows Defender/Operational", "windows.microsoft-windows-windows_defender_operational"),
])
def test_datasets(channel: str, dataset: str) -> None:
    assert dataset_of(channel) == dataset


def test_winlogbeat_like_dialect() -> None:
    doc = flatten_winlogbeat_like({
        "EventID": 4799, "Channel": "Security", "Hostname": "WORKSTATION5", "TimeCreated": "2020-10-19 12:28:36.069",
        "SourceName": "Microsoft-Windows-Security-Auditing", "Message": "A group was enumerated.",
        "TargetUserName": "Backup Operators", "CallerProcessId": "0x1410", "RecordNumber": 7})
    assert doc["@timestamp"] == "2020-10-19T12:28:36.069000Z"
    assert doc["winlog"]["event_id"] == "4799" and doc["winlog"]["provider_name"].endswith("Auditing")
    assert doc["winlog"]["event_data"] == {"TargetUserName": "Backup Operators", "CallerProcessId": "0x1410"}
    assert doc["message"] == "A group was enumerated."


def test_every_evtx_attack_sample_flattens(datasets: Path) -> None:
    count = 0
    for path in sorted((datasets / "evtx_attack_samples" / "jsonl").rglob("*.jsonl")):
        for line in path.open(encoding="utf-8"):
            doc = flatten_evtx(json.loads(line))
            assert doc["@timestamp"].endswith("Z") and doc["winlog"]["event_id"].isdigit(), (path, line[:200])
            assert all(isinstance(v, (str, list)) for v in doc["winlog"].get("event_data", {}).values())
            count += 1
    assert count == 8255


def test_otrf_windows_records_flatten(datasets: Path) -> None:
    archive = datasets / "otrf_fixtures" / "datasets" / "atomic" / "windows" / "credential_access" / "host" / \
        "cmd_sam_copy_esentutl.zip"
    with zipfile.ZipFile(archive) as bundle, bundle.open(bundle.namelist()[0]) as handle:
        docs = [flatten_winlogbeat_like(json.loads(line)) for line in handle]
    assert len(docs) == 915
    assert {d["winlog"]["channel"] for d in docs} >= {"Security", "Microsoft-Windows-Sysmon/Operational"}
    assert all(d["host"]["name"] == "WORKSTATION5" for d in docs)
