"""Encoded attacks in the URIs network sensors log (Zeek http.log, TSV and JSON; Suricata EVE http
records) fire our web rules, on the node and offline (issue 10, item 6): the sensor pipelines
decode url.path and url.query as the web access pipelines do, keeping url.original as sent.

The Suricata alert is a real CrowdSec parser test line (CVE-2021-41773 traversal, `.%2e/`): it keeps
its decoded URI but is the IDS's verdict, not a web event, so web rules pass it by (the http record of
its request is what they count: tests/unit/test_sensor_alert_and_request.py). The Zeek and Suricata
http records follow the vendors' documented formats with sqlmap-style payloads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secmon.detect.sigma.load import load_rules
from tests.conftest import ROOT, free_port, run_cli, write_config

pytestmark = [pytest.mark.integration, pytest.mark.dataset]
SQLI, TRAVERSAL = "SQL injection attempt in a web request", "Path traversal attempt in a web request"
ZEEK_FIELDS = ("ts uid id.orig_h id.orig_p id.resp_h id.resp_p trans_depth method host uri referrer version user_agent "
               "origin request_body_len response_body_len status_code status_msg info_code info_msg tags username "
               "password proxied orig_fuids orig_filenames orig_mime_types resp_fuids resp_filenames resp_mime_types")


def zeek_tsv(uri: str, ts: float) -> str:
    values = [f"{ts:.6f}", "CMdzit1AMNsmfAIiQc", "192.168.4.76", "46378", "31.3.245.133", "80", "1", "GET",
              "portal.example.vn", uri, "-", "1.1", "sqlmap/1.4.7#stable (http://sqlmap.org)", "-", "0", "39", "200",
              "OK", "-", "-", "(empty)", "-", "-", "-", "-", "-", "-", "FEEsZS1w0Z0VJIb5x4", "-", "text/plain"]
    return "\t".join(values)


def zeek_json(uri: str, ts: float) -> str:
    return json.dumps({"_path": "http", "ts": ts, "uid": "CMdzit1AMNsmfAIiQc", "id.orig_h": "192.168.4.76",
                       "id.orig_p": 46378, "id.resp_h": "31.3.245.133", "id.resp_p": 80, "trans_depth": 1,
                       "method": "GET", "host": "portal.example.vn", "uri": uri, "version": "1.1",
                       "user_agent": "curl/7.47.0", "status_code": 404, "status_msg": "Not Found", "tags": []})


def suricata_http(url: str, stamp: str) -> str:
    return json.dumps({"timestamp": stamp, "flow_id": 1, "event_type": "http", "src_ip": "192.168.2.7",
                       "src_port": 1041, "dest_ip": "192.168.2.50", "dest_port": 80, "proto": "TCP",
                       "http": {"hostname": "portal.example.vn", "url": url, "http_user_agent": "sqlmap/1.4.7",
                                "http_method": "GET", "protocol": "HTTP/1.1", "status": 200, "length": 498}})


SQLI_URIS = ["/tin-tuc.php?id=1%27%20UNION%20SELECT%20username%2Cpassword%20FROM%20users--+-",
             "/tin-tuc.php?id=-1+union+all+select+1%2C%2540%2540version%2C3--+-"]  # the second double-encoded
TRAVERSAL_URIS = ["/cgi-bin/.%2e/.%2e/.%2e/.%2e/etc/passwd", "/download.php?file=..%252f..%252f..%252fetc%252fpasswd"]
PLAIN_URIS = ["/tin-tuc.php?id=12&page=2", "/search?q=rock+%26+roll"]


def inputs(tmp_path: Path, datasets: Path) -> dict[str, tuple[Path, dict[str, set[str]]]]:
    """source -> (file, url.original -> the attack rules it must fire)."""
    want = {**{u: {SQLI} for u in SQLI_URIS}, **{u: {TRAVERSAL} for u in TRAVERSAL_URIS},
            **{u: set() for u in PLAIN_URIS}}
    uris = list(want)
    zeek = tmp_path / "http.log"
    zeek.write_text("\n".join(["#separator \\x09", "#path\thttp", "#fields\t" + ZEEK_FIELDS.replace(" ", "\t")]
                              + [zeek_tsv(u, 1591367999.0 + n) for n, u in enumerate(uris)]) + "\n", encoding="utf-8")
    zeek_js = tmp_path / "http.json"
    zeek_js.write_text("\n".join(zeek_json(u, 1591367999.0 + n) for n, u in enumerate(uris)) + "\n", encoding="utf-8")
    crowdsec = (datasets / "crowdsec_parser_tests" / ".tests" / "suricata-logs-evelog" / "suricata-logs-evelog.log")
    alert = next(line for line in crowdsec.read_text(encoding="utf-8").splitlines() if '"url":"/cgi-bin/.%2e' in line)
    eve = tmp_path / "eve.json"
    eve.write_text("\n".join([alert] + [suricata_http(u, f"2022-07-11T06:10:{n:02d}.000000+0000")
                                        for n, u in enumerate(uris)]) + "\n", encoding="utf-8")
    return {"zeek": (zeek, want), "zeek-json": (zeek_js, want),
            "suricata-eve": (eve, {**want, json.loads(alert)["http"]["url"]: set()})}


def test_encoded_sensor_uris_fire_web_rules_on_the_node_and_offline(tmp_path, es, es_url, prefix, datasets) -> None:  # type: ignore[no-untyped-def]
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    ruleset = load_rules([ROOT / "rules" / "web"])
    attacks = [r for r in ruleset.rules if r.title in (SQLI, TRAVERSAL)]
    assert len(attacks) == 2, [r.title for r in ruleset.rules]
    for source, (path, want) in inputs(tmp_path, datasets).items():
        # the node: collected through the pipeline, matched by the rule's query
        code, out, err = run_cli("-c", config, "collect", str(path), "-a", "so-tttt", "-s", source, "--json")
        assert code == 0, err
        assert json.loads(out)["inputs"][0]["events"] == len(want), out
        es.indices.refresh(index=f"{prefix}-events-*")
        on_node: dict[str, set[str]] = {u: set() for u in want}
        for rule in attacks:
            query = {"bool": {"filter": [rule.query, {"term": {"observer.product": "Zeek" if "zeek" in source
                                                                else "Suricata"}}]}}
            for hit in es.search(index=f"{prefix}-events-*", query=query, size=100,
                                 source_includes=["url.original", "event.dataset"])["hits"]["hits"]:
                if hit["_source"]["event"]["dataset"].startswith(source.split("-")[0]):
                    on_node[hit["_source"]["url"]["original"]].add(rule.title)
        assert on_node == want, (source, on_node)
        # offline: the same file through the same pipeline, matched in-process
        code, out, err = run_cli("-c", config, "scan", "--input", str(path), "--source", source,
                                 "--rules", str(ROOT / "rules" / "web"), "--json")
        assert code == 0, err
        counts: dict[str, int] = {}
        for incident in json.loads(out)["incidents"]:  # one per rule and source address
            title = incident["finding"]["rule_title"]
            counts[title] = counts.get(title, 0) + incident["finding"]["count"]
        expected = {title: sum(title in rules for rules in want.values()) for title in (SQLI, TRAVERSAL)}
        assert {t: counts.get(t, 0) for t in (SQLI, TRAVERSAL)} == expected, (source, counts)
