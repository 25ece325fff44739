"""Train a detector's model from baseline windows, and score windows with it. Pure (no I/O).

Training: vocabularies, then the raw matrix (baseline windows measured leaving themselves out),
log and robust scaling, the forest, and the threshold = the detector's quantile of the baseline
windows' own scores. Minimum data is checked first and a shortfall says what is missing.
"""

from __future__ import annotations

import importlib.metadata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from secmon.detect.anomaly import forest
from secmon.detect.anomaly.detector import Detector
from secmon.detect.anomaly.features import WindowStats
from secmon.detect.anomaly.matrix import Measured, fit_scaling, learn, log_mask, measure, sides
from secmon.detect.anomaly.trained import MAX_TYPICAL, TrainedModel
from secmon.errors import InputError

QUANTILES = np.linspace(0, 100, 21)


class NotEnoughData(InputError):
    """Too little baseline to learn what is normal."""


def shortfall(detector: Detector, rows: Sequence[WindowStats]) -> str:
    """What is missing to train ('' when enough)."""
    entities = len({r.entity for r in rows})
    missing = []
    if len(rows) < detector.min_windows:
        missing.append(f"{len(rows)} entity-windows, {detector.min_windows} needed")
    if entities < detector.min_entities:
        missing.append(f"{entities} entities, {detector.min_entities} needed")
    return "; ".join(missing)


def build(detector: Detector, agency: str, rows: Sequence[WindowStats], trained_from: datetime,
          trained_to: datetime, created: datetime, excluded: int = 0, seed: int = 0,
          detector_sha256: str = "") -> TrainedModel:
    rows = sorted(rows, key=lambda r: (r.agency, r.entity, r.start))  # the same model whatever order pages came in
    missing = shortfall(detector, rows)
    if missing:
        raise NotEnoughData(f"detector {detector.id}, agency {agency}: not enough baseline ({missing})",
                            hint="train over a longer period (--from), or lower min_windows/min_entities")
    vocab = learn(detector, rows)
    columns = vocab.columns(detector)
    raw = np.vstack([measure(detector, vocab, row, baseline=True).vector for row in rows])
    scaling = fit_scaling(log_mask(detector, vocab), sides(detector, vocab), raw)
    x = scaling.apply(raw)
    trees = forest.train(x, seed)
    baseline = forest.scores(trees, x).scores
    return TrainedModel(
        detector=detector.id, agency=agency, columns=columns, vocabulary=vocab, scaling=scaling, forest=trees,
        threshold=float(np.quantile(baseline, detector.threshold)),
        quantiles=np.percentile(raw, QUANTILES, axis=0), score_quantiles=np.percentile(baseline, QUANTILES),
        typical=_typical(rows, raw), trained_from=trained_from, trained_to=trained_to, windows=len(rows),
        entities=len({r.entity for r in rows}), excluded=excluded, created=created, versions=_versions(),
        detector_sha256=detector_sha256)


def _typical(rows: Sequence[WindowStats], raw: np.ndarray) -> dict[str, tuple[float, ...]]:
    by_entity: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_entity[row.entity].append(i)
    busiest = sorted(by_entity, key=lambda e: (-len(by_entity[e]), e))[:MAX_TYPICAL]
    return {e: tuple(float(v) for v in np.median(raw[by_entity[e]], axis=0)) for e in sorted(busiest)}


def _versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("scikit-learn", "numpy")}


@dataclass(frozen=True)
class ScoredWindow:
    row: WindowStats
    score: float
    measured: Measured
    attribution: np.ndarray  # share per column

    def anomalous(self, threshold: float) -> bool:
        return self.score > threshold


def score(model: TrainedModel, detector: Detector, rows: Sequence[WindowStats]) -> list[ScoredWindow]:
    if not rows:
        return []
    measured = [measure(detector, model.vocabulary, row) for row in rows]
    x = model.scaling.apply(np.vstack([m.vector for m in measured]))
    result = forest.scores(model.forest, x)
    return [ScoredWindow(row, float(s), m, a) for row, s, m, a in zip(rows, result.scores, measured,
                                                                      result.attribution)]


def percentile(model: TrainedModel, column: int, value: float) -> float:
    """Where `value` falls among the baseline windows (0-100), from the stored quantiles."""
    points = model.quantiles[:, column]
    if value < points[0]:
        return 0.0
    if value > points[-1]:
        return 100.0
    hits = np.nonzero(points == value)[0]
    if len(hits):  # a value many windows share: the middle of its run
        return float(QUANTILES[hits].mean())
    return float(np.interp(value, points, QUANTILES))


def typical(model: TrainedModel, entity: str) -> Mapping[int, float] | None:
    values = model.typical.get(entity)
    return None if values is None else dict(enumerate(values))
