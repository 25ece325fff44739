"""A scan on the real node with broken rule files beside a good one: the good rule runs and raises its
incident, each broken file is a failed rule in the scan's output and in its `scans` document."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli, write_config
from tests.unit.test_rule_files import BAD, GOOD

pytestmark = pytest.mark.integration


def test_a_cluster_scan_runs_the_good_rule_and_names_each_broken_file(tmp_path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(GOOD, rules / "good.yml")
    for name, (content, _, _) in BAD.items():
        (rules / name).write_bytes(content)
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    assert run_cli("-c", config, "setup")[0] == 0
    log = tmp_path / "auth.log"
    log.write_text("".join(f"Jun 14 15:16:{s:02d} combo sshd(pam_unix)[19939]: authentication failure; logname= "
                           f"uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4\n" for s in range(20)), encoding="utf-8")
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", "so-tttt", "-s", "linux-auth", "--year", "2005")
    assert code == 0, err
    es.indices.refresh(index=f"{prefix}-events-*")
    code, out, err = run_cli("-c", config, "scan", "--from", "2005-06-14", "--to", "2005-06-15", "--rules", str(rules),
                             "--no-deliver", "--json")
    assert code == 4 and "rules failed" in err, err  # the good rule ran; the broken files make the exit code say so
    summary = json.loads(out)
    assert [i["finding"]["rule_title"] for i in summary["incidents"]] == ["SSH password brute force"]
    assert {Path(where.split(":")[0]).name for where, _ in summary["rules_failed"]} == set(BAD)
    es.indices.refresh(index=f"{prefix}-scans")
    (stored,) = [h["_source"] for h in es.search(index=f"{prefix}-scans")["hits"]["hits"]]
    assert stored["event"]["outcome"] == "failure"  # a scan with broken rules is not a clean one
    assert stored["secmon"]["rules_failed"] == len(BAD)
