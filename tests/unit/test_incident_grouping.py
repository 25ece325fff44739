"""Folding findings into incidents (pure): one incident per group while the activity goes on,
idempotent merging, notifications that repeat nothing, and the lifecycle."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secmon.errors import InputError
from secmon.incidents import lifecycle
from secmon.incidents.exceptions import exclude_query, is_suppressed, new
from secmon.incidents.grouping import Burst, Policy, State, decide, decide_all, merge_bursts
from secmon.model import Finding, Severity

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)
POLICY = Policy(quiet_period=timedelta(hours=1))


def finding(start_min: float, end_min: float, count: int = 10, severity: Severity = Severity.HIGH,
            source: str = "203.0.113.9") -> Finding:
    return Finding(rule_id="r1", rule_title="SSH password brute force", severity=severity, agency="so-tttt",
                   group=(("source.ip", source),), first_seen=T0 + timedelta(minutes=start_min),
                   last_seen=T0 + timedelta(minutes=end_min), count=count)


def fold(findings: list[Finding], policy: Policy = POLICY) -> tuple[dict[str, State], list[tuple[str, str]]]:
    """Scan after scan: each finding decided against the state the previous ones left."""
    states: dict[str, State] = {}
    told = []
    for f in findings:
        decision = decide(list(states.values()), f, policy, T0)
        states[decision.state.incident.id] = decision.state
        told += [(n.incident.id, n.key) for n in decision.notifications]
    return states, told


def test_a_three_hour_activity_seen_by_sliding_scans_is_one_incident_told_once() -> None:
    # A scan every 5 minutes sees the burst from one timespan back to its window's end.
    findings = [finding(max(0, m - 5), m, count=20) for m in range(5, 185, 5)]
    states, told = fold(findings)
    (state,) = states.values()
    assert state.incident.finding.first_seen == T0 and state.incident.finding.last_seen == T0 + timedelta(minutes=180)
    assert told == [(state.incident.id, "opened")]


def test_reminders_follow_the_renotify_interval_of_activity() -> None:
    policy = Policy(quiet_period=timedelta(hours=1), renotify_interval=timedelta(hours=1))
    states, told = fold([finding(max(0, m - 5), m) for m in range(5, 185, 5)], policy)
    assert [key for _, key in told] == ["opened", "reminder:1", "reminder:2", "reminder:3"]


def test_a_quiet_gap_longer_than_the_quiet_period_opens_a_new_incident() -> None:
    states, told = fold([finding(0, 10), finding(75, 80)])
    assert [key for _, key in told] == ["opened", "opened"]
    assert len({incident for incident, _ in told}) == 2


def test_severity_rise_is_told_once_and_growth_is_not() -> None:
    states, told = fold([finding(0, 5, severity=Severity.MEDIUM), finding(3, 9, severity=Severity.MEDIUM),
                         finding(8, 12, severity=Severity.CRITICAL), finding(11, 15, severity=Severity.CRITICAL)])
    assert [key for _, key in told] == ["opened", "severity:critical"]
    (state,) = states.values()
    assert state.incident.finding.severity == Severity.CRITICAL
    assert [c.action for c in state.incident.history] == ["opened", "escalated"]


def test_after_close_old_events_reopen_nothing_and_new_ones_open_a_successor() -> None:
    states, _ = fold([finding(0, 10)])
    (state,) = states.values()
    closed = lifecycle.close(state, "analyst", "benign", "backup job", T0)
    again = decide([closed], finding(0, 10), POLICY, T0)
    assert again.notifications == () and not again.changed
    later = decide([closed], finding(5, 20), POLICY, T0)
    assert later.is_new and later.state.incident.id != state.incident.id
    assert [n.key for n in later.notifications] == ["opened"]
    # Deterministic: the same decision from the same state gives the same id.
    assert decide([closed], finding(5, 20), POLICY, T0).state.incident.id == later.state.incident.id
    # An old finding far before a newer incident of the group belongs to the old one, not the new.
    old_and_new, _ = fold([finding(0, 10), finding(300, 310)])
    replay, told = fold([finding(0, 10), finding(300, 310), finding(0, 10)])
    assert replay == old_and_new and [k for _, k in told] == ["opened", "opened"]


def test_decide_all_folds_findings_of_one_group_in_one_scan() -> None:
    decisions = decide_all({}, [finding(30, 40), finding(0, 10), finding(5, 12, source="198.51.100.1")], POLICY, T0)
    assert len(decisions) == 2
    big = next(d for d in decisions if dict(d.state.incident.finding.group)["source.ip"] == "203.0.113.9")
    assert big.state.incident.occurrences == 2 and [n.key for n in big.notifications] == ["opened"]


bursts = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 60), st.integers(1, 50)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(bursts)
def test_the_same_findings_again_change_nothing_and_tell_nobody(spans) -> None:  # type: ignore[no-untyped-def]
    items = [finding(start, start + length, count) for start, length, count in sorted(spans)]
    once, told_once = fold(items)
    twice, told_twice = fold(items + items)  # a re-run after a crash, or two scans of one window
    assert twice == once and told_twice == told_once


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 100), st.integers(1, 30)), max_size=30))
def test_merged_bursts_are_disjoint_and_cover_every_input(spans) -> None:  # type: ignore[no-untyped-def]
    merged: tuple[Burst, ...] = ()
    for start, length, count in spans:
        merged = merge_bursts(merged, Burst(T0 + timedelta(minutes=start), T0 + timedelta(minutes=start + length),
                                            count))
    assert all(a.end < b.start for a, b in zip(merged, merged[1:]))
    for start, _, _ in spans:
        begin = T0 + timedelta(minutes=start)
        assert any(b.start <= begin <= b.end for b in merged)


def test_lifecycle_refuses_what_does_not_apply() -> None:
    states, _ = fold([finding(0, 10)])
    (state,) = states.values()
    acked = lifecycle.acknowledge(state, "an", "looking", T0)
    with pytest.raises(InputError, match="acknowledge applies to open"):
        lifecycle.acknowledge(acked, "an", "", T0)
    with pytest.raises(InputError, match="not a resolution"):
        lifecycle.close(acked, "an", "fixed", "", T0)
    closed = lifecycle.close(acked, "an", "true_positive", "blocked at the firewall", T0)
    assert closed.incident.status == "closed" and closed.incident.resolution == "true_positive"
    reopened = lifecycle.reopen(closed, "an", "it came back", T0)
    assert reopened.incident.status == "open" and reopened.incident.resolution == ""
    assert [c.action for c in reopened.incident.history] == ["opened", "acknowledged", "closed", "reopened"]


def test_exceptions_become_must_not_clauses_and_suppressions_drop_findings() -> None:
    exception = new("exception", "r1", "so-tttt", [("source.ip", "10.0.0.5")], T0 + timedelta(days=1),
                    "backup server", "an", T0)
    query = exclude_query({"term": {"event.action": "x"}}, "r1", [exception])
    assert query["bool"]["must_not"] == [{"bool": {"filter": [{"term": {"source.ip": "10.0.0.5"}},
                                                              {"term": {"organization.id": "so-tttt"}}]}}]
    assert exclude_query({"match_all": {}}, "other-rule", [exception]) == {"match_all": {}}
    suppression = new("suppression", "r1", "*", [("source.ip", "203.0.113.9")], T0 + timedelta(days=1), "noisy",
                      "an", T0)
    assert is_suppressed(finding(0, 1), [suppression])
    assert not is_suppressed(finding(0, 1, source="198.51.100.1"), [suppression])
    with pytest.raises(InputError, match="reason"):
        new("exception", "*", "*", [("a", "b")], T0 + timedelta(days=1), " ", "an", T0)
    with pytest.raises(InputError, match="not in the future"):
        new("exception", "*", "*", [("a", "b")], T0, "why", "an", T0)
