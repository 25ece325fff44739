"""Correlation windows on a flood: 100,000 events in one group, each correlation type.

    python bench/rules/correlate.py [--events 100000] [--runs 3]

For every Sigma correlation type (event_count, value_count, temporal, temporal_ordered,
value_sum, value_avg) it builds --events hits of one group, one per second (a steady flood:
about 28 hours), a one-hour timespan (3,600 events per window), and times
`secmon.detect.windowing.correlate.fire`, the code every scan and offline run uses after matching,
twice per type:
- `never`: a threshold no window reaches, so every window is examined to its end (the worst case
  for a search that stops at the first satisfying event);
- `often`: a threshold most windows reach, so firings are found and merged into bursts.
Process CPU seconds, median of --runs; the target is under 2 s per case. Before this version,
fire() tested every prefix of every window and rebuilt the window's counts each time (cubic): a
value_count over a few thousand failed logons took minutes. Writes bench/results/correlate.json.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from secmon.detect.windowing.correlate import Correlation, Hit, Leaf, fire

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(hours=1)
TARGET_SECONDS = 2.0

# kind -> (inputs, (op, count) never reached, (op, count) reached by most windows)
CASES = {
    "event_count": (1, ("gte", 10_000), ("gte", 100)),
    "value_count": (1, ("gte", 10_000), ("gte", 100)),
    "temporal": (3, ("gte", 4), ("gte", 3)),
    "temporal_ordered": (3, None, None),  # the order decides (no condition): see hits()
    "value_sum": (1, ("gt", 10 ** 12), ("gt", 50_000)),
    "value_avg": (1, ("gt", 10 ** 6), ("gt", 400)),
}


def hits(kind: str, events: int, often: bool) -> list[Hit]:
    """One group's hits, one per second. Leaf names a/b/c; values are user names (value_count) or
    byte counts (value_sum/avg); the temporal types need a, b and c (in that order), which `often`
    cycles through and `never` lacks (c never comes)."""
    out = []
    for n in range(events):
        if kind in ("temporal", "temporal_ordered"):
            names = frozenset("abc"[n % 3]) if often else frozenset("ab"[n % 2])
        else:
            names = frozenset("a")
        value: object = f"user{n}" if kind == "value_count" else (n * 7919) % 1000 if kind.startswith("value_") else None
        out.append(Hit(T0 + timedelta(seconds=n), f"e{n}", names, value))
    return out


def correlation(kind: str, often: bool) -> Correlation:
    width, never, reached = CASES[kind]
    op, count = (reached if often else never) or ("gte", 3)
    inputs = tuple(Leaf(name, {}) for name in "abc"[:width])
    return Correlation("bench", kind, op, float(count), SPAN, "v" if kind.startswith("value_") else None, inputs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "correlate.json")
    args = parser.parse_args()
    results = {}
    for kind in CASES:
        for often in (False, True):
            group = hits(kind, args.events, often)
            rule = correlation(kind, often)
            seconds, bursts = [], []
            for _ in range(args.runs):
                started = time.process_time()
                found = fire(rule, group)
                seconds.append(time.process_time() - started)
                bursts.append(len(found))
            name = f"{kind}/{'often' if often else 'never'}"
            results[name] = {"condition": [rule.op, rule.count], "bursts": bursts[0],
                             "seconds_median": round(statistics.median(seconds), 3),
                             "seconds_runs": [round(s, 3) for s in seconds],
                             "under_target": statistics.median(seconds) < TARGET_SECONDS}
            print(f"{name:28} {statistics.median(seconds):7.3f} s  bursts {bursts[0]}")
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "what": "secmon.detect.windowing.correlate.fire over one group's hits (sorted, in memory): windowing only, "
                "no matching or I/O; process CPU seconds, median of the runs",
        "events_per_group": args.events, "timespan_seconds": SPAN.total_seconds(), "runs": args.runs,
        "target_seconds": TARGET_SECONDS, "cases": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
