"""The forest as arrays scores exactly as scikit-learn does; out-of-range windows score higher; the
explanation points at the feature that differs; a model document round-trips, and any edit, odd type
or broken link in it is refused; log templates keep their ids across a save and a load."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from secmon.detect.anomaly import fit, forest
from secmon.detect.anomaly.detector import Detector, Feature
from secmon.detect.anomaly.features import WindowStats
from secmon.detect.anomaly.templates import Templates
from secmon.detect.anomaly.trained import ModelRefused, digest, from_doc, to_doc
from secmon.errors import InputError
from secmon.model import Severity

T0 = datetime(2025, 3, 3, tzinfo=timezone.utc)


def test_plain_scores_equal_scikit_learn() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(700, 4))
    trained = forest.train(x, seed=11)
    reference = IsolationForest(n_estimators=forest.TREES, max_samples=forest.MAX_SAMPLES, random_state=11).fit(x)
    probe = rng.normal(size=(300, 4)) * 3
    assert np.allclose(forest.plain_scores(trained, probe), -reference.score_samples(probe))


def test_a_value_beyond_the_baseline_scores_higher_and_is_attributed_to_its_feature() -> None:
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.normal(size=500), rng.normal(size=500), np.zeros(500)])
    trained = forest.train(x, seed=0)
    edge = x[np.argmax(x[:, 0])].copy()
    far = edge.copy()
    far[0] += 50  # ten times further out than anything in the baseline
    plain = forest.plain_scores(trained, np.vstack([edge, far]))
    assert plain[0] == pytest.approx(plain[1])  # plain IsolationForest cannot tell them apart
    scored = forest.scores(trained, np.vstack([edge, far]))
    assert scored.scores[1] > scored.scores[0] + 0.05
    assert int(np.argmax(scored.attribution[1])) == 0
    constant = np.zeros((1, 3))
    constant[0, 2] = 1.0  # a column the baseline never varied (a new value count)
    assert int(np.argmax(forest.scores(trained, constant).attribution[0])) == 2
    assert np.allclose(scored.attribution.sum(axis=1), 1.0)


DETECTOR = Detector(id="test-detector", title="T", description="", severity=Severity.MEDIUM, tags=(),
                    events=(("event.category", ("authentication",)),), entity="source.ip",
                    window=timedelta(hours=1), path="test-detector.yml", min_windows=10, min_entities=2,
                    features=(Feature("events", "count"), Feature("users", "distinct", field="user.name"),
                              Feature("new_users", "new", field="user.name"),
                              Feature("methods", "by", field="http.request.method", top=2)))


def rows(n: int = 60) -> list[WindowStats]:
    out = []
    for i in range(n):
        start = T0 + timedelta(hours=i // 6)
        out.append(WindowStats("a", f"10.0.0.{i % 6}", start, 3 + i % 4, start, start, {"events": 3 + i % 4,
                                                                                       "users": 1 + i % 2},
                               {"new_users": {f"u{i % 6}": 2}, "methods": {"GET": 2, "POST": 1}},
                               {"new_users": 0, "methods": 0}))
    return out


def model() -> tuple[object, dict]:  # type: ignore[type-arg]
    built = fit.build(DETECTOR, "a", rows(), T0, T0 + timedelta(hours=10), T0, seed=1)
    return built, json.loads(json.dumps(to_doc(built)))  # exactly what Elasticsearch hands back


def test_a_model_document_round_trips_and_scores_the_same() -> None:
    built, doc = model()
    again = from_doc(doc)
    attack = [WindowStats("a", "203.0.113.9", T0, 90, T0, T0, {"events": 90, "users": 40},
                          {"new_users": {f"guess{i}": 1 for i in range(40)}, "methods": {"PUT": 90}}, {})]
    first, second = fit.score(built, DETECTOR, attack)[0], fit.score(again, DETECTOR, attack)[0]  # type: ignore[arg-type]
    assert first.score == second.score and first.score > again.threshold
    assert again.columns == ("events", "users", "new_users", "methods[GET]", "methods[POST]", "methods[other]")
    assert first.measured.novel["new_users"][:2] == ("guess0", "guess1")
    assert "pickle" not in json.dumps(doc) and doc["sha256"] == digest(doc["payload"])


def test_a_modified_model_document_is_refused() -> None:
    _, doc = model()
    edited = copy.deepcopy(doc)
    edited["payload"]["threshold"] = 0.99
    with pytest.raises(ModelRefused, match="sha256 does not match"):
        from_doc(edited)
    rehashed = copy.deepcopy(doc)  # someone who recomputes the hash still meets the type checks
    rehashed["payload"]["forest"]["trees"][0]["feature"]["dtype"] = "object"
    rehashed["sha256"] = digest(rehashed["payload"])
    with pytest.raises(ModelRefused, match="not of type int32"):
        from_doc(rehashed)
    looped = copy.deepcopy(doc)
    tree = looped["payload"]["forest"]["trees"][0]
    left = np.zeros(len(from_doc(doc).forest.trees[0].left), dtype="<i4")  # every node its own child: a loop
    import base64
    import zlib
    tree["left"]["data"] = base64.b64encode(zlib.compress(left.tobytes())).decode()
    looped["sha256"] = digest(looped["payload"])
    with pytest.raises(ModelRefused, match="child links"):
        from_doc(looped)
    with pytest.raises(ModelRefused, match="no payload"):
        from_doc({"sha256": "x"})


def test_too_little_baseline_says_what_is_missing() -> None:
    with pytest.raises(fit.NotEnoughData, match="5 entity-windows, 10 needed"):
        fit.build(DETECTOR, "a", rows(5), T0, T0, T0)


def test_log_templates_keep_their_ids_across_a_save_and_a_load() -> None:
    miner = Templates()
    first = [miner.id_of(f"session opened for user u{i} by (uid={i})") for i in range(5)]
    assert len(set(first)) == 1
    saved = json.loads(json.dumps(miner.state()))
    other = Templates()  # a process that starts afresh would hand out ids from 1 again
    restored = Templates(saved)
    assert restored.id_of("session opened for user zz by (uid=7)") == first[0]
    assert restored.id_of("kernel: disk sda failing") != first[0]
    assert other.id_of("kernel: disk sda failing") == first[0]  # why the state must be kept
    with pytest.raises(InputError, match="refused"):
        Templates({**saved, "clusters": [["1", 1, ["x"]]]})
