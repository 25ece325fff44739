"""A trained model as a document: plain JSON and arrays, a sha256 over all of it, checked on load. Pure.

Nothing here unpickles: arrays are raw little-endian bytes (zlib, base64) of an allowed dtype, read
with `numpy.frombuffer`; every shape and index is checked against the others before a model is used.
A document whose hash does not match its content, or whose arrays are not what a model holds, is
refused with a `ModelRefused` error that names the model and why.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from secmon.detect.anomaly.forest import Forest, Tree
from secmon.detect.anomaly.matrix import Scaling, Vocabulary
from secmon.errors import InputError
from secmon.types import iso, parse_iso

FORMAT = 1
DTYPES = {"float64": "<f8", "int32": "<i4"}  # the only array types a model holds
CENTRE = "*"  # the agency of a centre-wide model
MAX_TYPICAL = 5000  # entities whose own typical values a model remembers (the busiest)


class ModelRefused(InputError):
    """A stored model that is not what secmon wrote: edited, truncated, or of unknown types."""


@dataclass(frozen=True)
class TrainedModel:
    detector: str
    agency: str  # an agency id, or CENTRE
    columns: tuple[str, ...]
    vocabulary: Vocabulary
    scaling: Scaling
    forest: Forest
    threshold: float  # scores above it are anomalous (the detector's quantile of the baseline scores)
    quantiles: np.ndarray  # (21, columns): raw values at 0, 5, ..., 100 % of the baseline windows
    score_quantiles: np.ndarray  # (21,): baseline scores at the same points
    typical: Mapping[str, tuple[float, ...]]  # entity -> its median raw value per column over the baseline
    trained_from: datetime
    trained_to: datetime
    windows: int
    entities: int
    excluded: int  # baseline windows left out (incidents closed as benign, false or true positive)
    created: datetime
    versions: Mapping[str, str] = field(default_factory=dict)  # library versions at training
    detector_sha256: str = ""  # the detector file the model was trained for

    @property
    def id(self) -> str:
        return model_id(self.detector, self.agency)


def model_id(detector: str, agency: str) -> str:
    return f"{detector}:{agency}"


# --- to a document ---------------------------------------------------------------------------

def _array(values: np.ndarray, dtype: str) -> dict[str, Any]:
    data = np.ascontiguousarray(values, dtype=DTYPES[dtype]).tobytes()
    return {"dtype": dtype, "shape": list(np.shape(values)),
            "data": base64.b64encode(zlib.compress(data, 6)).decode("ascii")}


def _payload(model: TrainedModel) -> dict[str, Any]:
    trees = [{"feature": _array(t.feature, "int32"), "threshold": _array(t.threshold, "float64"),
              "left": _array(t.left, "int32"), "right": _array(t.right, "int32"),
              "samples": _array(t.samples, "int32"), "low": _array(t.low, "float64"),
              "high": _array(t.high, "float64"), "box": _array(t.box, "int32"),
              "box_low": _array(t.box_low, "float64"), "box_high": _array(t.box_high, "float64")}
             for t in model.forest.trees]
    return {
        "format": FORMAT, "detector": model.detector, "agency": model.agency, "columns": list(model.columns),
        "vocabulary": {"by": {k: list(v) for k, v in model.vocabulary.by.items()},
                       "seen": {k: dict(v) for k, v in model.vocabulary.seen.items()},
                       "windows": model.vocabulary.windows},
        "scaling": {"log": [bool(b) for b in model.scaling.log], "center": _array(model.scaling.center, "float64"),
                    "scale": _array(model.scaling.scale, "float64"), "side": _array(model.scaling.side, "int32")},
        "forest": {"max_samples": model.forest.max_samples, "features": model.forest.features, "trees": trees},
        "threshold": model.threshold, "quantiles": _array(model.quantiles, "float64"),
        "score_quantiles": _array(model.score_quantiles, "float64"),
        "typical": {"entities": list(model.typical), "values": _array(
            np.asarray(list(model.typical.values()), dtype=np.float64).reshape(len(model.typical), len(model.columns)),
            "float64")},
        "trained_from": iso(model.trained_from), "trained_to": iso(model.trained_to), "windows": model.windows,
        "entities": model.entities, "excluded": model.excluded, "created": iso(model.created),
        "versions": dict(model.versions), "detector_sha256": model.detector_sha256,
    }


def digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


def to_doc(model: TrainedModel) -> dict[str, Any]:
    """The stored document: searchable metadata beside the payload, and the payload's sha256."""
    payload = _payload(model)
    return {"@timestamp": iso(model.created), "kind": "model", "detector": model.detector, "agency": model.agency,
            "windows": model.windows, "entities": model.entities, "excluded": model.excluded,
            "trained_from": payload["trained_from"], "trained_to": payload["trained_to"],
            "threshold": model.threshold, "sha256": digest(payload), "payload": payload}


# --- from a document -------------------------------------------------------------------------

def from_doc(doc: Mapping[str, Any], ident: str = "") -> TrainedModel:
    name = ident or f"{doc.get('detector')}:{doc.get('agency')}"
    payload = doc.get("payload")
    if not isinstance(payload, dict) or not isinstance(doc.get("sha256"), str):
        raise ModelRefused(f"model {name} refused: the document has no payload or no sha256",
                           hint="retrain it: secmon model train")
    if digest(payload) != doc["sha256"]:
        raise ModelRefused(f"model {name} refused: its sha256 does not match its content (the document was "
                           "modified after training)", hint="retrain it: secmon model train")
    try:
        return _read(payload)
    except (KeyError, TypeError, ValueError, zlib.error, base64.binascii.Error) as exc:  # type: ignore[attr-defined]
        raise ModelRefused(f"model {name} refused: {exc}", hint="retrain it: secmon model train") from None


def _arr(spec: Any, dtype: str, shape: tuple[int | None, ...]) -> np.ndarray:
    if not isinstance(spec, dict) or spec.get("dtype") != dtype:
        raise ValueError(f"an array is not of type {dtype}")
    dims = tuple(int(d) for d in spec["shape"])
    if len(dims) != len(shape) or any(want is not None and want != got for want, got in zip(shape, dims)):
        raise ValueError(f"an array has shape {dims}, expected {shape}")
    raw = zlib.decompress(base64.b64decode(spec["data"], validate=True))
    values = np.frombuffer(raw, dtype=DTYPES[dtype])
    if values.size != int(np.prod(dims)):
        raise ValueError("an array's data does not fill its shape")
    return values.reshape(dims).astype(dtype)


def _read(p: Mapping[str, Any]) -> TrainedModel:
    if p["format"] != FORMAT:
        raise ValueError(f"unknown model format {p['format']!r}")
    columns = tuple(str(c) for c in p["columns"])
    width = len(columns)
    forest = p["forest"]
    trees = []
    for t in forest["trees"]:
        left = _arr(t["left"], "int32", (None,))
        n = len(left)
        tree = Tree(feature=_arr(t["feature"], "int32", (n,)), threshold=_arr(t["threshold"], "float64", (n,)),
                    left=left, right=_arr(t["right"], "int32", (n,)), samples=_arr(t["samples"], "int32", (n,)),
                    low=_arr(t["low"], "float64", (n,)), high=_arr(t["high"], "float64", (n,)),
                    box=_arr(t["box"], "int32", (n,)), box_low=_arr(t["box_low"], "float64", (None, width)),
                    box_high=_arr(t["box_high"], "float64", (None, width)))
        _check_tree(tree, width)
        trees.append(tree)
    if not trees or int(forest["features"]) != width or int(forest["max_samples"]) < 1:
        raise ValueError("the forest does not fit the columns")
    vocab = p["vocabulary"]
    typical = p["typical"]
    values = _arr(typical["values"], "float64", (len(typical["entities"]), width))
    log = np.asarray([bool(b) for b in p["scaling"]["log"]], dtype=bool)
    if len(log) != width:
        raise ValueError("the scaling does not fit the columns")
    return TrainedModel(
        detector=str(p["detector"]), agency=str(p["agency"]), columns=columns,
        vocabulary=Vocabulary({str(k): tuple(str(x) for x in v) for k, v in vocab["by"].items()},
                              {str(k): {str(a): int(b) for a, b in v.items()} for k, v in vocab["seen"].items()},
                              int(vocab["windows"])),
        scaling=Scaling(log, _arr(p["scaling"]["center"], "float64", (width,)),
                        _arr(p["scaling"]["scale"], "float64", (width,)), _arr(p["scaling"]["side"], "int32", (width,))),
        forest=Forest(tuple(trees), int(forest["max_samples"]), width), threshold=float(p["threshold"]),
        quantiles=_arr(p["quantiles"], "float64", (21, width)),
        score_quantiles=_arr(p["score_quantiles"], "float64", (21,)),
        typical={str(e): tuple(float(v) for v in row) for e, row in zip(typical["entities"], values)},
        trained_from=parse_iso(p["trained_from"]), trained_to=parse_iso(p["trained_to"]), windows=int(p["windows"]),
        entities=int(p["entities"]), excluded=int(p["excluded"]), created=parse_iso(p["created"]),
        versions={str(k): str(v) for k, v in p["versions"].items()}, detector_sha256=str(p["detector_sha256"]))


def _check_tree(tree: Tree, width: int) -> None:
    n = len(tree.left)
    inner = tree.left >= 0
    if n == 0 or ((tree.left >= n) | (tree.right >= n)).any() or (inner != (tree.right >= 0)).any():
        raise ValueError("a tree's child links point outside the tree")
    if (inner & ((tree.left <= np.arange(n)) | (tree.right <= np.arange(n)))).any():
        raise ValueError("a tree's child links do not point down the tree")
    if ((tree.feature[inner] < 0) | (tree.feature[inner] >= width)).any():
        raise ValueError("a tree splits on a feature the model does not have")
    if (tree.samples < 1).any() or ((tree.box >= len(tree.box_low)) | (tree.box < -1)).any():
        raise ValueError("a tree's sample counts or boxes are out of range")
