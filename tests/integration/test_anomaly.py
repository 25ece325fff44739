"""Anomaly detection end to end on the real node, through the CLI: train, scan, an explained incident
emailed once in Vietnamese and in English; a modified model refused; analyst feedback kept out of the
next baseline; a broken detector that stops neither the rules nor the other detectors."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from secmon.config import load_settings
from secmon.service.common import indices_of
from tests.conftest import ROOT, run_cli, write_config

pytestmark = [pytest.mark.integration]

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
START = datetime(2025, 3, 3, 0, 0, tzinfo=timezone.utc)  # a Monday
DETECTOR = ROOT / "rules" / "anomaly" / "ssh-auth-per-source.yml"
BRUTE_FORCE = ROOT / "rules" / "linux" / "ssh-password-brute-force.yml"
ATTACKER = "203.0.113.50"


def line(moment: datetime, text: str, pid: int, host: str = "web1") -> str:
    local = moment.astimezone(LOCAL)
    return f"{local:%b} {local.day:2d} {local:%H:%M:%S} {host} sshd[{pid}]: {text}\n"


def normal_hour(hour: int) -> list[tuple[datetime, str]]:
    """Eight staff members log in from their own address, some after a mistyped password."""
    out = []
    for i in range(1, 9):
        at = START + timedelta(hours=hour, minutes=5 * i)
        if (hour + i) % 3 == 0:
            out.append((at, f"Failed password for user{i} from 10.0.0.{i} port {4000 + i} ssh2"))
        out.append((at + timedelta(seconds=20), f"Accepted password for user{i} from 10.0.0.{i} port {4100 + i} ssh2"))
    return out


def attack_hour(hour: int) -> list[tuple[datetime, str]]:
    """Forty user names tried from one address, one every 80 s (too slow for the brute-force rule)."""
    return [(START + timedelta(hours=hour, seconds=80 * n),
             f"Failed password for invalid user guess{n} from {ATTACKER} port {50000 + n} ssh2") for n in range(40)]


def collect(tmp_path: Path, config: str, agency: str, events: list[tuple[datetime, str]]) -> None:
    log = tmp_path / f"auth-{agency}.log"
    log.write_text("".join(line(at, text, 1000 + n) for n, (at, text) in enumerate(sorted(events))))
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", agency, "-s", "linux-auth", "--year", "2025")
    assert code == 0 and f"{len(events)} events shipped" in out, (out, err)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A rules folder with one Sigma rule and the detector under anomaly/."""
    folder = tmp_path / "rules"
    (folder / "anomaly").mkdir(parents=True)
    shutil.copy(BRUTE_FORCE, folder / BRUTE_FORCE.name)
    shutil.copy(DETECTOR, folder / "anomaly" / DETECTOR.name)
    return folder


@pytest.fixture
def config(tmp_path, es_url, prefix, smtp) -> str:  # type: ignore[no-untyped-def]
    _, port, _ = smtp
    path = str(write_config(tmp_path / "secmon.yml", es_url, prefix, port))
    assert run_cli("-c", path, "setup")[0] == 0
    for agency in ("so-tttt", "portal"):
        events = [e for hour in range(10) for e in normal_hour(hour)] + attack_hour(9)
        collect(tmp_path, path, agency, events)
    return path


def train(config: str, rules: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    code, out, err = run_cli("-c", config, "model", "train", "ssh-auth-per-source", "--detectors",
                             str(rules / "anomaly"), "--from", START.isoformat(), "--to",
                             (START + timedelta(hours=9)).isoformat(), "--json", *extra)
    assert code == 0, (out, err)
    return json.loads(out)  # type: ignore[no-any-return]


def scan(config: str, rules: Path, *extra: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    code, out, err = run_cli("-c", config, "scan", "--from", (START + timedelta(hours=9)).isoformat(), "--to",
                             (START + timedelta(hours=10)).isoformat(), "--rules", str(rules), "--json", *extra)
    return code, json.loads(out) if out.strip().startswith("{") else {}, err


def anomalies(summary: dict) -> list[dict]:  # type: ignore[type-arg]
    return [i for i in summary["incidents"] if i["finding"]["detector"] == "anomaly"]


def test_train_scan_explain_and_email_once_in_both_languages(config, rules, smtp):  # type: ignore[no-untyped-def]
    _, _, mailbox = smtp
    report = train(config, rules)
    outcomes = {(r["agency"], r["outcome"]) for r in report["results"]}
    assert outcomes == {("so-tttt", "trained"), ("portal", "trained"), ("*", "trained")}, report
    code, summary, err = scan(config, rules)
    assert code == 0, err
    found = anomalies(summary)
    assert sorted((i["finding"]["agency"], i["finding"]["group"][0][1]) for i in found) == [
        ("portal", ATTACKER), ("so-tttt", ATTACKER)], found
    explanation = found[0]["finding"]["explanation"]
    assert explanation["score"] > explanation["threshold"]
    top = [c["feature"] for c in explanation["contributions"]]
    assert {"users", "new_users", "failures"} & set(top[:3]), explanation
    new = dict(explanation["new_values"])["new_users"]
    assert len(new) == 10 and all(v.startswith("guess") for v in new), explanation["new_values"]
    assert f'source.address : "{ATTACKER}"' in explanation["query"]

    by_language = {"vi" if "so-tttt" in m["To"] else "en": m for m in mailbox.messages}
    assert set(by_language) == {"vi", "en"} and len(mailbox.messages) == 2, [m["Subject"] for m in mailbox.messages]
    text = {lang: m.get_body(("plain",)).get_content() for lang, m in by_language.items()}
    html = {lang: m.get_body(("html",)).get_content() for lang, m in by_language.items()}
    assert "Vì sao bất thường" in text["vi"] and "giá trị chưa từng thấy ở new_users: guess" in text["vi"]
    assert "Why it is anomalous" in text["en"] and "never seen before in new_users: guess" in text["en"]
    assert re.search(r"- (users|new_users|failures): 40 \(an entity with no history; above \d+% of baseline", text["en"])
    assert "<h3>Vì sao bất thường</h3>" in html["vi"] and "<h3>Why it is anomalous</h3>" in html["en"]
    assert "<td><code>new_users</code></td>" in html["en"] and "source.address : &#34;" in html["en"], html["en"]

    ident = found[0]["id"]
    code, out, err = run_cli("-c", config, "incidents", "show", ident[:12])
    assert code == 0 and "Why it is anomalous" in out and "detector anomaly" in out, (out, err)
    code, out, err = run_cli("-c", config, "incidents", "show", ident[:12], "--language", "vi")
    assert code == 0 and "Vì sao bất thường" in out, (out, err)

    code, summary, err = scan(config, rules)  # the same scan again: the same incidents, nobody told twice
    assert code == 0 and not summary["new_incident_ids"], summary
    assert len(mailbox.messages) == 2

    code, out, err = run_cli("-c", config, "model", "explain", "ssh-auth-per-source", "-a", "so-tttt", "-e",
                             "10.0.0.3", "--at", (START + timedelta(hours=9, minutes=30)).isoformat(),
                             "--detectors", str(rules / "anomaly"), "--language", "vi")
    assert code == 0 and "Vì sao bất thường" in out, (out, err)
    exported = Path(config).parent / "model.json"  # offline: the same detector over files, no cluster
    assert run_cli("-c", config, "model", "export", "ssh-auth-per-source:so-tttt", str(exported))[0] == 0
    code, out, err = run_cli("-c", config, "scan", "--input", str(Path(config).parent / "auth-so-tttt.log"),
                             "--source", "linux-auth", "--agency", "so-tttt", "--rules", str(rules), "--models",
                             str(exported), "--json")
    assert code == 0, (out, err)
    offline = [i for i in json.loads(out)["incidents"] if i["finding"]["detector"] == "anomaly"]
    assert [i["finding"]["group"][0][1] for i in offline] == [ATTACKER], offline
    code, out, err = run_cli("-c", config, "model", "score", "ssh-auth-per-source", "-a", "portal", "--from",
                             (START + timedelta(hours=9)).isoformat(), "--to",
                             (START + timedelta(hours=10)).isoformat(), "--detectors", str(rules / "anomaly"), "--json")
    assert code == 0 and json.loads(out)["top"][0]["entity"] == ATTACKER, (out, err)


def test_a_modified_model_is_refused(config, rules, es):  # type: ignore[no-untyped-def]
    train(config, rules)
    indices = indices_of(load_settings(Path(config)))
    doc = es.get(index=indices.models, id="ssh-auth-per-source:so-tttt")["_source"]
    doc["payload"]["threshold"] = 0.99  # raise the bar so an attack would pass unseen
    es.index(index=indices.models, id="ssh-auth-per-source:so-tttt", document=doc, refresh=True)
    code, out, err = run_cli("-c", config, "model", "show", "ssh-auth-per-source:so-tttt")
    assert code == 4 and "refused" in err and "sha256 does not match" in err, (out, err)
    code, summary, err = scan(config, rules)
    assert code == 4, err  # the refused model is a failure of the scan ...
    assert any("ssh-auth-per-source:so-tttt" in where and "refused" in why for where, why in summary["rules_failed"])
    # ... and the agency is not left unwatched: the centre-wide model scores it meanwhile
    models = {i["finding"]["agency"]: i["finding"]["explanation"]["model"] for i in anomalies(summary)}
    assert models == {"so-tttt": "ssh-auth-per-source:*", "portal": "ssh-auth-per-source:portal"}, models


def test_windows_of_an_incident_closed_as_benign_leave_the_next_baseline(config, rules, es):  # type: ignore[no-untyped-def]
    first = train(config, rules)
    windows = {r["agency"]: r["windows"] for r in first["results"]}
    code, summary, err = scan(config, rules, "--no-deliver")
    assert code == 0, err
    incident = next(i for i in anomalies(summary) if i["finding"]["agency"] == "so-tttt")
    assert run_cli("-c", config, "incidents", "close", incident["id"][:12], "--as", "benign", "--note",
                   "pentest by the agency")[0] == 0
    code, out, err = run_cli("-c", config, "model", "train", "ssh-auth-per-source", "--detectors",
                             str(rules / "anomaly"), "--from", START.isoformat(), "--to",
                             (START + timedelta(hours=10)).isoformat(), "--json")  # now the attack hour is baseline
    assert code == 0, err
    second = {r["agency"]: r for r in json.loads(out)["results"]}
    assert second["so-tttt"]["excluded"] == 1  # the attacker's window, closed as benign
    assert second["so-tttt"]["windows"] == windows["so-tttt"] + 8  # hour 9 added its 8 normal windows only
    assert second["portal"]["excluded"] == 0 and second["portal"]["windows"] == windows["portal"] + 9


def test_a_broken_detector_stops_neither_the_rules_nor_the_other_detectors(config, rules):  # type: ignore[no-untyped-def]
    train(config, rules)
    (rules / "anomaly" / "broken.yml").write_text("id: broken\ntitle: Broken\nentity: source.ip\nwindow: 1h\n"
                                                  "features:\n  - {name: x, kind: median}\n")
    code, summary, err = scan(config, rules, "--rule-failures", "warn", "--no-deliver")
    assert code == 0, err
    problems = [(where, why) for where, why in summary["rules_failed"] if "broken.yml" in where]
    assert any(re.search(r"broken\.yml:6:\d+$", where) and "kind 'median' is not one of" in why
               for where, why in problems), problems
    assert any(where.endswith("broken.yml:1:1") and "missing required key 'events'" in why
               for where, why in problems), problems
    assert summary["rules_run"] == 1  # the Sigma rule ran
    assert len(anomalies(summary)) == 2  # and the good detector scored
