"""Alert delivery on the real node and a real loopback SMTP server, counting messages:
exactly once under concurrency and SMTP outages, refused recipients recorded, MIME as mail clients
see it, the hourly cap's overflow digest, the daily digest, and the `secmon alerts` commands."""

from __future__ import annotations

import json
import threading
import unicodedata
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from secmon.alert.daily import daily_digests
from secmon.alert.dispatch import DeliveryReport, deliver_pending
from secmon.alert.message import HEADERS
from secmon.alert.outbox import enqueue
from secmon.alert.overflow import hour_of, overflow_id
from secmon.incidents import records
from secmon.incidents.grouping import Policy
from secmon.model import Severity
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from secmon.types import iso, utcnow
from tests.conftest import run_cli
from tests.integration.alerting import T0, Switchboard, notification, smtp_server, write_settings

pytestmark = pytest.mark.integration


def docs(es, indices: Indices, **terms: str) -> list[dict]:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=indices.alerts)
    query = {"bool": {"filter": [{"term": {f"secmon.{k}": v}} for k, v in terms.items()]}}
    return [h["_source"] for h in es.search(index=indices.alerts, query=query, size=1000)["hits"]["hits"]]


@pytest.fixture
def indices(es, prefix) -> Indices:  # type: ignore[no-untyped-def]
    indices = Indices(prefix)
    install_templates(es, indices)
    return indices


def test_two_deliverers_at_once_send_every_alert_exactly_once(tmp_path, es, es_url, prefix, indices) -> None:  # type: ignore[no-untyped-def]
    board = Switchboard()
    with smtp_server(board) as port:
        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port)
        batch = [notification("agency-a", host=f"a{i}") for i in range(52)]
        batch += [notification("agency-b", host=f"b{i}") for i in range(26)]  # two recipients each
        assert enqueue(es, indices, settings, batch, T0).queued == 104
        again = enqueue(es, indices, settings, batch, T0)  # a re-run: the same ids, nothing new
        assert (again.queued, again.already) == (0, 104)

        reports: list[DeliveryReport] = []
        start = threading.Barrier(2)

        def run() -> None:
            start.wait()
            reports.append(deliver_pending(es, indices, settings, T0))

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(reports) == 2, "a deliverer thread did not finish"
    counts = board.by_message_id()
    assert len(counts) == 104 and set(counts.values()) == {1}, counts.most_common(3)
    assert sum(r.sent for r in reports) == 104
    assert all(r.pending == r.failed == 0 for r in reports)
    assert len(docs(es, indices, status="sent")) == 104
    pairs = Counter((r.rcpt, r.message["X-Secmon-Incident"]) for r in board.received)
    assert set(pairs.values()) == {1}


def test_smtp_451_outage_then_250_and_a_refused_recipient(tmp_path, es, es_url, prefix, indices) -> None:  # type: ignore[no-untyped-def]
    board = Switchboard(data_reply="451 4.3.0 try again later", refused={"ops@b.example.vn"})
    with smtp_server(board) as port:
        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port,
                                  alerts="  retry_base: 1s\n  retry_max: 4s\n  max_age: 1h\n  claim_timeout: 1m\n")
        t = utcnow() - timedelta(hours=2)  # queued two hours ago, so the real clock of `secmon deliver` is past max_age
        batch = [notification("agency-a", host=f"a{i}") for i in range(5)]
        batch += [notification("agency-b", host=f"b{i}") for i in range(5)]
        assert enqueue(es, indices, settings, batch, t).queued == 15

        first = deliver_pending(es, indices, settings, t)
        assert (first.sent, first.pending, first.failed) == (0, 15, 0)
        assert any("451" in e for e in first.errors) and any("550" in e for e in first.errors)
        refused = docs(es, indices, recipient="ops@b.example.vn")
        assert {(d["secmon"]["status"], d["secmon"]["smtp_code"], d["secmon"]["attempts"]) for d in refused} == {
            ("pending", 550, 1)}
        assert all("550" in d["secmon"]["last_error"] for d in refused)

        early = deliver_pending(es, indices, settings, t + timedelta(milliseconds=500))  # backoff: nothing due yet
        assert (early.sent, early.pending, early.failed) == (0, 0, 0)
        second = deliver_pending(es, indices, settings, t + timedelta(seconds=1))
        assert (second.sent, second.pending) == (0, 15)
        assert {d["secmon"]["next_attempt"] for d in docs(es, indices, status="pending")} == {
            iso(t + timedelta(seconds=3))}  # the second failure at t+1s waits 2s: doubling

        board.data_reply = "250 OK"  # the outage ends
        back = deliver_pending(es, indices, settings, t + timedelta(seconds=30))
        assert (back.sent, back.pending, back.failed) == (10, 5, 0)
        later = deliver_pending(es, indices, settings, t + timedelta(minutes=30))
        assert (later.sent, later.pending) == (0, 5)

        # Past max_age, through the real command and the real clock: the refused one is given up, and said so.
        config = str(tmp_path / "secmon.yml")
        code, out, err = run_cli("-c", config, "deliver")
        assert code == 6, (out, err)
        assert "failed (given up): 5" in out and "outbox now: 0 pending, 5 failed" in out
        assert "550" in err
        failed = docs(es, indices, status="failed")
        assert len(failed) == 5 and {d["secmon"]["recipient"] for d in failed} == {"ops@b.example.vn"}
        assert all(d["secmon"]["smtp_code"] == 550 and "550" in d["secmon"]["last_error"] for d in failed)
        code, out, err = run_cli("-c", config, "deliver")
        assert code == 6 and "outbox now: 0 pending, 5 failed" in out  # failed alerts keep the exit code at 6

        # Every accepted recipient got every alert exactly once.
        pairs = Counter((r.rcpt, r.message["X-Secmon-Incident"]) for r in board.received)
        assert len(pairs) == 10 and set(pairs.values()) == {1}
        assert {r.rcpt for r in board.received} == {("soc@a.example.vn",), ("admin@b.example.vn",)}

        # The mailbox is fixed: `alerts retry` re-queues them (audited), the next delivery sends them once.
        board.refused.clear()
        sent_one = docs(es, indices, status="sent")[0]["secmon"]["id"]
        code, out, err = run_cli("-c", config, "alerts", "retry", "--id", failed[0]["secmon"]["id"], "--id", sent_one)
        assert code == 0 and "re-queued 1 failed alerts" in out and f"{sent_one}: sent, not failed" in out, (out, err)
        code, out, err = run_cli("-c", config, "alerts", "retry", "--all-failed")
        assert code == 0 and "re-queued 4 failed alerts" in out, (out, err)
        code, out, err = run_cli("-c", config, "alerts", "outbox", "--status", "pending", "--json")
        assert code == 0 and json.loads(out)["total"] == 5
        code, out, err = run_cli("-c", config, "deliver")
        assert code == 0 and "alerts sent: 5," in out, (out, err)
    pairs = Counter((r.rcpt, r.message["X-Secmon-Incident"]) for r in board.received)
    assert len(pairs) == 15 and set(pairs.values()) == {1}
    es.indices.refresh(index=indices.audit)
    audit = es.search(index=indices.audit, query={"term": {"event.action": "alerts-retry"}})["hits"]["hits"]
    assert sorted(a["_source"]["secmon"]["details"]["requeued"] for a in audit) == [1, 4]


def test_received_mime_vietnamese_and_english_with_local_date(tmp_path, es, es_url, prefix, indices) -> None:  # type: ignore[no-untyped-def]
    board = Switchboard()
    with smtp_server(board) as port:
        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port,
                                  alerts="  kibana_url: https://kibana.example.vn:5601\n")
        vi = notification("agency-a", title="SSH password brute force", description="Many failed SSH logins.",
                          translations=(("vi", "Dò mật khẩu SSH", "Nhiều lần đăng nhập SSH thất bại."),))
        community = notification("agency-a", title="Suspicious PowerShell download", severity=Severity.MEDIUM)
        en = notification("agency-b", title="SSH password brute force",
                          translations=(("vi", "Dò mật khẩu SSH", "Nhiều lần đăng nhập SSH thất bại."),))
        enqueue(es, indices, settings, [vi, community, en], T0)
        report = deliver_pending(es, indices, settings, T0)
        assert report.sent == 4, report
    by_incident = {(r.message["X-Secmon-Incident"], r.rcpt[0]): r.message for r in board.received}
    for message in by_incident.values():
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert message["Date"].datetime.utcoffset() == timedelta(hours=7)  # Asia/Ho_Chi_Minh, not -0000
        assert {k.lower() for k in message.keys()} <= HEADERS
        assert str(message["From"]) == "secmon@monitoring.example.vn"

    message = by_incident[(vi.incident.id, "soc@a.example.vn")]
    assert str(message["Subject"]) == "[secmon][Cao] Cảnh báo an ninh: Dò mật khẩu SSH (host.hostname=web01, user.name=root)"
    assert message["Content-Language"] == "vi"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Quy tắc phát hiện: Dò mật khẩu SSH" in text and "Mô tả: Nhiều lần đăng nhập SSH thất bại." in text
    assert "Bắt đầu: 2025-06-14 08:30:00 +07 (UTC+0700)" in text and "Kỹ thuật ATT&CK: T1110.001" in text
    assert "Dò mật khẩu SSH" in html and "Kỹ thuật ATT&amp;CK" in html
    assert f"query:'_id:{vi.incident.id}'" in text and "https://kibana.example.vn:5601/app/discover#/" in text
    # A community rule without a Vietnamese title: English title, Vietnamese everything else.
    message = by_incident[(community.incident.id, "soc@a.example.vn")]
    assert str(message["Subject"]).startswith("[secmon][Trung bình] Cảnh báo an ninh: Suspicious PowerShell download")
    for rcpt in ("admin@b.example.vn", "ops@b.example.vn"):
        message = by_incident[(en.incident.id, rcpt)]
        assert str(message["To"]) == rcpt
        assert str(message["Subject"]).startswith("[secmon][High] Security alert: SSH password brute force")
        assert "First seen: 2025-06-14 08:30:00 +07" in message.get_body(("plain",)).get_content()
    stored = {d["secmon"]["message_id"] for d in docs(es, indices, status="sent")}
    assert stored == {str(r.message["Message-ID"]) for r in board.received}


def test_hourly_cap_folds_the_rest_into_one_overflow_digest(tmp_path, es, es_url, prefix, indices) -> None:  # type: ignore[no-untyped-def]
    board = Switchboard()
    with smtp_server(board) as port:
        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port, alerts="  hourly_cap: 3\n")
        batch = [notification("agency-a", host=f"h{i}", first=T0 + timedelta(seconds=i)) for i in range(8)]
        enqueue(es, indices, settings, batch, T0)
        report = deliver_pending(es, indices, settings, T0)
        assert (report.sent, report.folded, report.held) == (4, 5, 0), report
        assert board.count() == 4  # 3 alerts + 1 overflow digest
        digest_id = overflow_id("soc@a.example.vn", hour_of(T0))
        digest = [r.message for r in board.received if len(r.message["X-Secmon-Incident"].split()) > 1]
        assert len(digest) == 1 and str(digest[0]["Subject"]).startswith("[secmon] 5 cảnh báo được gộp")
        folded = docs(es, indices, digest_id=digest_id)
        assert len(folded) == 5 and all(d["secmon"]["status"] == "sent" for d in folded)
        body = digest[0].get_body(("plain",)).get_content()
        assert all(d["secmon"]["incident_id"][0] in body for d in folded)
        assert sorted(digest[0]["X-Secmon-Incident"].split()) == sorted(d["secmon"]["incident_id"][0] for d in folded)

        # Two more in the same hour: its digest went out already, so they wait for the next hour's cap.
        more = [notification("agency-a", host=f"late{i}") for i in range(2)]
        enqueue(es, indices, settings, more, T0 + timedelta(minutes=5))
        report = deliver_pending(es, indices, settings, T0 + timedelta(minutes=5))
        assert (report.sent, report.held) == (0, 2) and report.outbox_pending == 2
        report = deliver_pending(es, indices, settings, hour_of(T0) + timedelta(hours=1))
        assert report.sent == 2 and report.outbox_pending == 0
    assert board.count() == 6
    assert len(docs(es, indices, status="sent")) == 11  # 10 alerts + 1 digest, none silent


def test_daily_digest_is_queued_once_per_agency_and_day(tmp_path, es, es_url, prefix, indices) -> None:  # type: ignore[no-untyped-def]
    board = Switchboard()
    with smtp_server(board) as port:
        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port, alerts='  daily_digest: "08:00"\n')
        findings = [notification("agency-a", host=f"h{i}", first=T0 - timedelta(hours=5)).incident.finding
                    for i in range(3)]
        records.record(es, indices, findings, Policy(timedelta(hours=1)), T0 - timedelta(hours=4), lambda _: None,
                       "scan-1")
        now = T0  # 08:30 local: the digest of the day ending today 08:00 is due
        first = daily_digests(es, indices, settings, now)
        assert (first.queued, first.already) == (3, 0)  # agency A: 1 recipient; B: 2
        again = daily_digests(es, indices, settings, now + timedelta(hours=20))  # 04:30 tomorrow: still that day
        assert (again.queued, again.already) == (0, 3)
        report = deliver_pending(es, indices, settings, now)
        assert report.sent == 3
        assert daily_digests(es, indices, settings, now).queued == 0
    subjects = {r.rcpt[0]: str(r.message["Subject"]) for r in board.received}
    assert subjects["soc@a.example.vn"].startswith("[secmon] Báo cáo ngày 2025-06-14: Sở Thông tin và Truyền thông: "
                                                   "3 sự cố mới, 3 còn mở, 0 đã đóng")
    assert subjects["admin@b.example.vn"].startswith("[secmon] Daily report 2025-06-14: Provincial public portal: 0 new")
    body = next(r.message for r in board.received if r.rcpt[0] == "soc@a.example.vn").get_body(("plain",)).get_content()
    assert all(f.incident_id in body for f in findings)


def test_routes_reach_the_centre_and_respect_every_floor(tmp_path, es, es_url, prefix, indices) -> None:  # type: ignore[no-untyped-def]
    board = Switchboard()
    with smtp_server(board) as port:
        agencies = """\
  - id: agency-a
    name: Agency A
    language: vi
    min_severity: medium
    recipients: [soc@a.example.vn]
  - id: agency-b
    name: Agency B
    language: en
    recipients: [admin@b.example.vn]
"""
        routes = """\
  routes:
    - name: centre-soc
      recipients: [soc@centre.example.vn]
      min_severity: high
      language: en
"""
        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port, alerts=routes, agencies=agencies)
        low_a = notification("agency-a", Severity.LOW)
        medium_a = notification("agency-a", Severity.MEDIUM)
        high_a = notification("agency-a", Severity.HIGH)
        critical_b = notification("agency-b", Severity.CRITICAL)
        queued = enqueue(es, indices, settings, [low_a, medium_a, high_a, critical_b], T0)
        assert (queued.queued, queued.below_floor) == (5, 1)
        deliver_pending(es, indices, settings, T0)
    got = {(r.message["X-Secmon-Incident"], r.rcpt[0]) for r in board.received}
    assert got == {(medium_a.incident.id, "soc@a.example.vn"), (high_a.incident.id, "soc@a.example.vn"),
                   (high_a.incident.id, "soc@centre.example.vn"), (critical_b.incident.id, "admin@b.example.vn"),
                   (critical_b.incident.id, "soc@centre.example.vn")}
    centre = [r.message for r in board.received if r.rcpt[0] == "soc@centre.example.vn"]
    assert all(str(m["Subject"]).startswith("[secmon][") and m["Content-Language"] == "en" for m in centre)


def test_outbox_and_test_email_commands(tmp_path, es, es_url, prefix, indices) -> None:  # type: ignore[no-untyped-def]
    board = Switchboard(refused={"nobody@a.example.vn"})
    with smtp_server(board) as port:
        write_settings(tmp_path / "secmon.yml", es_url, prefix, port)
        config = str(tmp_path / "secmon.yml")
        code, out, err = run_cli("-c", config, "alerts", "test-email", "--to", "me@centre.example.vn",
                                 "--agency", "agency-a")
        assert code == 0 and "test email sent to me@centre.example.vn: 250" in out, (out, err)
        message = board.received[0].message
        assert str(message["Subject"]).startswith("[secmon][Thông tin] Cảnh báo an ninh: Thư thử nghiệm của secmon")
        code, out, err = run_cli("-c", config, "alerts", "test-email", "--to", "nobody@a.example.vn")
        assert code == 6 and "550" in err and "Traceback" not in err
        code, out, err = run_cli("-c", config, "alerts", "test-email", "--to", "not an address")
        assert code == 2
        es.indices.refresh(index=indices.audit)
        outcomes = Counter(h["_source"]["event"]["outcome"] for h in es.search(
            index=indices.audit, query={"term": {"event.action": "alerts-test-email"}})["hits"]["hits"])
        assert outcomes == {"success": 1, "failure": 1}

        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port)
        enqueue(es, indices, settings, [notification("agency-b", host=f"b{i}") for i in range(3)], T0)
        code, out, err = run_cli("-c", config, "alerts", "outbox", "--agency", "agency-b", "--limit", "4")
        assert code == 0 and "4 of 6 shown; 2 more: raise --limit" in out, out
        code, out, err = run_cli("-c", config, "alerts", "retry", "--id", "nope")
        assert code == 2 and "nope: no such alert" in err
        code, out, err = run_cli("-c", config, "alerts", "retry")
        assert code == 2


hostile = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.sampled_from(list("ab =?_:Bcc\r\n\t\x00\x1b\u202e\u2028\u200bĐạô<>&\"'@,;")), max_size=200),
    st.sampled_from(["=?utf-8?q?Bcc:_x@evil.example?=", "x\r\nBcc: x@evil.example\r\n\r\nbody", "a" * 10_000,
                     "ops@b.example.vn", "<script>alert(1)</script>"]),
)


@given(host=hostile, user=hostile, title=hostile, description=hostile, vi_title=hostile)
@hsettings(max_examples=5, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_hostile_log_content_reaches_only_its_recipients_and_spoils_no_other_alert(
        tmp_path, es, es_url, prefix, indices, host, user, title, description, vi_title) -> None:  # type: ignore[no-untyped-def]
    board = Switchboard()
    with smtp_server(board) as port:
        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port)
        evil = notification("agency-a", host=host, user=user, title=title, description=description,
                            translations=(("vi", vi_title, description),))
        batch = [evil, notification("agency-a"), notification("agency-b", host=host, title=title)]
        assert enqueue(es, indices, settings, batch, T0).queued == 4
        report = deliver_pending(es, indices, settings, T0)
        assert (report.sent, report.pending, report.failed) == (4, 0, 0), report
    assert board.count() == 4
    own = {n.incident.id: n.incident.finding.agency for n in batch}
    for received in board.received:
        message = received.message
        agency = own[message["X-Secmon-Incident"]]
        expected = {"agency-a": {"soc@a.example.vn"}, "agency-b": {"admin@b.example.vn", "ops@b.example.vn"}}[agency]
        assert set(received.rcpt) <= expected and len(received.rcpt) == 1  # an alert of A never reaches B
        assert [str(a) for a in message["To"].addresses] == list(received.rcpt)
        assert {k.lower() for k in message.keys()} <= HEADERS
        subject = str(message["Subject"])
        assert "=?" not in subject and not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in subject)
        assert not message.defects


def test_a_document_that_cannot_become_an_email_fails_alone(tmp_path, es, es_url, prefix, indices) -> None:  # type: ignore[no-untyped-def]
    board = Switchboard()
    with smtp_server(board) as port:
        settings = write_settings(tmp_path / "secmon.yml", es_url, prefix, port)
        batch = [notification("agency-a", host=f"h{i}") for i in range(3)]
        enqueue(es, indices, settings, batch, T0)
        ids = [h["_id"] for h in es.search(index=indices.alerts, sort=[{"secmon.id": "asc"}])["hits"]["hits"]]
        # Someone with write access to the outbox broke two documents.
        es.update(index=indices.alerts, id=ids[0], doc={"secmon": {"timezone": "Mars/Olympus_Mons"}})
        es.update(index=indices.alerts, id=ids[1], doc={"secmon": {"recipient": "x@a.example.vn, y@b.example.vn"}},
                  refresh="wait_for")
        report = deliver_pending(es, indices, settings, T0)
        assert (report.sent, report.failed) == (1, 2), report
        assert all("cannot build the message" in e for e in report.errors)
    assert board.count() == 1 and board.received[0].rcpt == ("soc@a.example.vn",)
    failed = docs(es, indices, status="failed")
    assert sorted(d["secmon"]["id"] for d in failed) == sorted(ids[:2])
    assert all(d["secmon"]["last_error"].startswith("cannot build the message") for d in failed)
