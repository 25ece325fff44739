"""Run a pipeline's own examples: each line must give its expected fields, dead letter or skip.

The pipeline file is its own test case: `secmon pipelines list` shows which examples
hold, and the test suite runs them all. Examples are read as if collected with
`--year 2005` in Asia/Ho_Chi_Minh at 2026-01-01T00:00:00Z (pipelines/README.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from secmon.model import DeadLetter, Event
from secmon.normalize.engine import Normalizer, Result, Skipped, get
from secmon.normalize.pipeline import Example, Pipeline

EXAMPLE_YEAR = 2005
EXAMPLE_TIMEZONE = "Asia/Ho_Chi_Minh"
EXAMPLE_NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class ExampleFailure:
    where: str  # file:line of the example
    problem: str


def _normalizer(pipeline: Pipeline, agency: str = "test") -> Normalizer:
    return Normalizer(pipeline, agency=agency, timezone=EXAMPLE_TIMEZONE, source="example", now=EXAMPLE_NOW,
                      year=EXAMPLE_YEAR)


def run_example(pipeline: Pipeline, example: Example, agency: str = "test",
                normalizer: Normalizer | None = None) -> Result:
    """The example's line through a fresh stream of `pipeline`; `normalizer` (one built by `_normalizer`
    and reset with `restore`) saves building one (building one compiles the pipeline: tens of ms)."""
    normalizer = normalizer or _normalizer(pipeline, agency)
    for i, earlier in enumerate(example.before):  # header lines (Zeek #fields) the example needs
        normalizer.normalize(earlier, i, f"example:{i}")
    return normalizer.normalize(example.line, len(example.before), "example:n")


def check_example(pipeline: Pipeline, example: Example, normalizer: Normalizer | None = None) -> str:
    """"" when the example holds, else what went wrong."""
    result = run_example(pipeline, example, normalizer=normalizer)
    if example.skipped:
        return "" if isinstance(result, Skipped) else f"expected the line to be skipped, got {type(result).__name__}"
    if example.dead_letter:
        if not isinstance(result, DeadLetter):
            return f"expected a dead letter ({example.dead_letter!r}), got {type(result).__name__}"
        return "" if example.dead_letter in result.reason else f"dead letter reason {result.reason!r} lacks {example.dead_letter!r}"
    if not isinstance(result, Event):
        return f"rejected: {result.reason}"
    for field, expected in example.expect:
        found = get(result.doc, field)
        if found != expected:
            return f"{field}: expected {expected!r}, got {found!r}"
    return ""


def fresh_streams(pipeline: Pipeline) -> Iterator[Normalizer | None]:
    """A fresh stream for each example: one normalizer reset to its first state each time, when its
    parser keeps no state of its own (the year clock is then all a stream holds; as collect's workers
    rely on); else None (build a new one: a Zeek or W3C header's columns)."""
    shared = _normalizer(pipeline)
    first = shared.state()
    while True:
        if shared.stateless_parser:
            shared.restore(first)
            yield shared
        else:
            yield None


def check_examples(pipeline: Pipeline) -> list[ExampleFailure]:
    if not pipeline.examples:
        return []
    return [ExampleFailure(ex.where, problem) for ex, stream in zip(pipeline.examples, fresh_streams(pipeline))
            if (problem := check_example(pipeline, ex, stream))]
