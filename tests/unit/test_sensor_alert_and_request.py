"""One request seen by a sensor twice (an IDS verdict and the request record) counts once per rule.

Suricata writes an `alert` record and an `http` record for the same transaction (same flow_id and
tx_id) when both eve-log types are on, as in its default suricata.yaml. Both were web events, so a web
rule folded them into one incident of count 2 for one request. The alert is now an intrusion_detection
event, not a web event: web rules count the http record, the Suricata rules the alert, one each.

Zeek never had the problem: notice.log carries no URI, so its notices and the http.log record of
the same request meet different rules and land in different incidents, one event each.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, run_cli, write_config

HTTP = {"hostname": "1.2.3.4", "url": "/cgi-bin/.%2e/.%2e/bin/sh", "http_method": "POST", "status": 200,
        "http_user_agent": "curl/7.79.1"}
FLOW = {"flow_id": 1684596746908921, "in_iface": "eth0", "src_ip": "1.2.3.7", "src_port": 36288,
        "dest_ip": "10.0.0.8", "dest_port": 80, "proto": "TCP", "tx_id": 0}
# the alert of pipelines/suricata-eve.yml's example (a CrowdSec test line), and its transaction's http record
ALERT = {"timestamp": "2022-07-11T06:09:52.602489+0000", "event_type": "alert", **FLOW, "app_proto": "http",
         "alert": {"action": "allowed", "gid": 1, "signature_id": 2034125, "rev": 4,
                   "signature": "ET EXPLOIT Apache HTTP Server 2.4.49 - Path Traversal Attempt (CVE-2021-41773) M2",
                   "category": "Attempted Administrator Privilege Gain", "severity": 1}, "http": HTTP}
RECORD = {"timestamp": "2022-07-11T06:09:52.603120+0000", "event_type": "http", **FLOW,
          "http": {**HTTP, "protocol": "HTTP/1.1", "length": 0}}
# Zeek's http.log record of an SQL-injection request and the notice its SQL-injection script raised for it
ZEEK = [{"_path": "http", "ts": 1591367999.43, "uid": "CMdzit1AMNsmfAIiQc", "id.orig_h": "192.168.4.76",
         "id.orig_p": 46378, "id.resp_h": "31.3.245.133", "id.resp_p": 80, "trans_depth": 1, "method": "GET",
         "host": "portal.example.vn", "uri": "/tin-tuc.php?id=1%27%20UNION%20SELECT%20username%2Cpassword%20FROM%20users--+-",
         "version": "1.1", "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "status_code": 200, "tags": []},
        {"_path": "notice", "ts": 1591367999.44, "note": "HTTP::SQL_Injection_Attacker",
         "msg": "An SQL injection attacker was discovered!", "src": "192.168.4.76", "actions": ["Notice::ACTION_LOG"]}]


def counts(tmp_path: Path, records: list[dict[str, object]], source: str) -> dict[str, int]:
    """Offline scan of the records with the web and network rules: rule title -> events counted."""
    config = write_config(tmp_path / "secmon.yml", "http://127.0.0.1:9", "unused", 25)  # offline: no node
    log = tmp_path / f"{source}.json"
    log.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    code, out, err = run_cli("-c", str(config), "scan", "--input", str(log), "--source", source,
                             "--rules", str(ROOT / "rules" / "web"), "--rules", str(ROOT / "rules" / "network"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["inputs"][0]["events"] == len(records), summary["inputs"]
    found: dict[str, int] = {}
    for incident in summary["incidents"]:
        title = incident["finding"]["rule_title"]
        found[title] = found.get(title, 0) + incident["finding"]["count"]
    return found


def test_a_suricata_alert_and_the_http_record_of_its_request_count_once_each(tmp_path: Path) -> None:
    assert counts(tmp_path, [ALERT, RECORD], "suricata-eve") == {
        "Path traversal attempt in a web request": 1, "Suricata high-severity alert": 1}
    # the http record alone is what the web rule reads
    assert counts(tmp_path, [RECORD], "suricata-eve") == {"Path traversal attempt in a web request": 1}


def test_a_zeek_notice_and_the_http_record_of_its_request_count_once_each(tmp_path: Path) -> None:
    assert counts(tmp_path, ZEEK, "zeek-json") == {
        "SQL injection attempt in a web request": 1, "Zeek notice: scan or SSH password guessing": 1}
