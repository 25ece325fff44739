"""Correlation windows: the O(n log n) evaluation answers what the straightforward definition does.

`reference_fire` / `reference_firing_times` below are the previous implementation, which
tested every prefix of every window and rebuilt each window's counts from scratch (cubic, so
a flood of thousands of events stalled a scan): they state the semantics plainly. Hypothesis
draws correlations of every type and operator, nested ones included, over random small groups
of hits, and both must give the same bursts and firing times.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from secmon.detect.windowing.correlate import (
    MONOTONE,
    OPS,
    Burst,
    Correlation,
    Hit,
    Leaf,
    _Event,
    fire,
    firing_times,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KINDS = ("event_count", "value_count", "temporal", "temporal_ordered", "value_sum", "value_avg")


# --- the reference: the definition, evaluated the slow way ------------------------------------

def reference_fire(c: Correlation, hits: Sequence[Hit]) -> list[Burst]:
    events = sorted(_ref_inputs(c, hits), key=lambda e: e.at)
    found: list[tuple[int, int]] = []
    for i in range(len(events)):
        j = _ref_first(c, events, i)
        if j is None:
            continue
        if found and i <= found[-1][1]:
            found[-1] = (found[-1][0], max(found[-1][1], j))
        else:
            found.append((i, j))
    out = []
    for i, j in found:
        ids = tuple(ident for e in events[i:j + 1] for ident in e.ids)
        out.append(Burst(events[i].at, events[j].at, len(ids), ids))
    return out


def reference_firing_times(c: Correlation, hits: Sequence[Hit]) -> list[tuple[datetime, tuple[str, ...]]]:
    events = sorted(_ref_inputs(c, hits), key=lambda e: e.at)
    out, last_end = [], -1
    for i in range(len(events)):
        j = _ref_first(c, events, i)
        if j is None or j <= last_end:
            continue
        last_end = j
        out.append((events[j].at, tuple(ident for e in events[i:j + 1] for ident in e.ids)))
    return out


def _ref_inputs(c: Correlation, hits: Sequence[Hit]) -> list[_Event]:
    events: list[_Event] = []
    for index, item in enumerate(c.inputs):
        if isinstance(item, Leaf):
            events += [_Event(h.at, (h.id,), index, h.value) for h in hits if item.name in h.rules]
        else:
            events += [_Event(at, ids, index, None) for at, ids in reference_firing_times(item, hits)]
    return events


def _ref_end(c: Correlation, events: list[_Event], i: int) -> int:
    end = i
    while end + 1 < len(events) and events[end + 1].at - events[i].at <= c.timespan:
        end += 1
    return end


def _ref_first(c: Correlation, events: list[_Event], i: int) -> int | None:
    end = _ref_end(c, events, i)
    if c.kind == "temporal_ordered":
        if events[i].source != 0:
            return None
        wanted = 1
        for j in range(i + 1, end + 1):
            if events[j].source == wanted:
                wanted += 1
                if wanted == len(c.inputs):
                    return j
        return i if len(c.inputs) == 1 else None
    if c.op in MONOTONE:
        for j in range(i, end + 1):
            if _ref_holds(c, events[i:j + 1]):
                return j
        return None
    if i > 0 and _ref_end(c, events, i - 1) == end:
        return None
    return end if _ref_holds(c, events[i:end + 1]) else None


def _ref_holds(c: Correlation, window: list[_Event]) -> bool:
    test = OPS[c.op]
    if c.kind == "event_count":
        return test(sum(len(e.ids) for e in window), c.count)
    if c.kind == "temporal":
        return test(len({e.source for e in window}), c.count)
    values = [e.value for e in window if e.value is not None]
    if c.kind == "value_count":
        return test(len({str(v) for v in values}), c.count)
    numbers = [n for n in (_ref_number(v) for v in values) if n is not None]
    if not numbers:
        return False
    if c.kind == "value_sum":
        return test(sum(numbers), c.count)
    return test(sum(numbers) / len(numbers), c.count)


def _ref_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- random correlations and hits ----------------------------------------------------------
# Values are small integers and halves, so the reference's float arithmetic is exact too.

VALUES = st.sampled_from([None, -3, -1, 0, 1, 2, 5, 0.5, 1.5, "2", "x", "y", "ab"])
NAMES = ("a", "b", "c")


@st.composite
def correlations(draw: st.DrawFn, depth: int = 0) -> Correlation:
    kind = draw(st.sampled_from(KINDS))
    op = draw(st.sampled_from(sorted(OPS)))
    count = draw(st.sampled_from([0, 1, 2, 3, 4, 0.5, 2.5, -1]))
    width = draw(st.integers(1, 3))
    inputs: list[Leaf | Correlation] = [Leaf(name, {"match_all": {}}) for name in NAMES[:width]]
    if depth == 0 and draw(st.booleans()) and draw(st.booleans()):
        inputs[draw(st.integers(0, width - 1))] = draw(correlations(depth=1))
    span = timedelta(seconds=draw(st.integers(0, 20)))
    field = "v" if kind.startswith("value") else None
    return Correlation(f"c{depth}", kind, op, float(count), span, field, tuple(inputs))


hits_strategy = st.lists(
    st.tuples(st.integers(0, 40), st.sets(st.sampled_from(NAMES), min_size=1), VALUES), max_size=30)


def as_hits(drawn: list[tuple[int, set[str], Any]]) -> list[Hit]:
    hits = [Hit(T0 + timedelta(seconds=second), f"e{n:02d}", frozenset(names), value)
            for n, (second, names, value) in enumerate(drawn)]
    return sorted(hits, key=lambda h: (h.at, h.id))


@settings(max_examples=600, deadline=None)
@given(correlations(), hits_strategy)
def test_windows_fire_as_the_definition_says(correlation: Correlation, drawn: list[tuple[int, set[str], Any]]
                                             ) -> None:
    hits = as_hits(drawn)
    assert fire(correlation, hits) == reference_fire(correlation, hits)
    assert firing_times(correlation, hits) == reference_firing_times(correlation, hits)


def test_a_flood_in_one_group_is_linear_not_cubic() -> None:
    # 20,000 failures from one source for 20,000 users within the window: the old evaluation
    # rebuilt the distinct set for every prefix of every window (~10^12 steps). No timed
    # assertion: it simply has to finish within the test run.
    hits = [Hit(T0 + timedelta(milliseconds=n), f"e{n}", frozenset({"a"}), f"user{n}") for n in range(20_000)]
    never = Correlation("c", "value_count", "gte", 50_000.0, timedelta(hours=1), "v", (Leaf("a", {}),))
    assert fire(never, hits) == []
    many = Correlation("c", "value_count", "gte", 100.0, timedelta(hours=1), "v", (Leaf("a", {}),))
    (burst,) = fire(many, hits)
    assert burst.count == 20_000
