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

import math
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from secmon.detect.sigma.compile import Query

OPS: Mapping[str, Callable[[Any, Any], bool]] = {
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
    long_query: Query | None = None  # events with a value too long to index it may miss (compile.py)


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
    found: list[tuple[int, int]] = []  # (first index, last index) of each burst
    for i, j in _firings(correlation, events):
        if found and i <= found[-1][1]:
            found[-1] = (found[-1][0], max(found[-1][1], j))
        else:
            found.append((i, j))
    out = []
    for i, j in found:
        ids = tuple(ident for e in events[i:j + 1] for ident in e.ids)
        out.append(Burst(events[i].at, events[j].at, len(ids), ids))
    return out


def firing_times(correlation: Correlation, hits: Sequence[Hit]) -> list[tuple[datetime, tuple[str, ...]]]:
    """When a (nested) correlation fired, with the events that made it fire."""
    events = sorted(_inputs(correlation, hits), key=lambda e: e.at)
    out = []
    last_end = -1
    for i, j in _firings(correlation, events):
        if j <= last_end:
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


# --- the windows, each in O(n log n) at most -----------------------------------------------
# `_firings` yields, for every start i in order, the index j at which the window starting at i
# (events i..ends[i], those within `timespan` of event i) first satisfies the condition:
# - gt/gte (MONOTONE): the first j in i..ends[i] where the condition holds on events i..j;
# - lt/lte/eq/neq: ends[i], judged on the whole window, unless the window is the tail of the
#   previous one (ends[i - 1] == ends[i]);
# - temporal_ordered: the event completing the inputs in order, starting with event i of input 0.
# tests/unit/test_sigma_correlate.py holds it to the straightforward definition on random inputs.

def _firings(c: Correlation, events: list[_Event]) -> Iterator[tuple[int, int]]:
    ends = _ends(c, events)
    if c.kind == "temporal_ordered":
        yield from _ordered(c, events, ends)
    elif c.op not in MONOTONE:
        yield from _whole_windows(c, events, ends)
    elif c.kind in ("event_count", "temporal", "value_count"):
        yield from _growing(c, events, ends)
    else:
        yield from _growing_sums(c, events, ends)


def _ends(c: Correlation, events: list[_Event]) -> list[int]:
    """ends[i]: the last event within `timespan` of event i (two pointers: O(n))."""
    ends, end = [], 0
    for i, event in enumerate(events):
        end = max(end, i)
        while end + 1 < len(events) and events[end + 1].at - event.at <= c.timespan:
            end += 1
        ends.append(end)
    return ends


class _Window:
    """What a condition reads from a window of events, kept up to date as events enter and leave."""

    def __init__(self, kind: str):
        self.kind = kind
        self.events = 0  # event_count: matched events (a nested firing counts its events)
        self.distinct: dict[Any, int] = {}  # temporal: inputs; value_count: values (as text)

    def add(self, event: _Event) -> None:
        self._change(event, 1)

    def remove(self, event: _Event) -> None:
        self._change(event, -1)

    def _change(self, event: _Event, step: int) -> None:
        if self.kind == "event_count":
            self.events += step * len(event.ids)
            return
        key = event.source if self.kind == "temporal" else None if event.value is None else str(event.value)
        if key is None:
            return
        count = self.distinct.get(key, 0) + step
        if count:
            self.distinct[key] = count
        else:
            del self.distinct[key]

    def holds(self, c: Correlation) -> bool:
        return OPS[c.op](self.events if self.kind == "event_count" else len(self.distinct), c.count)


def _growing(c: Correlation, events: list[_Event], ends: list[int]) -> Iterator[tuple[int, int]]:
    """gt/gte on counts: the first satisfying j never moves left as i moves right (a window's
    count only grows with its end and shrinks with its start), so one pass of two pointers."""
    window, right = _Window(c.kind), 0  # the window holds events i..right-1
    for i in range(len(events)):
        if right < i:
            right = i
        while not (right > i and window.holds(c)) and right <= ends[i]:
            window.add(events[right])
            right += 1
        if right > i and window.holds(c):
            yield i, right - 1
        if right > i:
            window.remove(events[i])


def _whole_windows(c: Correlation, events: list[_Event], ends: list[int]) -> Iterator[tuple[int, int]]:
    """lt/lte/eq/neq: each window whole; starts and ends only move right, so O(n) updates."""
    if c.kind in ("value_sum", "value_avg"):
        sums = _Sums(events)
        for i, end in enumerate(ends):
            if (i == 0 or ends[i - 1] != end) and sums.holds(c, i, end):
                yield i, end
        return
    window, right = _Window(c.kind), 0
    for i, end in enumerate(ends):
        while right <= end:
            window.add(events[right])
            right += 1
        if (i == 0 or ends[i - 1] != end) and window.holds(c):
            yield i, end
        window.remove(events[i])


class _Sums:
    """Prefix sums of the numeric values (exact: ints, or Fractions of floats)."""

    def __init__(self, events: list[_Event]):
        self.total: list[Number] = [0]
        self.numbers: list[int] = [0]
        for event in events:
            value = _number(event.value)
            self.total.append(self.total[-1] + (value or 0))
            self.numbers.append(self.numbers[-1] + (value is not None))

    def holds(self, c: Correlation, i: int, j: int) -> bool:
        count = self.numbers[j + 1] - self.numbers[i]
        if not count:
            return False  # no number in the window: nothing to compare
        total = self.total[j + 1] - self.total[i]
        threshold = _exact(c.count)
        if c.kind == "value_sum":
            return OPS[c.op](total, threshold)
        return OPS[c.op](total, threshold * count)  # the average, without dividing


def _growing_sums(c: Correlation, events: list[_Event], ends: list[int]) -> Iterator[tuple[int, int]]:
    """gt/gte on value_sum / value_avg. Values may be negative, so a window's sum is not monotone
    in its end: for each i, the first j with P[j+1] - P[i] > t (>=) is a "first index from lo on
    whose prefix exceeds x" query, answered for all i in one right-to-left sweep over a stack of
    the prefix records (each the first to exceed the ones before it), searched by bisection.
    value_avg > t is sum(v - t) > 0 over the window's numbers."""
    threshold = _exact(c.count)
    weight: list[Number] = [0]  # prefix sums of v (value_sum) or v - t (value_avg), numbers only
    first_number: list[int] = [len(events)] * (len(events) + 1)  # first index >= i holding a number
    for event in events:
        value = _number(event.value)
        step = 0 if value is None else value if c.kind == "value_sum" else value - threshold
        weight.append(weight[-1] + step)
    for i in range(len(events) - 1, -1, -1):
        first_number[i] = i if _number(events[i].value) is not None else first_number[i + 1]
    strict = c.op == "gt"
    queries: dict[int, list[int]] = {}  # lo -> starts i whose search begins at prefix index lo
    for i in range(len(events)):
        lo = first_number[i] + 1  # the window must hold a number: j >= first_number[i]
        if lo <= ends[i] + 1:
            queries.setdefault(lo, []).append(i)
    answers: dict[int, int] = {}
    stack: list[int] = []  # prefix indexes, nearest last; their weights strictly decrease to the top
    keys: list[Number] = []  # -weight of each, so that bisect (ascending) applies
    for lo in range(len(events), 0, -1):
        while stack and weight[stack[-1]] <= weight[lo]:
            stack.pop()
            keys.pop()
        stack.append(lo)
        keys.append(-weight[lo])
        for i in queries.get(lo, ()):
            target = weight[i] + (threshold if c.kind == "value_sum" else 0)
            # the records from lo on, in index order, are stack[::-1]: the first whose weight
            # exceeds (reaches) the target is the deepest-to-top boundary of `weight > target`
            position = bisect_left(keys, -target) if strict else bisect_right(keys, -target)
            if position > 0:
                k = stack[position - 1]
                if k <= ends[i] + 1:
                    answers[i] = k - 1
    for i in sorted(answers):
        yield i, answers[i]


def _ordered(c: Correlation, events: list[_Event], ends: list[int]) -> Iterator[tuple[int, int]]:
    """temporal_ordered: from each event of input 0, the earliest event of input 1 after it, then of
    input 2 after that, ...: O(inputs) per start with next-occurrence tables."""
    inputs = len(c.inputs)
    after: list[list[int]] = []  # after[s][k]: first index >= k whose event comes from input s
    for source in range(inputs):
        table = [len(events)] * (len(events) + 1)
        for k in range(len(events) - 1, -1, -1):
            table[k] = k if events[k].source == source else table[k + 1]
        after.append(table)
    for i, event in enumerate(events):
        if event.source != 0:
            continue
        position = i
        for source in range(1, inputs):
            position = after[source][position + 1]
            if position > ends[i]:
                break
        else:
            yield i, position


Number = int | Fraction


def _exact(value: float) -> Number:
    return int(value) if float(value).is_integer() else Fraction(value)


def _number(value: Any) -> Number | None:
    """A value as an exact number (ints stay ints); None when it is not a finite number."""
    if isinstance(value, int):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    return Fraction(number)
