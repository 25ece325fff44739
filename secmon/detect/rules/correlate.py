"""Sliding-window grouping of matching events: the same code for the cluster and in-process.

A burst is a run of matches where every window of `threshold` consecutive
events spans at most `timespan`; runs closer than `timespan` to each other are
one burst. An event_count correlation with `gte: N` is threshold N; a plain rule
is threshold 1 with its suppression period as timespan, so one noisy host gives
one incident, not a thousand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Burst:
    first: datetime
    last: datetime
    count: int
    ids: tuple[str, ...]  # ids of the events in the burst, oldest first


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
