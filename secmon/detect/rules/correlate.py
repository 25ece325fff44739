"""Sliding-window evaluation of matching events: the same code for the cluster and in-process.

The cluster (or the in-process matcher) only says which events match which
rule; everything about time windows happens here, in Python, never in scripts.

`bursts` (single rules and `event_count >= N`): a burst is a run of matches
where every window of `threshold` consecutive events spans at most `timespan`;
runs closer than `timespan` to each other are one burst. A plain rule is
threshold 1 with its suppression period as timespan, so one noisy host gives
one incident, not a thousand.

`fire` (every Sigma correlation type): a window starts at each event and spans
`timespan`; it fires at the first event where the condition holds. `lt`, `lte`,
`eq`, `neq` can stop holding as events arrive, so they are judged on whole
windows only (a window that is merely the tail of the previous one is skipped:
three events in a minute are not also "two events in a minute"). Overlapping firing windows are one burst. Inputs may be other
correlations (e.g. "five failures, then a success"): a nested correlation's
bursts become events at their firing time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from secmon.detect.rules.compile import Query

OPS: Mapping[str, Callable[[float, float], bool]] = {
    "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge, "eq": operator.eq,
    "neq": operator.ne}
MONOTONE = {"gt", "gte"}  # once true within a growing window, stays true


@dataclass(frozen=True)
class Burst:
    first: datetime
    last: datetime
    count: int
    ids: tuple[str, ...]  # ids of the events in the burst, oldest first


@dataclass(frozen=True)
class Leaf:
    """A referenced (single) rule: its name and its query."""

    name: str
    query: Query  # for the cluster (named, so hits say which leaves they matched)
    refine: Query | None = None  # exact condition when `query` is a superset (|fieldref, costly regexes)


@dataclass(frozen=True)
class Correlation:
    name: str
    kind: str  # event_count | value_count | value_sum | value_avg | temporal | temporal_ordered
    op: str
    count: float
    timespan: timedelta
    value_field: str | None
    inputs: tuple[Leaf | Correlation, ...]

    def leaves(self) -> list[Leaf]:
        out: list[Leaf] = []
        for item in self.inputs:
            out.extend(item.leaves() if isinstance(item, Correlation) else [item])
        return out


@dataclass(frozen=True)
class Hit:
    """One matching event as the windowing sees it."""

    at: datetime
    id: str
    rules: frozenset[str]  # names of the leaf rules it matched
    value: Any = None  # the correlation's value field, if any


def bursts(events: list[tuple[datetime, str]], threshold: int, timespan: timedelta) -> list[Burst]:
    """`events` sorted by time -> bursts; empty when no window reaches `threshold`."""
    found: list[Burst] = []
    start = end = -1  # index range of the burst being grown
    for i in range(len(events) - threshold + 1):
        j = i + threshold - 1
        if events[j][0] - events[i][0] > timespan:
            continue
        if end >= 0 and events[i][0] - events[end][0] <= timespan:
            end = j  # overlaps or follows closely: same burst
            continue
        if end >= 0:
            found.append(_burst(events, start, end))
        start, end = i, j
    if end >= 0:
        found.append(_burst(events, start, end))
    return found


def _burst(events: list[tuple[datetime, str]], start: int, end: int) -> Burst:
    chunk = events[start:end + 1]
    return Burst(chunk[0][0], chunk[-1][0], len(chunk), tuple(ident for _, ident in chunk))


@dataclass(frozen=True)
class _Event:
    at: datetime
    ids: tuple[str, ...]
    source: int  # which input of the correlation it came from
    value: Any


def fire(correlation: Correlation, hits: Sequence[Hit]) -> list[Burst]:
    """The bursts of one group's hits (sorted by time) for a correlation."""
    events = sorted(_inputs(correlation, hits), key=lambda e: e.at)
    found: list[tuple[int, int, datetime]] = []  # (first index, last index, firing time)
    for i in range(len(events)):
        j = _first_satisfied(correlation, events, i)
        if j is None:
            continue
        if found and i <= found[-1][1]:
            found[-1] = (found[-1][0], max(found[-1][1], j), found[-1][2])
        else:
            found.append((i, j, events[j].at))
    out = []
    for i, j, _ in found:
        ids = tuple(ident for e in events[i:j + 1] for ident in e.ids)
        out.append(Burst(events[i].at, events[j].at, len(ids), ids))
    return out


def firing_times(correlation: Correlation, hits: Sequence[Hit]) -> list[tuple[datetime, tuple[str, ...]]]:
    """When a (nested) correlation fired, with the events that made it fire."""
    events = sorted(_inputs(correlation, hits), key=lambda e: e.at)
    out = []
    last_end = -1
    for i in range(len(events)):
        j = _first_satisfied(correlation, events, i)
        if j is None or j <= last_end:
            continue
        last_end = j
        out.append((events[j].at, tuple(ident for e in events[i:j + 1] for ident in e.ids)))
    return out


def _inputs(correlation: Correlation, hits: Sequence[Hit]) -> list[_Event]:
    events: list[_Event] = []
    for index, item in enumerate(correlation.inputs):
        if isinstance(item, Leaf):
            events += [_Event(h.at, (h.id,), index, h.value) for h in hits if item.name in h.rules]
        else:
            events += [_Event(at, ids, index, None) for at, ids in firing_times(item, hits)]
    return events


def _window_end(c: Correlation, events: list[_Event], i: int) -> int:
    end = i
    while end + 1 < len(events) and events[end + 1].at - events[i].at <= c.timespan:
        end += 1
    return end


def _first_satisfied(c: Correlation, events: list[_Event], i: int) -> int | None:
    """Index of the event at which the window starting at `i` satisfies the condition, or None."""
    end = _window_end(c, events, i)
    if c.kind == "temporal_ordered":
        return _in_order(c, events, i, end)
    if c.op in MONOTONE:
        for j in range(i, end + 1):
            if _holds(c, events[i:j + 1]):
                return j
        return None
    if i > 0 and _window_end(c, events, i - 1) == end:
        return None  # a tail of the previous window, not a window of its own ("eq: 2" of 3 events)
    return end if _holds(c, events[i:end + 1]) else None


def _holds(c: Correlation, window: list[_Event]) -> bool:
    test = OPS[c.op]
    if c.kind == "event_count":
        return test(sum(len(e.ids) for e in window), c.count)
    if c.kind == "temporal":
        return test(len({e.source for e in window}), c.count)
    values = [e.value for e in window if e.value is not None]
    if c.kind == "value_count":
        return test(len({str(v) for v in values}), c.count)
    numbers = [n for n in (_number(v) for v in values) if n is not None]
    if not numbers:
        return False
    if c.kind == "value_sum":
        return test(sum(numbers), c.count)
    return test(sum(numbers) / len(numbers), c.count)  # value_avg


def _in_order(c: Correlation, events: list[_Event], i: int, end: int) -> int | None:
    """The window starting at `i` (an event of the first input) holds every input in order."""
    if events[i].source != 0:
        return None
    wanted = 1
    for j in range(i + 1, end + 1):
        if events[j].source == wanted:
            wanted += 1
            if wanted == len(c.inputs):
                return j
    return i if len(c.inputs) == 1 else None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
