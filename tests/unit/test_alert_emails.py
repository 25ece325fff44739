"""Alert emails without a server: routing, header and terminal safety under hypothesis, templates and
their overrides, backoff, the daily digest's due day, and the SMTP guards."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from hypothesis import example, given, settings as hsettings, strategies as st

from secmon.alert.daily import due_window
from secmon.alert.dispatch import backoff
from secmon.alert.message import HEADERS, build
from secmon.alert.outbox import from_hit, new_doc
from secmon.alert.render import RenderError, Templates, alert_context
from secmon.alert.route import recipients
from secmon.alert.safe import header_text, one_line, paragraph
from secmon.alert.send import SmtpSession
from secmon.config import Agency, AlertSettings, Route, Settings, SmtpSettings, load_settings
from secmon.errors import ConfigError
from secmon.model import Finding, Incident, Notification, Severity

NOW = datetime(2025, 6, 14, 1, 30, tzinfo=timezone.utc)
A = Agency("agency-a", "Sở A", "vi", recipients=("soc@a.example.vn",), min_severity="medium")
B = Agency("agency-b", "Agency B", "en", recipients=("admin@b.example.vn", "ops@b.example.vn"))
CENTRE = Route("centre-soc", ("soc@centre.example.vn",), min_severity="high", language="en")
SETTINGS = Settings(agencies=(A, B), alerts=AlertSettings(routes=(CENTRE,), kibana_url="https://kibana.example.vn"))
DROPPED = {"Cc", "Cf", "Cs", "Zl", "Zp"}
BUILT_IN = Templates()  # compiling every template takes a while: once for the module


def finding(agency: str = "agency-a", severity: Severity = Severity.HIGH, **fields: object) -> Finding:
    base: dict[str, object] = dict(rule_id="r1", rule_title="SSH password brute force", severity=severity,
                                   agency=agency, group=(("host.hostname", "web01"),), first_seen=NOW,
                                   last_seen=NOW + timedelta(minutes=5), count=3)
    return Finding(**{**base, **fields})  # type: ignore[arg-type]


# --- routing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("agency,severity,expected", [
    ("agency-a", Severity.LOW, []),  # below A's floor and the centre's
    ("agency-a", Severity.MEDIUM, ["soc@a.example.vn"]),
    ("agency-a", Severity.HIGH, ["soc@a.example.vn", "soc@centre.example.vn"]),
    ("agency-b", Severity.LOW, ["admin@b.example.vn", "ops@b.example.vn"]),
    ("agency-b", Severity.CRITICAL, ["admin@b.example.vn", "ops@b.example.vn", "soc@centre.example.vn"]),
])
def test_routing_floors_and_the_centre_route(agency: str, severity: Severity, expected: list[str]) -> None:
    assert [r.address for r in recipients(SETTINGS, finding(agency, severity))] == expected


def test_a_route_names_its_agencies_and_an_address_is_routed_once() -> None:
    only_b = Route("b-watch", ("soc@a.example.vn", "watch@centre.example.vn"), min_severity="low",
                   agencies=("agency-b",))
    settings = Settings(agencies=(A, B), alerts=AlertSettings(routes=(only_b,)))
    assert [r.address for r in recipients(settings, finding("agency-a", Severity.CRITICAL))] == ["soc@a.example.vn"]
    routed = recipients(settings, finding("agency-b", Severity.LOW))
    assert [(r.address, r.route) for r in routed] == [
        ("admin@b.example.vn", "agency"), ("ops@b.example.vn", "agency"), ("soc@a.example.vn", "b-watch"),
        ("watch@centre.example.vn", "b-watch")]


# --- making log content safe --------------------------------------------------------------------

def visible(text: str, newlines: bool = False) -> bool:
    return all(unicodedata.category(c) not in DROPPED or (newlines and c == "\n") for c in text)


@given(st.text(max_size=3000))
@hsettings(max_examples=300)
def test_header_text_is_one_visible_line_without_encoded_words(value: str) -> None:
    out = header_text(value, 200)
    assert len(out) <= 200 and visible(out) and "=?" not in out and "?=" not in out
    assert one_line(value, 50) == one_line(value, 50).strip() and "\n" not in one_line(value)
    assert visible(paragraph(value), newlines=True)


@pytest.mark.parametrize("hostile", [
    "web01\r\nBcc: victim@evil.example", "=?utf-8?q?Bcc:_victim@evil.example?=", "=?=?utf-8?b?QmNjOg==?=?=",
    "\x1b[2J\x1b[31mred", "admin\u202egnp.exe", "a\u2028b\u2029c\x00d\x85e", "x" * 10_000, "\ud800lone",
])
def test_known_tricks_are_neutralised(hostile: str) -> None:
    out = header_text(hostile)
    assert "\n" not in out and "\r" not in out and "=?" not in out and visible(out) and len(out) <= 200


# --- a whole email, from hostile fields to parsed MIME -----------------------------------------

hostile = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from(list("ab =?_:Bcc\r\n\t\x00\x1b\u202e\u2028\u200bĐạô<>&\"'")), max_size=300),
    st.sampled_from(["=?utf-8?q?Bcc:_x@evil.example?=", "x\r\nBcc: x@evil.example", "a" * 10_000,
                     "<script>alert(1)</script>", "Dò mật khẩu SSH"]),
)


@given(host=hostile, user=hostile, title=hostile, description=hostile, vi_title=hostile, vi_text=hostile,
       agency=st.sampled_from(["agency-a", "agency-b"]))
@hsettings(max_examples=60, deadline=None)
@example(host="¡", user="¡ ¡", title="0" * 21, description="", vi_title="", vi_text="", agency="agency-a")
def test_any_log_content_gives_a_well_formed_email_to_exactly_the_routed_recipient(
        host: str, user: str, title: str, description: str, vi_title: str, vi_text: str, agency: str) -> None:
    f = finding(agency, Severity.CRITICAL, rule_title=title, description=description,
                group=(("host.hostname", host), ("user.name", user)), translations=(("vi", vi_title, vi_text),))
    incident = Incident(f.incident_id, f, created=NOW)
    templates = BUILT_IN
    routed = recipients(SETTINGS, f)
    assert routed and all(r.address.endswith(("@centre.example.vn", f"@{agency[-1]}.example.vn")) for r in routed)
    for recipient in routed:
        context = alert_context(Notification(incident, "opened", "opened"), SETTINGS.agency(agency).name,
                                recipient.language, recipient.timezone, SETTINGS)
        rendered = templates.render("alert", recipient.language, context)
        doc = new_doc(kind="alert", delivery_id="d1", agencies={agency: "x"}, recipient=recipient, rendered=rendered,
                      sender="secmon@monitoring.example.vn", now=NOW, incident_ids=[incident.id])
        raw = build(from_hit({"_id": "d1", "_source": doc}), "secmon@monitoring.example.vn", NOW).as_bytes()
        message = message_from_bytes(raw, policy=policy.default)
        assert {k.lower() for k in message.keys()} <= HEADERS
        assert [str(a) for a in message["To"].addresses] == [recipient.address]
        assert message["Bcc"] is None and message["Cc"] is None
        subject = str(message["Subject"])
        assert subject == rendered.subject  # decoded back exactly: no encoded word split in two
        assert visible(subject) and "=?" not in subject and len(subject) <= 250
        assert message["Date"].datetime.utcoffset() == timedelta(hours=7)
        text = message.get_body(("plain",)).get_content()
        assert visible(text.replace("\r\n", "\n"), newlines=True)
        html = message.get_body(("html",)).get_content()
        assert "<script>" not in html
        assert not message.defects and all(not part.defects for part in message.walk())


# --- templates --------------------------------------------------------------------------------

def test_an_override_replaces_one_file_and_keeps_the_others(tmp_path: Path) -> None:
    (tmp_path / "vi").mkdir()
    (tmp_path / "vi" / "alert.subject.txt").write_text("[SOC tỉnh] {{ incident.severity_name }}: {{ incident.title }}\n")
    templates = Templates(tmp_path)
    f = finding(translations=(("vi", "Dò mật khẩu SSH", ""),))
    context = alert_context(Notification(Incident("i1", f), "opened", "opened"), "Sở A", "vi", "Asia/Ho_Chi_Minh",
                            SETTINGS)
    rendered = templates.render("alert", "vi", context)
    assert rendered.subject == "[SOC tỉnh] Cao: Dò mật khẩu SSH"
    assert "Quy tắc phát hiện: Dò mật khẩu SSH" in rendered.text  # the built-in body
    english = alert_context(Notification(Incident("i1", f), "opened", "opened"), "Sở A", "en", "Asia/Ho_Chi_Minh",
                            SETTINGS)
    assert templates.render("alert", "en", english).subject.startswith("[secmon][High] Security alert: ")


def test_a_broken_override_is_a_config_error_naming_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "alert.txt").write_text("line one\n{% if %}\n")
    with pytest.raises(ConfigError) as caught:
        Templates(tmp_path)
    assert "alert.txt:2" in str(caught.value)
    with pytest.raises(ConfigError, match="is not a folder"):
        Templates(tmp_path / "missing")


def test_an_override_using_an_unknown_variable_fails_that_render_only(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "alert.subject.txt").write_text("{{ incident.no_such_field }}\n")
    context = alert_context(Notification(Incident("i1", finding("agency-b")), "opened", "opened"), "B", "en",
                            "Asia/Ho_Chi_Minh", SETTINGS)
    with pytest.raises(RenderError):
        Templates(tmp_path).render("alert", "en", context)


# --- timing -----------------------------------------------------------------------------------

def test_backoff_doubles_from_retry_base_up_to_retry_max() -> None:
    settings = Settings(alerts=AlertSettings(retry_base="1m", retry_max="1h"))
    assert [backoff(settings, n) for n in (0, 1, 2, 5, 6, 7, 100)] == [
        timedelta(minutes=m) for m in (1, 2, 4, 32, 60, 60, 60)]


@pytest.mark.parametrize("utc,day,start_utc", [
    ("2025-06-14T01:30:00+00:00", "2025-06-14", "2025-06-13T01:00:00+00:00"),  # 08:30 local: today's is due
    ("2025-06-14T00:59:00+00:00", "2025-06-13", "2025-06-12T01:00:00+00:00"),  # 07:59 local: yesterday's still
    ("2025-06-14T01:00:00+00:00", "2025-06-14", "2025-06-13T01:00:00+00:00"),  # 08:00 sharp
])
def test_the_daily_digest_due_is_the_latest_local_digest_time(utc: str, day: str, start_utc: str) -> None:
    date, start, end = due_window(A, "08:00", datetime.fromisoformat(utc))
    assert date.isoformat() == day and start == datetime.fromisoformat(start_utc)
    assert end - start == timedelta(days=1)


# --- SMTP guards and config -------------------------------------------------------------------

def test_smtp_auth_without_tls_is_refused_before_connecting() -> None:
    with pytest.raises(ConfigError, match="without TLS"):
        SmtpSession(SmtpSettings(username_env="SECMON_TEST_SMTP_USER", password_env="SECMON_TEST_SMTP_PASSWORD"))


def test_smtp_auth_with_missing_credentials_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECMON_TEST_SMTP_USER", raising=False)
    with pytest.raises(ConfigError, match="must both be set"):
        SmtpSession(SmtpSettings(starttls=True, username_env="SECMON_TEST_SMTP_USER",
                                 password_env="SECMON_TEST_SMTP_PASSWORD"))


@pytest.mark.parametrize("alerts,message", [
    ("  claim_timeout: 5s\n", "must be longer than smtp.timeout"),
    ("  kibana_url: \"javascript:alert(1)\"\n", "is not an http(s) URL"),
])
def test_alert_settings_that_would_break_delivery_are_rejected(tmp_path: Path, alerts: str, message: str) -> None:
    path = tmp_path / "secmon.yml"
    path.write_text(f"smtp:\n  timeout: 10\nalerts:\n{alerts}")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path)
