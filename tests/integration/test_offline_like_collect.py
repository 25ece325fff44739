"""Offline EVTX is collect's EVTX (issue 10 item 8): the same records become the same documents, under
the same ids, through the same pipeline (pipelines/windows-evtx.yml), so a rule on `event.action`
fires offline as it does on the cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from secmon.service.offline import OfflineJob, _Reader
from tests.conftest import ROOT, free_port, run_cli, write_config

FILES = ("Lateral Movement/LM_WMI_4624_4688_TargetHost.evtx", "Execution/exec_sysmon_1_ftp.evtx")
# A Windows rule may name the ECS fields the pipeline sets: they pass the Windows field mapping unchanged.
RULE = """\
title: Logon seen by its ECS action
id: 6d0f0a48-1d55-4c38-9f0b-5a8e2f3c1d01
logsource: {product: windows, service: security}
detection:
  logon:
    event.action: logged-in
  condition: logon
level: low
"""


def test_offline_evtx_documents_equal_collected_ones(tmp_path, es, es_url, prefix, datasets) -> None:  # type: ignore[no-untyped-def]
    paths = [datasets / "evtx_attack_samples" / "evtx" / name for name in FILES]
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    code, out, err = run_cli("-c", config, "collect", *map(str, paths), "-a", "so-tttt", "-s", "windows-evtx")
    assert code == 0, err
    es.indices.refresh(index=f"{prefix}-events-*")
    stored = {hit["_id"]: hit["_source"] for hit in es.search(index=f"{prefix}-events-*", size=1000,
                                                              query={"match_all": {}})["hits"]["hits"]}
    job = OfflineJob(tuple(paths), (), "so-tttt", "Asia/Ho_Chi_Minh", (ROOT / "pipelines",))
    offline = dict(_Reader(job, datetime.now(UTC)).documents())
    assert offline and set(offline) == set(stored)
    actions = {ident: doc.get("event", {}).get("action") for ident, doc in offline.items()}
    assert actions == {ident: doc.get("event", {}).get("action") for ident, doc in stored.items()}
    assert {"logged-in", "created-process", "process-created"} <= set(actions.values())
    for ident, doc in offline.items():  # the whole document, not only the action (event.ingested is the store's)
        kept = {k: v for k, v in stored[ident].items() if k != "event"}
        assert {k: v for k, v in doc.items() if k != "event"} == kept, ident
        assert {k: v for k, v in doc["event"].items() if k != "ingested"} == \
               {k: v for k, v in stored[ident]["event"].items() if k != "ingested"}, ident
    # A rule on event.action fires offline on exactly the events the pipeline names so.
    rule = tmp_path / "logon.yml"
    rule.write_text(RULE, encoding="utf-8")
    code, out, err = run_cli("scan", "--input", str(paths[0]), "--rules", str(rule), "--json")
    assert code == 0, err
    found = json.loads(out)
    assert sum(i["finding"]["count"] for i in found["incidents"]) == sum(a == "logged-in" for a in actions.values())
    assert found["inputs"][0]["reader"] == "evtx, windows-evtx"


def test_the_agency_timezone_reads_local_times(tmp_path, es_url) -> None:  # type: ignore[no-untyped-def]
    """Local times without an offset are the agency's (config), not a fixed zone."""
    log = tmp_path / "auth.log"
    log.write_text("Jun 14 15:16:01 combo sshd[1]: Failed password for root from 218.188.2.4 port 4222 ssh2\n")
    config = write_config(tmp_path / "secmon.yml", es_url, "unused", free_port())
    text = config.read_text(encoding="utf-8").replace("  - id: portal\n", "  - id: portal\n    timezone: Europe/Paris\n")
    config.write_text(text, encoding="utf-8")
    rule = tmp_path / "r.yml"
    rule.write_text(RULE.replace("product: windows, service: security", "product: linux, service: sshd")
                    .replace("event.action: logged-in", "event.outcome: failure"), encoding="utf-8")
    times = {}
    for agency in ("so-tttt", "portal"):
        code, out, err = run_cli("-c", str(config), "scan", "--input", str(log), "--source", "linux-auth",
                                 "--agency", agency, "--rules", str(rule), "--json")
        assert code == 0, err
        times[agency] = json.loads(out)["incidents"][0]["finding"]["first_seen"]
    assert times["so-tttt"].endswith("T08:16:01+00:00") and times["portal"].endswith("T13:16:01+00:00"), times
