"""Property-based fuzzing of every pipeline: no input escapes Normalizer.normalize.

Whatever arrives (arbitrary text, a real line with bytes cut, inserted or swapped, a JSON
record whose values changed type), the result is an Event, a DeadLetter with a non-empty
reason and the raw line kept, or a Skipped record (a header line, a drop condition) with its
reason. Example counts stay small: this runs in every test suite.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmon.model import DeadLetter, Event
from secmon.normalize.engine import Normalizer, Skipped, get
from secmon.normalize.pipeline import Pipeline, load_pipelines

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = load_pipelines([ROOT / "pipelines"])
IDS = sorted(PIPELINES)
# SECMON_FUZZ_EXAMPLES=2000 for a deeper hunt than the suite's default
FUZZ = settings(max_examples=int(os.environ.get("SECMON_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fresh(pipeline: Pipeline) -> Normalizer:
    return Normalizer(pipeline, agency="fuzz", timezone="Asia/Ho_Chi_Minh", source="fuzz",
                      now=datetime(2026, 1, 1, tzinfo=timezone.utc))


def check(pipeline: Pipeline, line: str, before: tuple[str, ...] = ()) -> None:
    normalizer = fresh(pipeline)
    for i, earlier in enumerate(before):
        normalizer.normalize(earlier, i, f"b{i}")
    result = normalizer.normalize(line, 7, "fuzz:7")
    raw = line.rstrip("\r\n")
    if isinstance(result, DeadLetter):
        assert result.reason.strip(), "a dead letter must say why"
        assert result.raw == raw, "the raw line must be kept"
        assert result.pipeline == pipeline.id and result.offset == 7
    elif isinstance(result, Skipped):
        assert result.reason.strip()
    else:
        assert isinstance(result, Event), result
        assert get(result.doc, "event.original") == raw
        assert get(result.doc, "organization.id") == "fuzz"
        stamp = get(result.doc, "@timestamp")
        assert isinstance(stamp, str) and stamp.endswith("Z")
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        json.dumps(result.doc, allow_nan=False)  # the bulk writer must be able to serialise it, as strict JSON


def seeds(pipeline: Pipeline) -> list[tuple[str, tuple[str, ...]]]:
    return [(ex.line, ex.before) for ex in pipeline.examples] or [("", ())]


@st.composite
def mutated(draw: st.DrawFn, pipeline: Pipeline) -> tuple[str, tuple[str, ...]]:
    line, before = draw(st.sampled_from(seeds(pipeline)))
    for _ in range(draw(st.integers(1, 4))):
        if not line:
            line = draw(st.text(max_size=20))
            continue
        i = draw(st.integers(0, len(line)))
        j = draw(st.integers(i, min(len(line), i + 12)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate"]))
        noise = draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
                     | st.sampled_from(['"', "'", "|", "=", ",", "\t", " ", "\\", "[", "]", "{", "}", ":", "%",
                                        "-", "999", "1e400", "nan", "\x00", "é", "٣"]))
        if op == "delete":
            line = line[:i] + line[j:]
        elif op == "insert":
            line = line[:i] + noise + line[i:]
        elif op == "replace":
            line = line[:i] + noise + line[j:]
        elif op == "truncate":
            line = line[:i]
        else:
            line = line[:j] + line[i:j] + line[j:]
    return line, before


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def retyped(record: Any, draw: st.DrawFn, depth: int = 0) -> Any:
    """The same JSON record with some values swapped for values of any other type."""
    if isinstance(record, dict):
        return {k: (draw(JSON_VALUES) if draw(st.integers(0, 4)) == 0 else retyped(v, draw, depth + 1))
                for k, v in record.items()}
    return record


@pytest.mark.parametrize("pipeline_id", IDS)
@FUZZ
@given(line=st.text(max_size=200))
def test_arbitrary_text_never_raises(pipeline_id: str, line: str) -> None:
    check(PIPELINES[pipeline_id], line)


@pytest.mark.parametrize("pipeline_id", IDS)
@FUZZ
@given(data=st.data())
def test_mutated_real_lines_never_raise(pipeline_id: str, data: st.DataObject) -> None:
    line, before = data.draw(mutated(PIPELINES[pipeline_id]))
    check(PIPELINES[pipeline_id], line, before)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


JSON_PIPELINES = [p for p in IDS if PIPELINES[p].format in ("json", "evtx", "winlog")]


@pytest.mark.parametrize("pipeline_id", JSON_PIPELINES)
@FUZZ
@given(data=st.data())
def test_json_records_with_values_of_any_type(pipeline_id: str, data: st.DataObject) -> None:
    if PIPELINES[pipeline_id].format in ("evtx", "winlog"):
        pytest.importorskip("secmon.normalize.winlog")
    parsed = [record for record in map(_json_or_none, (ex.line for ex in PIPELINES[pipeline_id].examples))
              if isinstance(record, dict)]
    record = data.draw(st.sampled_from(parsed))
    line = json.dumps(retyped(record, data.draw))
    check(PIPELINES[pipeline_id], line)
