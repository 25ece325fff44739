"""The thin slice on real data: a real auth log -> ECS events -> a Sigma correlation on the
real node -> incidents -> an email to a real SMTP server on loopback. And every way it can go wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli, write_config

pytestmark = [pytest.mark.integration, pytest.mark.dataset]


@pytest.fixture
def auth_log(datasets: Path) -> Path:
    return datasets / "loghub_linux_full" / "Linux" / "Linux.log"


def test_brute_force_found_stored_and_emailed_once(tmp_path, es, es_url, prefix, smtp, auth_log) -> None:  # type: ignore[no-untyped-def]
    host, port, mailbox = smtp
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, port))
    assert run_cli("-c", config, "setup")[0] == 0
    code, out, err = run_cli("-c", config, "collect", str(auth_log), "--agency", "so-tttt",
                             "--source", "linux-auth", "--year", "2005")
    assert code == 0, err
    shipped = int(out.split(": ")[1].split()[0])
    lines = sum(1 for line in auth_log.read_text(errors="replace").splitlines() if line.strip())
    assert es.count(index=f"{prefix}-events-so-tttt-*")["count"] == shipped
    assert es.count(index=f"{prefix}-deadletter-so-tttt", ignore_unavailable=True).get("count", 0) + shipped == lines

    code, out, err = run_cli("-c", config, "scan", "--from", "2005-06-01", "--to", "2006-03-01", "--json")
    assert code == 0, err
    import json

    first = json.loads(out)
    brute = [i for i in first["incidents"] if i["finding"]["rule_title"] == "SSH password brute force"]
    assert brute, "no brute force found in a log full of it"
    assert all(i["finding"]["count"] >= 10 for i in brute)
    assert all(i["finding"]["agency"] == "so-tttt" for i in brute)
    assert len(first["new_incident_ids"]) == len(first["incidents"])
    stored = es.count(index=f"{prefix}-incidents")["count"]
    assert stored == len(first["incidents"])

    # Hundreds of new incidents for one agency: an email per incident up to the recipient's hourly cap
    # (alerts.hourly_cap, 20), then ONE overflow digest naming the rest; real MIME, in Vietnamese, times in
    # Asia/Ho_Chi_Minh. Every incident is named exactly once.
    cap = 20
    new_ids = first["new_incident_ids"]
    assert len(new_ids) > cap and len(mailbox.messages) == cap + 1
    assert all(m["To"] == "soc@so-tttt.example.vn" for m in mailbox.messages)
    singles = [m for m in mailbox.messages if len(m["X-Secmon-Incident"].split()) == 1]
    (digest,) = [m for m in mailbox.messages if len(m["X-Secmon-Incident"].split()) > 1]
    assert len(singles) == cap
    # The rule's Vietnamese title (rules/linux/ssh-password-brute-force.yml, secmon.vi.title).
    brute_mail = [m for m in singles if "Tấn công dò mật khẩu SSH" in str(m["Subject"])]
    assert brute_mail and str(brute_mail[0]["Subject"]).startswith("[secmon][Cao] Cảnh báo an ninh: ")
    body = brute_mail[0].get_body(("plain",)).get_content()
    assert "Mức độ: Cao" in body and "+07" in body
    rest = set(new_ids) - {m["X-Secmon-Incident"] for m in singles}
    assert len(rest) == len(new_ids) - cap
    assert str(digest["Subject"]).startswith(f"[secmon] {len(rest)} cảnh báo được gộp")
    assert set(digest["X-Secmon-Incident"].split()) <= rest
    digest_body = digest.get_body(("plain",)).get_content()
    listed = 200  # lines in one digest; the rest are counted, and each is in the outbox with its digest_id
    assert sum(1 for i in rest if i in digest_body) == min(len(rest), listed)
    assert len(rest) <= listed or f"... và {len(rest) - listed} sự cố khác" in digest_body
    es.indices.refresh(index=f"{prefix}-alerts")
    assert es.count(index=f"{prefix}-alerts", query={"exists": {"field": "secmon.digest_id"}})["count"] == len(rest)

    # The same scan again: the same incident ids, nothing new, no second email.
    code, out, err = run_cli("-c", config, "scan", "--from", "2005-06-01", "--to", "2006-03-01", "--json")
    assert code == 0, err
    second = json.loads(out)
    assert sorted(i["id"] for i in second["incidents"]) == sorted(i["id"] for i in first["incidents"])
    assert second["new_incident_ids"] == []
    assert len(mailbox.messages) == cap + 1
    assert es.count(index=f"{prefix}-incidents")["count"] == stored

    # The run is auditable: scan runs, deliveries and the audit trail are in Elasticsearch.
    es.indices.refresh(index=f"{prefix}-*")
    assert es.count(index=f"{prefix}-scans")["count"] == 2
    # Every alert is accounted for: sent one by one, or folded (sent, with digest_id), plus the digest.
    assert es.count(index=f"{prefix}-alerts", query={"term": {"secmon.status": "sent"}})["count"] == len(new_ids) + 1
    actions = {h["_source"]["event"]["action"] for h in es.search(index=f"{prefix}-audit", size=50)["hits"]["hits"]}
    assert {"setup", "collect", "scan"} <= actions


def test_collecting_twice_does_not_duplicate(tmp_path, es, es_url, prefix, auth_log) -> None:  # type: ignore[no-untyped-def]
    sample = tmp_path / "auth.log"
    sample.write_text("".join(auth_log.read_text(errors="replace").splitlines(keepends=True)[:3000]))
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    outputs = []
    for _ in range(2):
        code, out, err = run_cli("-c", config, "collect", str(sample), "-a", "so-tttt", "-s", "linux-auth",
                                 "--year", "2005")
        assert code == 0, err
        outputs.append(out.split(": ", 1)[1])
    assert outputs[0] == outputs[1]
    events = es.count(index=f"{prefix}-events-*")["count"]
    dead = es.count(index=f"{prefix}-deadletter-*")["count"]
    assert events + dead == 3000 and events > 2900


def test_malformed_line_goes_to_dead_letter_with_reason(tmp_path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "auth.log"
    good = "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4 \n"
    bad = "Dec 10 06:55:48 LabSZ sshd[24200]: Failed password for root from 173.234.31.999 port 38926 ssh2\n"
    log.write_text(good + bad + "not a syslog line at all\n")
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", "so-tttt", "-s", "linux-auth", "--year", "2005")
    assert code == 0, err
    assert "1 events shipped, 2 dead-lettered" in out
    hits = es.search(index=f"{prefix}-deadletter-so-tttt", sort=[{"secmon.offset": "asc"}])["hits"]["hits"]
    assert [h["_source"]["event"]["original"] for h in hits] == [bad.strip(), "not a syslog line at all"]
    assert "173.234.31.999" in hits[0]["_source"]["error"]["message"]
    assert hits[0]["_source"]["secmon"]["pipeline"] == "linux-auth"


def test_smtp_down_keeps_the_alert_queued_until_it_is_back(tmp_path, es, es_url, prefix, smtp, auth_log) -> None:  # type: ignore[no-untyped-def]
    host, port, mailbox = smtp
    down = free_port()
    sample = tmp_path / "auth.log"
    sample.write_text("".join(auth_log.read_text(errors="replace").splitlines(keepends=True)[:6000]))
    no_cap = "alerts:\n  hourly_cap: 1000\n"
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, down, extra=no_cap))
    run_cli("-c", config, "collect", str(sample), "-a", "so-tttt", "-s", "linux-auth", "--year", "2005")
    code, out, err = run_cli("-c", config, "scan", "--from", "2005-06-01", "--to", "2006-03-01")
    assert code == 6, (out, err)
    assert "alert delivery failed" in out
    queued = es.count(index=f"{prefix}-alerts", query={"term": {"secmon.status": "pending"}})["count"]
    assert queued >= 1 and mailbox.messages == []
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, port, extra=no_cap))
    # SMTP is back: send now, not at each alert's next retry time.
    code, out, err = run_cli("-c", config, "deliver", "--retry-now")
    assert code == 0, (out, err)
    # Below the hourly cap: one email per incident, each naming its incident.
    assert len(mailbox.messages) == queued
    bodies = [m.get_body(("plain",)).get_content() for m in mailbox.messages]
    assert all("Mức độ: Cao" in b and "Quy tắc phát hiện: Tấn công dò mật khẩu SSH" in b for b in bodies)
    assert len({m["X-Secmon-Incident"] for m in mailbox.messages}) == queued


def test_unreachable_elasticsearch_is_one_clear_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = str(write_config(tmp_path / "secmon.yml", f"http://127.0.0.1:{free_port()}", "x", free_port()))
    code, out, err = run_cli("-c", config, "scan", "--last", "15m")
    assert code == 5
    assert err.count("\n") == 1 and "unreachable" in err and "Traceback" not in err


def test_bad_config_key_is_one_clear_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "secmon.yml", "http://127.0.0.1:1", "x", 25, extra="smtp_typo: 1\n")
    code, out, err = run_cli("-c", str(config), "scan", "--last", "15m")
    assert code == 3
    assert err.count("\n") == 1 and "unknown key 'smtp_typo'" in err and "secmon.yml:" in err


@pytest.mark.parametrize("args,message", [
    (["scan"], "exactly one of --from or --last"),
    (["scan", "--from", "yesterday"], "is not a time"),
    (["scan", "--from", "2006-01-01", "--to", "2005-01-01"], "must be before"),
    (["scan", "--last", "soon"], "not a duration"),
])
def test_bad_flags_exit_2(tmp_path, args, message) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "secmon.yml", "http://127.0.0.1:1", "x", 25)
    code, out, err = run_cli("-c", str(config), *args)
    assert code == 2 and message in err


def test_single_rule_match_without_its_group_field_still_raises_an_incident(tmp_path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "auth.log"
    # The rule groups by a field the event lacks: the match must still become an incident.
    log.write_text("Dec 10 09:32:20 LabSZ sshd[24680]: Accepted password for root from 119.137.62.142 port 49116 ssh2\n")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yml").write_text(
        "title: Any accepted SSH login\nid: 0a0a0a0a-1111-4222-8333-444444444444\nstatus: test\n"
        "logsource: {product: linux, service: sshd}\n"
        "detection:\n  sel:\n    event.action: ssh-login-succeeded\n  condition: sel\nlevel: medium\n"
        "secmon:\n  group-by: [host.hostname, user.domain]\n")  # user.domain never exists here
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    assert run_cli("-c", config, "collect", str(log), "-a", "so-tttt", "-s", "linux-auth", "--year", "2005")[0] == 0
    code, out, err = run_cli("-c", config, "scan", "--from", "2005-12-01", "--to", "2006-01-01", "--rules",
                             str(rules), "--no-deliver", "--json")
    assert code == 0, err
    import json

    incidents = json.loads(out)["incidents"]
    assert [i["finding"]["group"] for i in incidents] == [[["host.hostname", "LabSZ"], ["user.domain", "(none)"]]]
