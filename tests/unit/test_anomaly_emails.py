"""An anomaly incident's email: the explanation rendered by the alert templates (vi and en, text and HTML),
with the values that come from logs (the entity, values never seen) made visible-only and escaped."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from secmon.alert.render import Templates, alert_context
from secmon.config import Agency, Settings
from secmon.model import Contribution, Explanation, Finding, Incident, Notification, Severity

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)
SETTINGS = Settings(agencies=(Agency("so-tttt", "Sở TTTT", "vi", recipients=("soc@a.example.vn",)),))
BUILT_IN = Templates()


def anomaly(entity: str, new: tuple[str, ...], typical: float | None = 1.0, centre_wide: bool = False) -> Incident:
    explanation = Explanation(
        score=0.9031, threshold=0.5571, model="ssh-auth-per-source:so-tttt",
        contributions=(Contribution("users", 40.0, typical, 100.0, 0.354),
                       Contribution("failure_ratio", 0.975, 0.1234, 97.4, 0.08)),
        new_values=(("new_users", new),),
        query=f'organization.id : "so-tttt" and source.address : "{entity}"', centre_wide=centre_wide)
    f = Finding(rule_id="ssh-auth-per-source", rule_title="Unusual SSH authentication", severity=Severity.MEDIUM,
                agency="so-tttt", group=(("source.address", entity),), first_seen=NOW,
                last_seen=NOW + timedelta(minutes=52), count=40, detector="anomaly", explanation=explanation)
    return Incident(f.incident_id, f, created=NOW)


def render(incident: Incident, language: str) -> tuple[str, str]:
    context = alert_context(Notification(incident, "opened", "opened"), "Sở TTTT", language, "Asia/Ho_Chi_Minh",
                            SETTINGS)
    rendered = BUILT_IN.render("alert", language, context)
    return rendered.text, rendered.html


@pytest.mark.parametrize("language,why,row,new", [
    ("en", "Why it is anomalous: anomaly score 0.903 (threshold 0.557, model ssh-auth-per-source:so-tttt)",
     "- users: 40 (usually 1 for this entity; above 100% of baseline windows; 35% of the isolation)",
     "- never seen before in new_users: guess0, guess1"),
    ("vi", "Vì sao bất thường: điểm bất thường 0.903 (ngưỡng 0.557, mô hình ssh-auth-per-source:so-tttt)",
     "- users: 40 (thường là 1 với đối tượng này; cao hơn 100% cửa sổ dữ liệu nền; đóng góp 35%)",
     "- giá trị chưa từng thấy ở new_users: guess0, guess1"),
])
def test_the_explanation_is_in_the_text_and_the_html_in_each_language(language: str, why: str, row: str,
                                                                     new: str) -> None:
    text, html = render(anomaly("203.0.113.50", ("guess0", "guess1")), language)
    assert why in text and row in text and new in text, text
    assert "- failure_ratio: 0.975 (" in text and "0.123 " in text  # numbers shortened, not raw floats
    assert 'source.address : "203.0.113.50"' in text
    assert "<td><code>users</code></td>" in html and "<b>40</b>" in html
    assert "source.address : &#34;203.0.113.50&#34;" in html


def test_a_rule_incident_has_no_explanation_and_an_entity_without_history_says_so() -> None:
    rule = Finding(rule_id="r1", rule_title="SSH brute force", severity=Severity.HIGH, agency="so-tttt",
                   group=(("source.address", "10.0.0.1"),), first_seen=NOW, last_seen=NOW, count=12)
    text, html = render(Incident(rule.incident_id, rule, created=NOW), "en")
    assert "anomalous" not in text and "anomalous" not in html
    text, html = render(anomaly("203.0.113.50", (), typical=None, centre_wide=True), "en")
    assert "(an entity with no history;" in text and "<i>an entity with no history</i>" in html
    assert "Scored by the centre-wide model" in text and "never seen before" not in text


hostile = st.text(st.characters(codec="utf-8"), max_size=300) | st.sampled_from([
    "<script>alert(1)</script>", "a\r\nBcc: x@evil.example", "\x1b[31mred", "\u202eevil", "=?utf-8?q?x?="])


@given(entity=hostile, new=st.lists(hostile, max_size=12))
@hsettings(max_examples=40, deadline=None)
def test_log_values_in_an_explanation_stay_visible_only_and_escaped(entity: str, new: list[str]) -> None:
    for language in ("vi", "en"):
        text, html = render(anomaly(entity, tuple(new)), language)
        assert all(c == "\n" or unicodedata.category(c) not in {"Cc", "Cf", "Cs", "Zl", "Zp"} for c in text)
        assert "<script>" not in html
