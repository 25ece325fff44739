"""A single rule scanned window by window from its new matches only (plan.window_only) folds into the
incidents one backfill over the same events gives: same incidents, ids, spans, counts, occurrences (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from secmon.detect.compiled import CompiledRule
from secmon.detect.windowing.findings import findings
from secmon.incidents.grouping import Policy, State, decide_all
from secmon.model import Finding, Severity

T0 = datetime(2026, 11, 29, tzinfo=UTC)
TICK = timedelta(minutes=5)


def single(timespan: timedelta) -> CompiledRule:
    return CompiledRule(id="web-scanner", title="scanner", description="", severity=Severity.HIGH, tags=(),
                        path="web-scanner.yml", query={"match_all": {}}, group_by=("source.ip",), threshold=1,
                        timespan=timespan, kind="single")


def hit(n: int, at: datetime, source: str) -> dict[str, Any]:
    return {"_id": f"e{n:04d}", "fields": {"@timestamp": [at.isoformat()], "organization.id": ["so-a"],
                                           "source.ip": [source]}}


def fold(batches: list[tuple[str, list[Finding]]], quiet: timedelta) -> list[State]:
    """Each batch's findings decided against what the earlier batches stored, as scan after scan does."""
    stored: dict[str, State] = {}
    for window, found in batches:
        groups: dict[str, list[State]] = {}
        for state in stored.values():
            groups.setdefault(state.group_key, []).append(state)
        for decision in decide_all(groups, found, Policy(quiet, window=window), T0):
            stored[decision.state.incident.id] = decision.state
    return sorted(stored.values(), key=lambda s: s.incident.id)


def summary(states: list[State]) -> list[tuple[Any, ...]]:
    return [(s.incident.id, s.incident.finding.first_seen, s.incident.finding.last_seen, s.incident.finding.count,
             s.incident.occurrences) for s in states]


def by_ticks(rule: CompiledRule, hits: list[dict[str, Any]], arrived: list[datetime], quiet: timedelta
             ) -> list[State]:
    """The scheduler: each 5-minute window of arrival, its new matches alone."""
    windows: dict[datetime, list[dict[str, Any]]] = {}
    for found, when in zip(hits, arrived):
        windows.setdefault(T0 + (when - T0) // TICK * TICK, []).append(found)
    return fold([(f"event.ingested:{start.isoformat()}",
                  findings(rule, new, None, new=frozenset(h["_id"] for h in new)))
                 for start, new in sorted(windows.items())], quiet)


def test_a_burst_cut_by_every_window_is_one_incident_of_one_occurrence() -> None:
    # A 6-hour suppression, an hour's quiet period: matches two hours apart are one burst.
    rule = single(timedelta(hours=6))
    times = [T0 + timedelta(minutes=m) for m in (0, 3, 7, 130, 250, 251, 600)]
    hits = [hit(n, at, "198.51.100.7") for n, at in enumerate(times)]
    backfill = fold([("@timestamp:day", findings(rule, hits))], timedelta(hours=1))
    ticks = by_ticks(rule, hits, times, timedelta(hours=1))
    assert summary(ticks) == summary(backfill)
    (state,) = ticks
    assert state.incident.finding.count == 7 and state.incident.occurrences == 1
    assert [(b.start, b.end, b.count) for b in state.bursts] == [(times[0], times[-1], 7)]


def test_scanning_a_window_again_changes_nothing() -> None:
    rule = single(timedelta(hours=1))
    times = [T0 + timedelta(minutes=m) for m in (1, 2, 40, 44)]
    hits = [hit(n, at, "198.51.100.7") for n, at in enumerate(times)]
    once = by_ticks(rule, hits, times, timedelta(hours=1))
    twice = fold([(f"event.ingested:{T0.isoformat()}", findings(rule, hits[:2], None, new={"e0000", "e0001"})),
                  (f"event.ingested:{T0.isoformat()}", findings(rule, hits[:2], None, new={"e0000", "e0001"})),
                  (f"event.ingested:{(T0 + 8 * TICK).isoformat()}", findings(rule, hits[2:], None,
                                                                             new={"e0002", "e0003"}))],
                 timedelta(hours=1))
    assert summary(twice) == summary(once)
    assert once[0].incident.finding.count == 4 and once[0].incident.occurrences == 1


def test_a_late_event_inside_a_stored_burst_adds_to_its_count_only() -> None:
    rule = single(timedelta(hours=1))
    times = [T0 + timedelta(minutes=m) for m in (0, 30, 50)]
    hits = [hit(n, at, "198.51.100.7") for n, at in enumerate(times)]
    arrived = [times[0], times[2], times[2] + timedelta(minutes=20)]  # the second one, 40 minutes late
    ticks = by_ticks(rule, hits, arrived, timedelta(hours=1))
    backfill = fold([("@timestamp:day", findings(rule, hits))], timedelta(hours=1))
    assert summary(ticks) == summary(backfill)


@settings(max_examples=150, deadline=None)
@given(gaps=st.lists(st.integers(min_value=0, max_value=8 * 60), min_size=1, max_size=40),
       sources=st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2"]), min_size=40, max_size=40),
       timespan=st.sampled_from([1, 10, 60, 360]), quiet=st.sampled_from([5, 60, 180]),
       delay=st.integers(min_value=0, max_value=9))
def test_windows_in_arrival_order_give_the_backfill_incidents(gaps: list[int], sources: list[str], timespan: int,
                                                              quiet: int, delay: int) -> None:
    """Events arriving in the order they happened (a shipping delay of `delay` minutes), any gaps."""
    rule = single(timedelta(minutes=timespan))
    times, at = [], T0
    for gap in gaps:
        at += timedelta(minutes=gap, seconds=17)
        times.append(at)
    hits = [hit(n, moment, sources[n]) for n, moment in enumerate(times)]
    backfill = fold([("@timestamp:day", findings(rule, hits))], timedelta(minutes=quiet))
    ticks = by_ticks(rule, hits, [t + timedelta(minutes=delay) for t in times], timedelta(minutes=quiet))
    assert summary(ticks) == summary(backfill)
