"""IsolationForest as plain arrays: trained by scikit-learn, scored and explained here. Pure.

Training uses `sklearn.ensemble.IsolationForest`; each tree is then kept as arrays (split feature,
threshold, children, samples per node), so a model is data that can be checked and stored without
pickle, and scoring needs no scikit-learn object. `plain_scores` is exactly scikit-learn's
`-score_samples` (tests hold the two equal).

`scores` adds what a forest trained on the baseline cannot see by itself: a value outside the range
the tree's samples had at a node (500 failures where the baseline never passed 50, a count the
baseline never varied) lands in the same leaf as the most extreme baseline window, and plain
IsolationForest scores both alike. Had the window been among the node's samples, a random cut would
have set it apart alone with some probability; `scores` takes the expected path length under that
process, which is the insertion step of Robust Random Cut Forests (OpenSearch's anomaly detection):
at the top levels of each tree the cut dimension is chosen in proportion to its range over every
feature (the samples' ranges are kept as boxes; features are robust-scaled, so ranges compare), so
the probability is sum(out) / sum(range + out); below, along the tree's own split feature,
out / (range + out). Inside every range it is exactly IsolationForest's path length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX_DEPTH = 4  # nodes this shallow keep their samples' range on every feature
TREES = 100
MAX_SAMPLES = 256


def average_path(n: np.ndarray | float) -> np.ndarray:
    """c(n): the average path length of an unsuccessful search in a binary tree of n points."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    out[n == 2] = 1.0
    return out


@dataclass(frozen=True)
class Tree:
    feature: np.ndarray  # int32, -1 at leaves
    threshold: np.ndarray  # float64: go left when x[feature] <= threshold
    left: np.ndarray  # int32 child ids, -1 at leaves
    right: np.ndarray
    samples: np.ndarray  # int32: training samples that reached the node
    low: np.ndarray  # float64 per node: the samples' minimum on the split feature (nan at leaves)
    high: np.ndarray
    box: np.ndarray  # int32 per node: row in box_low/box_high, -1 below BOX_DEPTH
    box_low: np.ndarray  # float64 (boxes, features)
    box_high: np.ndarray


@dataclass(frozen=True)
class Forest:
    trees: tuple[Tree, ...]
    max_samples: int
    features: int


def train(x: np.ndarray, seed: int = 0) -> Forest:
    from sklearn.ensemble import IsolationForest  # 0.5 s of imports: only where models are trained

    fitted = IsolationForest(n_estimators=TREES, max_samples=min(MAX_SAMPLES, len(x)), random_state=seed).fit(x)
    trees = tuple(_tree(est.tree_, x[np.asarray(rows)]) for est, rows in zip(fitted.estimators_,
                                                                              fitted.estimators_samples_))
    return Forest(trees, int(fitted.max_samples_), x.shape[1])


def _tree(t: object, sample: np.ndarray) -> Tree:
    left = np.asarray(t.children_left, dtype=np.int32)  # type: ignore[attr-defined]
    right = np.asarray(t.children_right, dtype=np.int32)  # type: ignore[attr-defined]
    feature = np.where(left >= 0, np.asarray(t.feature), -1).astype(np.int32)  # type: ignore[attr-defined]
    threshold = np.asarray(t.threshold, dtype=np.float64)  # type: ignore[attr-defined]
    n = len(left)
    low, high = np.full(n, np.nan), np.full(n, np.nan)
    box = np.full(n, -1, dtype=np.int32)
    boxes_low: list[np.ndarray] = []
    boxes_high: list[np.ndarray] = []
    stack = [(0, np.arange(len(sample)), 0)]
    while stack:  # route the tree's own samples to find each node's ranges
        node, rows, depth = stack.pop()
        values = sample[rows]
        if depth <= BOX_DEPTH:
            box[node] = len(boxes_low)
            boxes_low.append(values.min(axis=0))
            boxes_high.append(values.max(axis=0))
        if left[node] < 0:
            continue
        column = values[:, feature[node]]
        low[node], high[node] = column.min(), column.max()
        goes_left = column <= threshold[node]
        stack += [(int(left[node]), rows[goes_left], depth + 1), (int(right[node]), rows[~goes_left], depth + 1)]
    samples = np.asarray(t.n_node_samples, dtype=np.int32)  # type: ignore[attr-defined]
    return Tree(feature, threshold, left, right, samples, low, high, box, np.asarray(boxes_low),
                np.asarray(boxes_high))


def plain_scores(forest: Forest, x: np.ndarray) -> np.ndarray:
    """scikit-learn's IsolationForest score (-score_samples): 2 ** (-mean depth / c(max_samples))."""
    depth = np.zeros(len(x))
    for tree in forest.trees:
        node = np.zeros(len(x), dtype=np.int64)
        steps = np.zeros(len(x))
        active = tree.left[node] >= 0
        while active.any():
            idx = np.nonzero(active)[0]
            at = node[idx]
            go_left = x[idx, tree.feature[at]] <= tree.threshold[at]
            node[idx] = np.where(go_left, tree.left[at], tree.right[at])
            steps[idx] += 1
            active = tree.left[node] >= 0
        depth += steps + average_path(tree.samples[node])
    return np.asarray(2.0 ** (-(depth / len(forest.trees)) / average_path(forest.max_samples)))


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray  # (rows,) in (0, 1]: higher is stranger
    attribution: np.ndarray  # (rows, features): each feature's share of the isolation, rows sum to 1


def scores(forest: Forest, x: np.ndarray) -> Scored:
    """Expected isolation depth with the row inserted in each tree (see the module docstring)."""
    rows, width = x.shape
    depth = np.zeros(rows)
    credit = np.zeros((rows, width))
    for tree in forest.trees:
        node = np.zeros(rows, dtype=np.int64)
        survive = np.ones(rows)  # probability the row is not isolated yet
        expected = np.zeros(rows)
        steps = np.zeros(rows)
        active = np.ones(rows, dtype=bool)
        while active.any():
            idx = np.nonzero(active)[0]
            at = node[idx]
            leaf = tree.left[at] < 0
            per_feature = np.zeros((len(idx), width))
            boxed = tree.box[at] >= 0
            if boxed.any():
                b = tree.box[at[boxed]]
                lo, hi, v = tree.box_low[b], tree.box_high[b], x[idx[boxed]]
                out = np.maximum(lo - v, 0.0) + np.maximum(v - hi, 0.0)
                # the cut dimension in proportion to its range, as random cut forests choose it: on scaled
                # features, a value far out on one of forty columns is not drowned by the other 39
                total = (hi - lo + out).sum(axis=1, keepdims=True)
                per_feature[boxed] = out / np.where(total > 0, total, 1.0)
            deep = ~boxed & ~leaf
            if deep.any():
                d_idx, d_at = idx[deep], at[deep]
                f = tree.feature[d_at]
                v = x[d_idx, f]
                out = np.maximum(tree.low[d_at] - v, 0.0) + np.maximum(v - tree.high[d_at], 0.0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    p = np.where(out > 0, out / (out + tree.high[d_at] - tree.low[d_at]), 0.0)
                per_feature[np.nonzero(deep)[0], f] = p
            p_node = per_feature.sum(axis=1)
            s = survive[idx]
            expected[idx] += s * p_node * (steps[idx] + 1)
            credit[idx] += s[:, None] * per_feature
            survive[idx] = s * (1.0 - p_node)
            # rows still here follow the split; the share of samples the split set apart is credited to its feature
            inner = np.nonzero(~leaf)[0]
            if len(inner):
                i_idx, i_at = idx[inner], at[inner]
                f = tree.feature[i_at]
                go_left = x[i_idx, f] <= tree.threshold[i_at]
                child = np.where(go_left, tree.left[i_at], tree.right[i_at])
                apart = 1.0 - tree.samples[child] / tree.samples[i_at]
                credit[i_idx, f] += survive[i_idx] * apart / (steps[i_idx] + 1)
                node[i_idx] = child
                steps[i_idx] += 1
            finished = idx[leaf]
            expected[finished] += survive[finished] * (steps[finished] + average_path(tree.samples[node[finished]]))
            active[finished] = False
        depth += expected
    total = credit.sum(axis=1, keepdims=True)
    share = np.divide(credit, total, out=np.zeros_like(credit), where=total > 0)
    return Scored(np.asarray(2.0 ** (-(depth / len(forest.trees)) / average_path(forest.max_samples))), share)
