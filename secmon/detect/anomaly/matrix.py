"""WindowStats -> model inputs: vocabularies learned at training, new and rare values, log scaling. Pure.

A `by` feature becomes one column per value of its vocabulary (the values found in the most
baseline windows) plus `other`. `new` counts the window's values never seen in the baseline (for
the population, or for this entity); `rare` counts events whose value appeared in fewer than
`below` of the baseline windows. Baseline windows themselves are measured leaving themselves out
(a value only this window had is new to it), so the forest sees during training what new looks like.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from secmon.detect.anomaly.detector import Detector, Feature
from secmon.detect.anomaly.features import WindowStats

MAX_SEEN = 50_000  # values (or entity-value pairs) remembered per new/rare feature
BOUNDED = ("ratio", "off_hours")  # already shares: not log-scaled
TINY = 1e-9


@dataclass(frozen=True)
class Vocabulary:
    by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # by feature -> its column values
    seen: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # new/rare -> value (or entity\x1fvalue)
    windows: int = 0  # baseline windows the counts in `seen` come from

    def columns(self, detector: Detector) -> tuple[str, ...]:
        names: list[str] = []
        for feature in detector.features:
            if feature.kind == "by":
                names += [f"{feature.name}[{v}]" for v in self.by.get(feature.name, ())] + [f"{feature.name}[other]"]
            else:
                names.append(feature.name)
        return tuple(names)


def learn(detector: Detector, rows: Sequence[WindowStats]) -> Vocabulary:
    by: dict[str, tuple[str, ...]] = {}
    seen: dict[str, dict[str, int]] = {}
    for feature in detector.features:
        if feature.kind == "by":
            windows = Counter(v for row in rows for v in row.values.get(feature.name, {}))
            by[feature.name] = tuple(sorted(v for v, _ in sorted(windows.items(), key=lambda kv: (-kv[1], kv[0]))
                                            [: feature.top]))
        elif feature.kind in ("new", "rare"):
            counts = Counter(_seen_key(feature, row, v) for row in rows for v in row.values.get(feature.name, {}))
            seen[feature.name] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_SEEN])
    return Vocabulary(by, seen, len(rows))


def _seen_key(feature: Feature, row: WindowStats, value: str) -> str:
    return f"{row.entity}\x1f{value}" if feature.kind == "new" and feature.per == "entity" else value


@dataclass(frozen=True)
class Measured:
    vector: np.ndarray  # raw feature values, in `Vocabulary.columns` order
    novel: Mapping[str, tuple[str, ...]]  # new/rare feature -> the values that made it count


def measure(detector: Detector, vocab: Vocabulary, row: WindowStats, baseline: bool = False) -> Measured:
    """The row's raw vector; `baseline`: the row is one of the training windows (leave it out)."""
    out: list[float] = []
    novel: dict[str, tuple[str, ...]] = {}
    for feature in detector.features:
        name = feature.name
        if feature.kind == "by":
            counts = row.values.get(name, {})
            known = vocab.by.get(name, ())
            out += [float(counts.get(v, 0)) for v in known]
            out.append(float(sum(c for v, c in counts.items() if v not in set(known)) + row.other.get(name, 0)))
        elif feature.kind in ("new", "rare"):
            seen = vocab.seen.get(name, {})
            found = []
            for value, events in row.values.get(name, {}).items():
                windows = seen.get(_seen_key(feature, row, value), 0) - (1 if baseline else 0)
                total = max(vocab.windows - (1 if baseline else 0), 1)
                if (feature.kind == "new" and windows <= 0) or (feature.kind == "rare" and windows / total < feature.below):
                    found.append((value, events))
            novel[name] = tuple(v for v, _ in found)
            out.append(float(len(found) if feature.kind == "new" else sum(e for _, e in found)))
        else:
            out.append(float(row.scalars.get(name, 0.0)))
    return Measured(np.asarray(out, dtype=np.float64), novel)


def _widths(detector: Detector, vocab: Vocabulary) -> list[int]:
    return [len(vocab.by.get(f.name, ())) + 1 if f.kind == "by" else 1 for f in detector.features]


def log_mask(detector: Detector, vocab: Vocabulary) -> np.ndarray:
    """Which columns are counts (log-scaled: 500 failures is not ten times stranger than 50)."""
    mask: list[bool] = []
    for feature, width in zip(detector.features, _widths(detector, vocab)):
        scaled = feature.kind not in BOUNDED and not (feature.kind == "shape" and feature.measure != "length")
        mask += [scaled] * width
    return np.asarray(mask, dtype=bool)


def sides(detector: Detector, vocab: Vocabulary) -> np.ndarray:
    """Per column: +1 only high values are unusual, -1 only low ones, 0 both."""
    side = {"high": 1, "low": -1, "both": 0}
    return np.asarray([side[f.direction] for f, width in zip(detector.features, _widths(detector, vocab))
                       for _ in range(width)], dtype=np.int32)


@dataclass(frozen=True)
class Scaling:
    """log1p on count columns, then robust scaling (median, interquartile range) learned at training;
    a one-sided column is cut at its median (fewer failures than usual is not suspicious)."""

    log: np.ndarray  # bool per column
    center: np.ndarray
    scale: np.ndarray
    side: np.ndarray  # int per column: +1 high only, -1 low only, 0 both

    def apply(self, raw: np.ndarray) -> np.ndarray:
        x = (np.where(self.log, np.log1p(np.maximum(raw, 0.0)), raw) - self.center) / self.scale
        sided: np.ndarray = np.where(self.side > 0, np.maximum(x, 0.0), np.where(self.side < 0, np.minimum(x, 0.0), x))
        return sided


def fit_scaling(log: np.ndarray, side: np.ndarray, raw: np.ndarray) -> Scaling:
    x = np.where(log, np.log1p(np.maximum(raw, 0.0)), raw)
    center = np.median(x, axis=0)
    spread = np.percentile(x, 75, axis=0) - np.percentile(x, 25, axis=0)
    fallback = np.std(x, axis=0)
    # a column the baseline never varied keeps unit scale (std is ~1e-16 there, not 0: floating point)
    scale = np.where(spread > TINY, spread, np.where(fallback > TINY, fallback, 1.0))
    return Scaling(log, center, scale, side)
