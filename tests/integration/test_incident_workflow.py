"""Incidents as a workflow, on the real node with a real SMTP server on loopback: one incident per
ongoing activity, writes that converge under concurrency and crashes, the analyst's lifecycle,
exceptions and suppressions, and exit codes that never look healthy when rules did not run."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from secmon.config import load_settings
from secmon.errors import SecmonError
from secmon.incidents import records
from secmon.service.common import indices_of
from secmon.service.deliver import deliver
from secmon.service.scan import ScanOptions, scan
from secmon.service.triage import add_exclusion
from tests.conftest import ROOT, run_cli, write_config

pytestmark = [pytest.mark.integration]

BRUTE_FORCE = ROOT / "rules" / "linux" / "ssh-password-brute-force.yml"
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
START = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=6)


def auth_lines(start: datetime, minutes: int, every_s: int, source: str, host: str = "web1", user: str = "root"
               ) -> list[str]:
    """sshd 'Failed password' lines, one every `every_s` seconds, as syslog writes them (local time)."""
    lines = []
    for i in range(0, minutes * 60, every_s):
        moment = (start + timedelta(seconds=i)).astimezone(LOCAL)
        lines.append(f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S} {host} sshd[{2000 + i}]: Failed password for "
                     f"{user} from {source} port {40000 + i % 20000} ssh2\n")
    return lines


def collect(tmp_path: Path, config: str, lines: list[str], name: str = "auth.log") -> None:
    log = tmp_path / name
    log.write_text("".join(lines))
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", "so-tttt", "-s", "linux-auth",
                             "--year", str(START.astimezone(LOCAL).year))
    assert code == 0 and f"{len(lines)} events shipped" in out, (out, err)


@pytest.fixture
def config(tmp_path, es_url, prefix, smtp) -> str:  # type: ignore[no-untyped-def]
    host, port, _ = smtp
    path = str(write_config(tmp_path / "secmon.yml", es_url, prefix, port))
    assert run_cli("-c", path, "setup")[0] == 0
    return path


def test_a_three_hour_attack_scanned_every_5_minutes_is_one_incident_and_one_email(tmp_path, es, config, smtp):  # type: ignore[no-untyped-def]
    _, _, mailbox = smtp
    collect(tmp_path, config, auth_lines(START, 180, 20, "203.0.113.9"))
    for step in range(0, 185, 5):
        window = START + timedelta(minutes=step)
        code, out, err = run_cli("-c", config, "scan", "--from", window.isoformat(), "--to",
                                 (window + timedelta(minutes=5)).isoformat(), "--rules", str(BRUTE_FORCE), "--json")
        assert code == 0, (step, out, err)
    incidents = records.search(es, indices_of(load_settings(Path(config))), limit=10).incidents
    assert len(incidents) == 1, [(i.finding.first_seen, i.finding.last_seen) for i in incidents]
    (incident,) = incidents
    assert incident.finding.first_seen == START
    assert incident.finding.last_seen >= START + timedelta(minutes=179)
    assert incident.finding.count >= 500  # 540 failures: counted per burst, never more than there were
    assert len(mailbox.messages) == 1 and incident.id in mailbox.messages[0]["X-Secmon-Incident"]


def test_concurrent_scans_and_a_deliver_alert_each_incident_once(tmp_path, es, config, smtp):  # type: ignore[no-untyped-def]
    _, _, mailbox = smtp
    lines = []
    for n in range(12):  # twelve attackers, twelve incidents
        lines += auth_lines(START + timedelta(minutes=10 * n), 5, 15, f"198.51.100.{n + 1}", host=f"srv{n}")
    collect(tmp_path, config, sorted(lines, key=lambda line: line[:15]))
    settings = load_settings(Path(config))
    options = ScanOptions(START - timedelta(hours=1), START + timedelta(hours=4), (BRUTE_FORCE,))
    errors: list[BaseException] = []

    def run(job) -> None:  # type: ignore[no-untyped-def]
        try:
            job()
        except BaseException as exc:  # reported below, with the test's failure
            errors.append(exc)

    now = datetime.now(timezone.utc)
    jobs = [lambda: scan(es, settings, options, now), lambda: scan(es, settings, options, now),
            lambda: deliver(es, settings, now)]
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    deliver(es, settings, datetime.now(timezone.utc))
    incidents = records.search(es, indices_of(settings), limit=100).incidents
    assert len(incidents) == 12
    told = [m["X-Secmon-Incident"] for m in mailbox.messages]
    assert sorted(told) == sorted(i.id for i in incidents), "each incident told exactly once"


def test_a_crash_between_queueing_and_storing_is_repaired_by_the_next_run(tmp_path, es, config, smtp):  # type: ignore[no-untyped-def]
    _, _, mailbox = smtp
    collect(tmp_path, config, auth_lines(START, 5, 15, "192.0.2.77"))
    settings = load_settings(Path(config))
    options = ScanOptions(START - timedelta(minutes=5), START + timedelta(minutes=10), (BRUTE_FORCE,))
    real_write = records._write

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]  # the process dies after queueing
        raise SecmonError("simulated crash before the incidents were written")

    records._write = crash  # type: ignore[assignment]
    try:
        with pytest.raises(SecmonError, match="simulated crash"):
            scan(es, settings, options, datetime.now(timezone.utc))
    finally:
        records._write = real_write  # type: ignore[assignment]
    assert es.count(index=indices_of(settings).incidents, ignore_unavailable=True).get("count", 0) == 0
    summary = scan(es, settings, options, datetime.now(timezone.utc))
    assert len(summary.incidents) == 1
    deliver(es, settings, datetime.now(timezone.utc))
    assert [m["X-Secmon-Incident"] for m in mailbox.messages] == [summary.incidents[0].id]
    scan(es, settings, options, datetime.now(timezone.utc))  # and again: nothing new, nobody told twice
    deliver(es, settings, datetime.now(timezone.utc))
    assert len(mailbox.messages) == 1


def test_the_analyst_lifecycle_through_the_cli(tmp_path, es, config):  # type: ignore[no-untyped-def]
    # A user name with an escape sequence: the terminal must show it, not obey it.
    collect(tmp_path, config, auth_lines(START, 5, 15, "192.0.2.10", user="evil\x1b]0;pwned\x07"))
    code, out, err = run_cli("-c", config, "scan", "--from", (START - timedelta(minutes=5)).isoformat(), "--to",
                             (START + timedelta(minutes=10)).isoformat(), "--rules", str(BRUTE_FORCE), "--no-deliver",
                             "--json")
    assert code == 0, err
    ident = json.loads(out)["incidents"][0]["id"]
    code, out, err = run_cli("-c", config, "incidents", "list", "--status", "open")
    assert code == 0 and ident[:12] in out and "\x1b" not in out, (out, err)
    assert run_cli("-c", config, "incidents", "ack", ident[:12], "--note", "on it")[0] == 0
    code, out, err = run_cli("-c", config, "incidents", "ack", ident[:12])
    assert code == 4 and "acknowledge applies to open" in err
    assert run_cli("-c", config, "incidents", "close", ident[:12], "--as", "benign", "--note", "pentest")[0] == 0
    code, out, err = run_cli("-c", config, "incidents", "show", ident[:12])
    assert code == 0, err
    assert "status:      closed (benign)" in out and "acknowledged" in out and "pentest" in out
    assert "from 192.0.2.10 port" in out and "\x1b" not in out and "evil\\x1b]0;pwned\\x07" in out
    assert run_cli("-c", config, "incidents", "reopen", ident[:12], "--note", "again")[0] == 0
    code, out, err = run_cli("-c", config, "incidents", "show", ident, "--json")
    assert json.loads(out)["incident"]["status"] == "open"
    es.indices.refresh(index=f"{indices_of(load_settings(Path(config))).audit}")
    actions = {h["_source"]["event"]["action"] for h in es.search(
        index=indices_of(load_settings(Path(config))).audit, size=100)["hits"]["hits"]}
    assert {"incident-ack", "incident-close", "incident-reopen"} <= actions
    code, out, err = run_cli("-c", config, "incidents", "list", "--limit", "1", "--agency", "")
    assert code in (2, 3) and "agency" in err, err  # an empty agency never means "every agency"


def test_paging_says_when_more_exist(tmp_path, es, config):  # type: ignore[no-untyped-def]
    lines = []
    for n in range(3):
        lines += auth_lines(START + timedelta(minutes=10 * n), 5, 15, f"192.0.2.{n + 20}", host=f"h{n}")
    collect(tmp_path, config, sorted(lines, key=lambda line: line[:15]))
    assert run_cli("-c", config, "scan", "--from", (START - timedelta(hours=1)).isoformat(), "--rules",
                   str(BRUTE_FORCE), "--no-deliver")[0] == 0
    code, out, err = run_cli("-c", config, "incidents", "list", "--limit", "2")
    assert code == 0 and "2 of 3 incidents" in out and "1 more: --page 2" in out, out
    code, out, err = run_cli("-c", config, "incidents", "list", "--limit", "2", "--page", "2")
    assert "1 of 3 incidents" in out and "more" not in out.splitlines()[-1]


def test_the_scan_table_shows_the_most_important_and_says_where_the_rest_are(tmp_path, es, config):  # type: ignore[no-untyped-def]
    from secmon.cli.output import SHOWN

    attackers = SHOWN + 3
    lines = []
    for n in range(attackers):  # one incident each, the later ones more recent
        lines += auth_lines(START + timedelta(minutes=7 * n), 5, 15, f"198.51.100.{n + 1}", host=f"srv{n}")
    collect(tmp_path, config, sorted(lines, key=lambda line: line[:15]))
    window = ["--from", (START - timedelta(minutes=5)).isoformat(), "--to", (START + timedelta(hours=4)).isoformat(),
              "--rules", str(BRUTE_FORCE), "--no-deliver"]
    code, out, err = run_cli("-c", config, "scan", *window)
    assert code == 0, err
    assert f"incidents: {attackers} ({attackers} new, marked *)" in out, out
    rows = [line for line in out.splitlines() if line[:12].isalnum() and line[12:13] == "*"]
    assert len(rows) == SHOWN, out
    assert "... and 3 more" in out, out
    hint = next(line for line in out.splitlines() if line.startswith("... and"))
    command = hint.split("All of them: ", 1)[1].split(" (")[0].split()
    assert command[:3] == ["secmon", "incidents", "list"], hint
    code, listed, err = run_cli("-c", config, *command[1:], "--json")  # the command it names works as written
    assert code == 0, err
    ids = [i["id"] for i in json.loads(listed)["incidents"]]
    assert len(ids) == attackers
    # the newest activity first: the three left out are the three oldest attackers'
    assert sorted(row[:12] for row in rows) == sorted(i[:12] for i in ids[:SHOWN])
    code, out, err = run_cli("-c", config, "scan", *window, "--json")  # --json keeps every incident
    assert code == 0 and len(json.loads(out)["incidents"]) == attackers, err


def test_exceptions_and_suppressions_apply_while_in_force(tmp_path, es, config):  # type: ignore[no-untyped-def]
    lines = auth_lines(START, 5, 15, "192.0.2.30", host="backup") + auth_lines(START, 5, 15, "192.0.2.31", host="b")
    collect(tmp_path, config, sorted(lines, key=lambda line: line[:15]))
    settings = load_settings(Path(config))
    window = ["--from", (START - timedelta(minutes=5)).isoformat(), "--to", (START + timedelta(minutes=10)).isoformat(),
              "--rules", str(BRUTE_FORCE), "--no-deliver", "--json"]
    code, out, err = run_cli("-c", config, "exceptions", "add", "--agency", "so-tttt", "--where",
                             "source.ip=192.0.2.30", "--for", "1d", "--reason", "the backup server's retries")
    assert code == 0, err
    # An expired exception stops applying by itself.
    past = datetime.now(timezone.utc) - timedelta(days=2)
    add_exclusion(es, settings, "exception", "*", "*", [("source.ip", "192.0.2.31")], past + timedelta(hours=1),
                  "expired long ago", past)
    code, out, err = run_cli("-c", config, "scan", *window)
    assert code == 0, err
    found = json.loads(out)
    assert [dict(i["finding"]["group"])["source.address"] for i in found["incidents"]] == ["192.0.2.31"]
    code, out, err = run_cli("-c", config, "exceptions", "add", "--kind", "suppression", "--rule",
                             "5b0e6a36-7c1e-4d7a-8f3e-2a9d4c6b8e02", "--where", "source.address=192.0.2.31",
                             "--for", "2h", "--reason", "known noisy host")
    assert code == 0, err
    code, out, err = run_cli("-c", config, "scan", *window)
    assert json.loads(out)["suppressed"] == 1
    code, out, err = run_cli("-c", config, "exceptions", "list")
    assert "2 in force" in out and "known noisy host" in out
    ident = out.splitlines()[2].split()[0]
    assert run_cli("-c", config, "exceptions", "remove", ident, "--reason", "fixed")[0] == 0
    assert "1 in force" in run_cli("-c", config, "exceptions", "list")[1]


def test_a_scan_that_ran_no_rule_or_lost_one_is_not_healthy(tmp_path, es, config):  # type: ignore[no-untyped-def]
    empty = tmp_path / "no-rules"
    empty.mkdir()
    code, out, err = run_cli("-c", config, "scan", "--last", "15m", "--rules", str(empty))
    assert code == 4 and "no rule ran" in err
    broken = tmp_path / "rules"
    broken.mkdir()
    (broken / "bad.yml").write_text("title: broken\nlogsource: {product: linux}\ndetection:\n  condition: nothing\n")
    (broken / "good.yml").write_text(BRUTE_FORCE.read_text())
    code, out, err = run_cli("-c", config, "scan", "--last", "15m", "--rules", str(broken))
    assert code == 4 and "rules failed" in err and "bad.yml" in out
    code, out, err = run_cli("-c", config, "scan", "--last", "15m", "--rules", str(broken), "--rule-failures", "warn")
    assert code == 0, (out, err)

