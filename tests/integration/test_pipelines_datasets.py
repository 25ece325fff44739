"""Every pipeline against real lines from ../shared/datasets (no Elasticsearch needed).

- CrowdSec hub parser tests: each line CrowdSec parses must become an event (never a dead
  letter), and the fields both parsers extract must agree.
- Wazuh ruleset test lines: each must become an event of the pipeline's dataset.
- Whole real files (loghub, web scanner logs, Zeek, EVTX JSON, OTRF): parse rates, with
  the few known dead letters pinned so a regression shows.
"""

from __future__ import annotations

import gzip
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from secmon.model import DeadLetter, Event
from secmon.normalize.engine import Normalizer, Skipped, get
from secmon.normalize.pipeline import load_pipelines

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = load_pipelines([ROOT / "pipelines"])
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def normalizer(pipeline_id: str, year: int | None = None) -> Normalizer:
    return Normalizer(PIPELINES[pipeline_id], agency="test", timezone="Asia/Ho_Chi_Minh", source="dataset",
                      now=NOW, year=year)


def run_lines(pipeline_id: str, lines: list[str], year: int | None = None) -> tuple[Counter[str], list[DeadLetter]]:
    norm = normalizer(pipeline_id, year)
    counts: Counter[str] = Counter()
    dead = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        result = norm.normalize(line, i, f"line:{i}")
        counts[type(result).__name__] += 1
        if isinstance(result, DeadLetter):
            assert result.reason and result.raw == line.rstrip("\r\n")
            dead.append(result)
    return counts, dead


# --- CrowdSec hub parser tests --------------------------------------------------------------

_PARSED = re.compile(r'^results\["([^"]+)"\]\["([^"]+)"\]\[(\d+)\]\.Evt\.Parsed\["([^"]+)"\] == "(.*)"$')
_SUCCESS = re.compile(r'^results\["([^"]+)"\]\["([^"]+)"\]\[(\d+)\]\.Success == (true|false)$')


def _as_long(value: str) -> int:
    return int(value)


@dataclass(frozen=True)
class CrowdSecCase:
    folder: str
    parser: str  # the CrowdSec parser whose results describe each line
    pipeline: Callable[[str], str]  # which of our pipelines reads a line
    fields: dict[str, tuple[str, Callable[[str], Any]]]  # CrowdSec key -> (our ECS field, conversion)


def same(pipeline_id: str) -> Callable[[str], str]:
    return lambda line: pipeline_id


_S = str
_WEB = {"verb": ("http.request.method", _S), "request": ("url.original", _S),
        "http_user_agent": ("user_agent.original", _S), "target_fqdn": ("url.domain", _S)}
_FIREWALL = {"src_ip": ("source.ip", _S), "dst_ip": ("destination.ip", _S),
             "src_port": ("source.port", _as_long), "dst_port": ("destination.port", _as_long)}
CROWDSEC = [
    CrowdSecCase("sshd-logs", "crowdsecurity/sshd-logs", same("linux-auth"),
                 {"sshd_client_ip": ("source.ip", _S), "sshd_invalid_user": ("user.name", _S)}),
    CrowdSecCase("sshd-success-logs", "crowdsecurity/sshd-success-logs", same("linux-auth"),
                 {"sshd_client_ip": ("source.ip", _S), "sshd_auth_user": ("user.name", _S),
                  "sshd_client_port": ("source.port", _as_long)}),
    CrowdSecCase("pam-logs", "crowdsecurity/pam-logs", same("linux-auth"),
                 {"username": ("user.name", _S), "program": ("process.name", _S)}),
    CrowdSecCase("syslog-logs", "crowdsecurity/syslog-logs", same("syslog"),
                 {"program": ("process.name", _S), "pid": ("process.pid", _as_long), "message": ("message", _S)}),
    CrowdSecCase("apache2-logs", "crowdsecurity/apache2-logs",
                 lambda line: "apache-error" if line.startswith("[") else "apache-access",
                 {**_WEB, "clientip": ("source.ip", _S), "response": ("http.response.status_code", _as_long),
                  "bytes": ("http.response.body.bytes", _as_long), "loglevel": ("log.level", _S),
                  "port": ("url.port", _as_long)}),
    CrowdSecCase("apache2-malformed", "crowdsecurity/apache2-logs", same("apache-access"),
                 {"clientip": ("source.ip", _S), "response": ("http.response.status_code", _as_long),
                  "bytes": ("http.response.body.bytes", _as_long)}),
    CrowdSecCase("nginx_http-logs", "crowdsecurity/nginx-logs",
                 lambda line: "nginx-error" if re.match(r"\d{4}/", line) else "nginx-access",
                 {**_WEB, "remote_addr": ("source.ip", _S), "status": ("http.response.status_code", _as_long),
                  "body_bytes_sent": ("http.response.body.bytes", _as_long), "http_version": ("http.version", _S)}),
    CrowdSecCase("modsecurity-logs", "crowdsecurity/modsecurity", same("apache-error"),
                 {"ruleid": ("rule.id", _S), "sourcehost": ("source.ip", _S)}),
    CrowdSecCase("auditd-logs", "crowdsecurity/auditd-logs", same("auditd"),
                 {"event_inc_id": ("auditd.log.sequence", _as_long)}),  # their msg_type is the "audit" token
    CrowdSecCase("iptables-logs", "crowdsecurity/iptables-logs", same("iptables"),
                 {**_FIREWALL, "proto": ("network.transport", str.lower),
                  "int_eth": ("observer.ingress.interface.name", _S)}),
    CrowdSecCase("proxmox-iptables-logs", "aderumier/proxmox-iptables-logs", same("iptables"),
                 {**_FIREWALL, "proto": ("network.transport", str.lower),
                  "iface": ("observer.ingress.interface.name", _S)}),
    CrowdSecCase("pf-logs", "firewallservices/pf-logs", same("pfsense"),
                 {**_FIREWALL, "action": ("event.action", _S), "iface": ("observer.ingress.interface.name", _S),
                  "rule": ("rule.id", _S)}),
    CrowdSecCase("pfsense-rfc5424-filterlog", "crowdsecurity/syslog-logs", same("pfsense"),
                 {"program": ("process.name", _S)}),
    CrowdSecCase("suricata-logs-evelog", "crowdsecurity/suricata-evelogs", same("suricata-eve"),
                 {"dest_ip": ("destination.ip", _S), "dest_port": ("destination.port", _as_long),
                  "proto": ("network.transport", str.lower), "suricata_alert_signature": ("rule.name", _S)}),
    CrowdSecCase("cef-logs", "crowdsecurity/cef-logs", same("cef"),
                 {"cef_device_vendor": ("observer.vendor", _S), "cef_device_product": ("observer.product", _S),
                  "cef_device_version": ("observer.version", _S), "cef_signature_id": ("event.code", _S),
                  "cef_event_name": ("rule.name", _S), "cef_severity": ("event.severity", _as_long)}),
    CrowdSecCase("mikrotik-logs", "a1ad/mikrotik-logs", same("mikrotik"),
                 {"source_ip": ("source.ip", _S), "dst_ip": ("destination.ip", _S), "src_port": ("source.port", _as_long),
                  "dst_port": ("destination.port", _as_long), "proto": ("network.transport", str.lower),
                  "if_in": ("observer.ingress.interface.name", _S), "chain": ("rule.name", _S), "src_mac": ("source.mac", _S),
                  "tag": ("mikrotik.log_prefix", _S), "length": ("network.bytes", _as_long), "invalid_user": ("user.name", _S)}),
    CrowdSecCase("windows-logs", "crowdsecurity/windows-eventlog", same("windows-xml"),
                 {"Channel": ("winlog.channel", _S), "Computer": ("winlog.computer_name", _S),
                  "EventID": ("winlog.event_id", _S), "Source": ("winlog.provider_name", _S)}),
]
# Not covered, on purpose: iis-xml-logs (IIS rendered as XML; its test log is empty), cowrie-logs and
# suricata-logs-fastlog have no pipeline yet.


def crowdsec_results(folder: Path, parser: str) -> dict[int, tuple[bool, dict[str, str]]]:
    results: dict[int, tuple[bool, dict[str, str]]] = {}
    for text in (folder / "parser.assert").read_text(encoding="utf-8").splitlines():
        if (found := _SUCCESS.match(text.strip())) and found[2] == parser:
            index = int(found[3])
            results[index] = (found[4] == "true", results.get(index, (False, {}))[1])
        elif (found := _PARSED.match(text.strip())) and found[2] == parser:
            index = int(found[3])
            ok, parsed = results.get(index, (False, {}))
            parsed[found[4]] = found[5].encode("utf-8").decode("unicode_escape") if "\\" in found[5] else found[5]
            results[index] = (ok, parsed)
    return results


@pytest.mark.parametrize("case", CROWDSEC, ids=[c.folder for c in CROWDSEC])
def test_crowdsec_parser_cases(datasets: Path, case: CrowdSecCase) -> None:
    folder = datasets / "crowdsec_parser_tests" / ".tests" / case.folder
    log = next(p for p in folder.glob("*.log"))
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    expected = crowdsec_results(folder, case.parser)
    assert len(expected) == len(lines), f"{case.folder}: cannot align {len(expected)} results with {len(lines)} lines"
    checked = 0
    for index, line in enumerate(lines):
        pipeline_id = case.pipeline(line)
        result = normalizer(pipeline_id, year=2020).normalize(line, index, f"{case.folder}:{index}")
        ok, parsed = expected[index]
        if isinstance(result, Skipped):
            continue
        if not ok:  # CrowdSec rejects it; we may still read it, but must never crash or lose it
            assert isinstance(result, (Event, DeadLetter))
            continue
        assert isinstance(result, Event), f"{case.folder}[{index}] dead-lettered: {result.reason}\n{line}"
        assert get(result.doc, "event.dataset") and get(result.doc, "event.original") == line
        for key, (field, convert) in case.fields.items():
            if key not in parsed or parsed[key] in ("", "-"):
                continue
            assert get(result.doc, field) == convert(parsed[key]), f"{case.folder}[{index}] {key} -> {field}\n{line}"
            checked += 1
    if case.fields:
        assert checked, f"{case.folder}: no field was compared"


# --- Wazuh ruleset test lines ---------------------------------------------------------------

WAZUH: dict[str, Callable[[str], str]] = {
    "sshd.ini": same("linux-auth"),
    "su.ini": same("linux-auth"),
    "sudo.ini": same("linux-auth"),
    "pam.ini": same("linux-auth"),
    "syslog.ini": same("syslog"),
    "apache.ini": same("apache-error"),
    "modsecurity.ini": same("apache-error"),
    "nginx.ini": same("nginx-error"),
    "web_appsec.ini": same("apache-access"),
    "web_rules.ini": lambda line: "iis" if line[:1].isdigit() and line[4:5] == "-" else "apache-access",
    "cisco_asa.ini": same("cisco-asa"),
    "paloalto.ini": same("panos"),
    "checkpoint_smart1.ini": same("checkpoint"),
}
# Lines a pipeline must reject: the test corpus anonymised them into impossible values
# (PAN-OS "2020/00/00 00:00:00" receive times and "00.00.000.00" addresses), or they are
# not the product's format at all (a ModSecurity audit-log fragment, a log with only a year
# and no month name). Each is pinned with the reason we give.
WAZUH_REJECTED = {
    ("paloalto.ini", "TRAFFIC"): "timestamp",
    ("paloalto.ini", "THREAT"): "timestamp",
}
# "from 183.106.179.x" (an anonymised address) is a syntactically valid host name: linux-auth
# keeps it as source.address/source.domain rather than losing a failed login to the dead letters.


def dataset_of(pipeline_id: str) -> Any:
    return {".".join(path): value for path, value in PIPELINES[pipeline_id].set}["event.dataset"]


def wazuh_lines(path: Path) -> list[str]:
    lines = []
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        found = re.match(r"^log \d+ (?:pass|fail) = (.*)$", text)
        if found:
            lines.append(found[1])
        elif text.strip() and not re.match(r"^(?:\[.*\]|(?:rule|alert|decoder) =.*|[;#].*)$", text):
            lines.append(text)  # a few cases (paloalto.ini SYSTEM) give the bare line
    return lines


@pytest.mark.parametrize("name", sorted(WAZUH))
def test_wazuh_rule_test_lines(datasets: Path, name: str) -> None:
    path = datasets / "wazuh_rule_tests" / "tools" / "rules-testing" / "tests" / name
    lines = wazuh_lines(path)
    assert lines
    failures = []
    for index, line in enumerate(lines):
        pipeline_id = WAZUH[name](line)
        result = normalizer(pipeline_id, year=2020).normalize(line, index, f"{name}:{index}")
        rejected = next((why for (file, marker), why in WAZUH_REJECTED.items() if file == name and marker in line), None)
        if rejected:
            assert isinstance(result, DeadLetter) and rejected in result.reason, line
            continue
        if not isinstance(result, Event):
            failures.append(f"{pipeline_id}: {getattr(result, 'reason', result)}: {line}")
            continue
        assert get(result.doc, "event.dataset") == dataset_of(pipeline_id), line
    assert not failures, "\n".join(failures)


# --- whole real files -----------------------------------------------------------------------

def read_lines(path: Path) -> list[str]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


FILES = [
    # (pipeline, path under datasets, --year, dead letters allowed: reason -> count)
    ("linux-auth", "loghub_linux_full/Linux/Linux.log", 2004, {}),
    ("linux-auth", "loghub_2k/OpenSSH/OpenSSH_2k.log", 2017, {}),
    ("syslog", "loghub_2k/Linux/Linux_2k.log", 2005, {}),
    ("apache-error", "loghub_2k/Apache/Apache_2k.log", None, {}),
    ("apache-access", "web_scanner_accesslogs/acunetix.txt", None, {}),
    ("apache-access", "web_scanner_accesslogs/netsparker.txt", None, {}),
    ("apache-access", "web_scanner_accesslogs/w3af.txt", None, {}),
    ("apache-access", "web_scanner_accesslogs/evtx_attack_samples_web_attack_and_isp_webshell_access_log.txt", None, {}),
    ("zeek", "zeek_wrccdc/zeek-default/dns.log.gz", None, {}),
    ("zeek", "zeek_wrccdc/zeek-default/notice.log.gz", None, {}),
    ("zeek", "zeek_wrccdc/zeek-default/ssh.log.gz", None, {}),
    ("zeek", "zeek_wrccdc/zeek-default/rdp.log.gz", None, {}),
    ("zeek", "zeek_wrccdc/zeek-default/weird.log.gz", None, {}),
    ("zeek", "zeek_wrccdc/zeek-default/loaded_scripts.log.gz", None, {}),
    ("zeek-json", "zeek_wrccdc/zeek-json/dns.json.gz", None, {}),
    ("zeek-json", "zeek_wrccdc/zeek-json/notice.json.gz", None, {}),
    ("zeek-json", "zeek_wrccdc/zeek-json/ssh.json.gz", None, {}),
    ("zeek-json", "zeek_wrccdc/zeek-json/rdp.json.gz", None, {}),
]


@pytest.mark.parametrize("pipeline_id,relative,year,allowed", FILES, ids=[f"{p}:{Path(r).name}" for p, r, _, _ in FILES])
def test_real_file_parses(datasets: Path, pipeline_id: str, relative: str, year: int | None,
                          allowed: dict[str, int]) -> None:
    counts, dead = run_lines(pipeline_id, read_lines(datasets / relative), year)
    assert counts["Event"] or counts["Skipped"]
    reasons = Counter(d.reason for d in dead)
    assert dict(reasons) == allowed, [(d.reason, d.raw[:200]) for d in dead[:5]]


def test_zeek_tsv_and_json_agree(datasets: Path) -> None:
    """The same DNS log in both Zeek formats gives the same key fields."""
    tsv = [line for line in read_lines(datasets / "zeek_wrccdc/zeek-default/dns.log.gz")]
    js = read_lines(datasets / "zeek_wrccdc/zeek-json/dns.json.gz")[:300]
    norm = normalizer("zeek")
    events = [r for i, line in enumerate(tsv[:320]) if isinstance(r := norm.normalize(line, i, str(i)), Event)]
    from_json = [normalizer("zeek-json").normalize(line, i, str(i)) for i, line in enumerate(js)]
    for a, b in zip(events, from_json):
        assert isinstance(b, Event)
        for field in ("@timestamp", "event.dataset", "source.ip", "destination.port", "dns.question.name",
                      "dns.question.type", "zeek.session_id"):
            assert get(a.doc, field) == get(b.doc, field), field


def test_windows_evtx_json_every_sample(datasets: Path) -> None:
    pytest.importorskip("secmon.normalize.winlog")
    files = sorted((datasets / "evtx_attack_samples" / "jsonl").glob("*/*.jsonl"))
    lines = [line for path in files for line in read_lines(path)]
    counts, dead = run_lines("windows-evtx", lines)
    assert not dead, [(d.reason, d.raw[:200]) for d in dead[:5]]
    assert counts["Event"] > 8000


def test_windows_flat_json_otrf(datasets: Path) -> None:
    pytest.importorskip("secmon.normalize.winlog")
    lines = []
    for archive in sorted((datasets / "otrf_fixtures" / "datasets" / "atomic" / "windows").rglob("*.zip")):
        with zipfile.ZipFile(archive) as bundle:
            for name in bundle.namelist():
                if name.endswith(".json"):
                    lines += bundle.read(name).decode("utf-8", "replace").splitlines()
    counts, dead = run_lines("windows-json", lines)
    assert not dead, [(d.reason, d.raw[:200]) for d in dead[:5]]
    assert counts["Event"] > 10000
