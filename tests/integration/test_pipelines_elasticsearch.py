"""Every pipeline's events go into one agency's real indices side by side, and Elasticsearch
accepts them all: no mapping conflict between sources (an `ip` that is not an IP, a field that
is an object in one source and a string in another) turns an event into a rejection."""

from __future__ import annotations

import gzip
import itertools
import json
import zipfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import load_pipelines
from tests.conftest import run_cli, write_config

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = load_pipelines([ROOT / "pipelines"])
SAMPLE = 200  # real lines per source: enough variety, a small suite cost


def _head(path: Path, n: int = SAMPLE) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:  # type: ignore[operator]
        return [line.rstrip("\n") for line in itertools.islice(handle, n)]


def _otrf(datasets: Path) -> list[str]:
    archive = next(iter(sorted((datasets / "otrf_fixtures/datasets/atomic/windows").rglob("*.zip"))))
    with zipfile.ZipFile(archive) as bundle:
        name = next(n for n in bundle.namelist() if n.endswith(".json"))
        return bundle.read(name).decode("utf-8", "replace").splitlines()[:SAMPLE]


def real_lines(datasets: Path) -> dict[str, list[str]]:
    crowdsec = datasets / "crowdsec_parser_tests/.tests"
    evtx = sorted((datasets / "evtx_attack_samples/jsonl").glob("*/*.jsonl"))
    return {
        "linux-auth": _head(datasets / "loghub_linux_full/Linux/Linux.log"),
        "syslog": _head(datasets / "loghub_2k/Linux/Linux_2k.log"),
        "apache-access": _head(datasets / "web_scanner_accesslogs/acunetix.txt"),
        "apache-error": _head(datasets / "loghub_2k/Apache/Apache_2k.log"),
        "nginx-access": _head(crowdsec / "nginx_http-logs/nginx_http-logs.log")[:8],
        "auditd": _head(crowdsec / "auditd-logs/auditd-logs.log"),
        "iptables": _head(crowdsec / "iptables-logs/iptables-logs.log") + _head(crowdsec / "proxmox-iptables-logs/proxmox-iptables.log"),
        "pfsense": _head(crowdsec / "pf-logs/pf-logs.log"),
        "suricata-eve": _head(crowdsec / "suricata-logs-evelog/suricata-logs-evelog.log"),
        "cef": _head(crowdsec / "cef-logs/cef-logs.log"),
        "zeek": _head(datasets / "zeek_wrccdc/zeek-default/dns.log.gz") + _head(datasets / "zeek_wrccdc/zeek-default/ssl.log.gz"),
        "zeek-json": [line for name in ("dns", "notice", "weird", "ssh", "rdp")
                      for line in _head(datasets / f"zeek_wrccdc/zeek-json/{name}.json.gz", 40)],
        "windows-evtx": [line for path in evtx[::9] for line in _head(path, 15)],
        "windows-json": _otrf(datasets),
        "windows-xml": _head(crowdsec / "windows-logs/windows-logs.log"),
        "mikrotik": _head(crowdsec / "mikrotik-logs/mikrotik-logs.log"),
        "checkpoint": [line.split(" = ", 1)[1] for line in
                       _head(datasets / "wazuh_rule_tests/tools/rules-testing/tests/checkpoint_smart1.ini", 400)
                       if line.startswith("log 1 pass = ")],
    }


def expected(pipeline_id: str, lines: list[str]) -> Counter[str]:
    normalizer = Normalizer(PIPELINES[pipeline_id], agency="so-tttt", timezone="Asia/Ho_Chi_Minh", source="x",
                            now=datetime.now(timezone.utc), year=2005)
    return Counter(type(normalizer.normalize(line, i, str(i))).__name__ for i, line in enumerate(lines) if line.strip())


def test_every_source_lands_in_one_agency_without_rejections(tmp_path, es, es_url, prefix, datasets) -> None:  # type: ignore[no-untyped-def]
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, 25))
    assert run_cli("-c", config, "setup")[0] == 0
    samples = real_lines(datasets)
    want: Counter[str] = Counter()
    for pipeline_id, pipeline in sorted(PIPELINES.items()):
        lines = [line for ex in pipeline.examples if not ex.dead_letter and not ex.skipped for line in (*ex.before, ex.line)]
        lines += samples.get(pipeline_id, [])
        log = tmp_path / f"{pipeline_id}.log"
        log.write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts = expected(pipeline_id, lines)
        want.update(counts)
        code, out, err = run_cli("-c", config, "collect", str(log), "--agency", "so-tttt", "--source", pipeline_id,
                                 "--year", "2005")
        assert code == 0, f"{pipeline_id}: {err}"
    es.indices.refresh(index=f"{prefix}-*")
    stored = es.count(index=f"{prefix}-events-so-tttt-*")["count"]
    dead = es.count(index=f"{prefix}-deadletter-so-tttt", ignore_unavailable=True).get("count", 0)
    if dead != want["DeadLetter"]:
        hits = es.search(index=f"{prefix}-deadletter-so-tttt", size=5, query={"match_all": {}})["hits"]["hits"]
        pytest.fail(f"{dead} dead letters, {want['DeadLetter']} expected: "
                    + json.dumps([h["_source"] for h in hits], ensure_ascii=False)[:3000])
    assert stored == want["Event"] > 1500, want
    # every dataset the contract names for these sources is searchable as a keyword
    datasets_found = es.search(index=f"{prefix}-events-so-tttt-*", size=0,
                               aggs={"d": {"terms": {"field": "event.dataset", "size": 100}}})
    names = {b["key"] for b in datasets_found["aggregations"]["d"]["buckets"]}
    for name in ("system.auth", "system.syslog", "apache.access", "nginx.access", "iis.access", "iptables.log",
                 "pfsense.log", "cisco.asa", "panw.panos", "fortinet.firewall", "cef.log", "zeek.dns",
                 "suricata.eve", "windows.security", "windows.sysmon_operational", "auditd.log", "mikrotik.routeros",
                 "sophos.xg", "checkpoint.firewall"):
        assert name in names, name
    by_ip = es.count(index=f"{prefix}-events-so-tttt-*", query={"term": {"source.ip": "10.47.0.0/16"}})["count"]
    assert by_ip > 0  # source.ip is mapped as ip: CIDR terms work
