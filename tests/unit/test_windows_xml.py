"""Windows event XML reads into the same document as the EVTX JSON of the same event, and hostile
XML (entity declarations, deep nesting, the wrong root) is a dead letter, never a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from secmon.model import DeadLetter, Event
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import load_pipelines

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = load_pipelines([ROOT / "pipelines"])

EVTX = {"Event": {
    "System": {"Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing",
                                            "Guid": "{54849625-5478-4994-a5ba-3e3b0328c30d}"}},
               "EventID": 4771, "TimeCreated": {"#attributes": {"SystemTime": "2026-11-28T02:00:00.123456Z"}},
               "EventRecordID": 77, "Channel": "Security", "Computer": "DC01.sotttt.local",
               "Security": {"#attributes": {"UserID": "S-1-5-18"}}},
    "EventData": {"TargetUserName": "tranthib", "ServiceName": "krbtgt/SOTTTT.LOCAL", "Status": "0x18",
                  "PreAuthType": "2", "IpAddress": "::ffff:10.20.30.45", "IpPort": "50213"}}}
XML = ("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
       "<Provider Name='Microsoft-Windows-Security-Auditing' Guid='{54849625-5478-4994-a5ba-3e3b0328c30d}'/>"
       "<EventID>4771</EventID><TimeCreated SystemTime='2026-11-28T02:00:00.123456Z'/><EventRecordID>77</EventRecordID>"
       "<Channel>Security</Channel><Computer>DC01.sotttt.local</Computer><Security UserID='S-1-5-18'/></System>"
       "<EventData><Data Name='TargetUserName'>tranthib</Data><Data Name='ServiceName'>krbtgt/SOTTTT.LOCAL</Data>"
       "<Data Name='Status'>0x18</Data><Data Name='PreAuthType'>2</Data><Data Name='IpAddress'>::ffff:10.20.30.45</Data>"
       "<Data Name='IpPort'>50213</Data></EventData></Event>")


def normalize(pipeline_id: str, line: str) -> Event | DeadLetter:
    normalizer = Normalizer(PIPELINES[pipeline_id], agency="a", timezone="UTC", source="s",
                            now=datetime(2026, 11, 30, tzinfo=UTC))
    result = normalizer.normalize(line, 0, "s:0")
    assert isinstance(result, (Event, DeadLetter)), result
    return result


def test_xml_and_evtx_json_of_one_event_give_the_same_document() -> None:
    from_xml = normalize("windows-xml", XML)
    from_json = normalize("windows-evtx", json.dumps(EVTX))
    assert isinstance(from_xml, Event) and isinstance(from_json, Event)
    for doc in (from_xml.doc, from_json.doc):
        doc["event"].pop("original")
    assert from_xml.doc == from_json.doc
    assert from_xml.doc["winlog"]["event_data"]["Status"] == "0x18"
    assert from_xml.doc["source"]["ip"] == "10.20.30.45"


def test_hostile_xml_is_a_dead_letter_with_its_reason() -> None:
    laughs = ('<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">' + "".join(f'<!ENTITY a{i} "{"&a;" * 10}">' for i in range(8))
              + ']><Event><System><Computer>&a7;</Computer></System></Event>')
    external = '<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><Event><System><Computer>&x;</Computer></System></Event>'
    cases = {
        laughs: "DOCTYPE or ENTITY",
        external: "DOCTYPE or ENTITY",
        "<Event>" + "<a>" * 20_000 + "</a>" * 20_000 + "</Event>": "no <System>",
        "<Event><System><EventID>1</EventID>": "not well-formed XML",
        "<Event><System><EventID>1</EventID><Computer>\r\n\x1b[31mx</Computer></System></Event>": "not well-formed XML",
        "<Eventlog><System/></Eventlog>": "does not match",
    }
    for line, reason in cases.items():
        result = normalize("windows-xml", line)
        assert isinstance(result, DeadLetter), line[:80]
        assert reason in result.reason, (reason, result.reason)
