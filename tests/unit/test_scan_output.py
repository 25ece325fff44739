"""The scan's text output: a screenful of the incidents that matter, and where the rest are."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from secmon.cli.output import SHOWN, most_important, scan_text
from secmon.model import Finding, Incident, ScanSummary, Severity

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)


def incident(n: int, severity: Severity, minute: int) -> Incident:
    finding = Finding(rule_id="r1", rule_title="SSH password brute force", severity=severity, agency="so-tttt",
                      group=(("source.ip", f"203.0.113.{n}"),), first_seen=T0,
                      last_seen=T0 + timedelta(minutes=minute), count=10)
    return Incident(id=f"{n:040x}", finding=finding)


def test_new_first_then_the_most_severe_then_the_most_recent() -> None:
    old_critical, old_low_recent, old_low = incident(1, Severity.CRITICAL, 1), incident(2, Severity.LOW, 9), \
        incident(3, Severity.LOW, 5)
    new_low = incident(4, Severity.LOW, 0)
    ranked = most_important((old_low, old_low_recent, new_low, old_critical), {new_low.id})
    assert ranked == [new_low, old_critical, old_low_recent, old_low]


def test_a_long_scan_shows_a_screenful_and_says_how_many_more() -> None:
    many = tuple(incident(n, Severity.MEDIUM, n) for n in range(SHOWN + 817))
    summary = ScanSummary(id="a" * 40, started=T0, window_from=T0, window_to=T0 + timedelta(hours=1), rules_run=1,
                          rules_failed=(), incidents=many, new_incident_ids=(), deliveries_sent=0,
                          deliveries_pending=0)
    text = scan_text(summary, "Asia/Ho_Chi_Minh", "secmon incidents list --since X")
    assert len(text.splitlines()) < SHOWN + 10
    assert "incidents: 837 (0 new" in text
    assert text.splitlines()[-1].startswith("... and 817 more") and text.endswith(
        "All of them: secmon incidents list --since X")
    few = ScanSummary(**{**summary.__dict__, "incidents": many[:3]})
    assert "more" not in scan_text(few, "Asia/Ho_Chi_Minh")
