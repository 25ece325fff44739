"""Every pipeline's own examples, run as tests: the pipeline file is the test case."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from secmon.errors import InputError
from secmon.model import DeadLetter, Event
from secmon.normalize.engine import Normalizer, Skipped, get
from secmon.normalize.examples import check_example, run_example
from secmon.normalize.pipeline import Example, Pipeline, load_pipelines, parse_pipeline
from secmon.yamlio import load_all_text

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = load_pipelines([ROOT / "pipelines"])
CASES = [(p, ex) for p in PIPELINES.values() for ex in p.examples]


def normalize(pipeline: Pipeline, line: str, before: tuple[str, ...] = ()) -> Event | DeadLetter | Skipped:
    return run_example(pipeline, Example(line=line, expect=(), dead_letter="", where="", before=before))


def test_every_pipeline_has_examples() -> None:
    assert PIPELINES, "no pipelines found"
    for pipeline in PIPELINES.values():
        assert pipeline.examples, f"{pipeline.path} has no examples"
        assert any(ex.dead_letter for ex in pipeline.examples), f"{pipeline.path} shows no rejected line"


def test_listing_checks_the_examples_on_one_stream_reset_each_time_with_the_same_results(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`pipelines list` built a normalizer (compiling the pipeline) per example: 2.7 CPU s for 166 examples.
    One stream, reset to its first state before each example, gives the same result as a fresh one."""
    from secmon.normalize import examples

    built: list[int] = []
    real = examples._normalizer
    monkeypatch.setattr(examples, "_normalizer", lambda *a, **k: built.append(1) or real(*a, **k))
    stateful = listing = 0
    for pipeline in PIPELINES.values():
        for example, stream in zip(pipeline.examples, examples.fresh_streams(pipeline)):
            stateful += stream is None
            shared, fresh = run_example(pipeline, example, normalizer=stream), run_example(pipeline, example)
            assert shared == fresh, example.where
        built.clear()
        assert examples.check_examples(pipeline) == [], pipeline.id
        listing += len(built)
    assert stateful < len(CASES) / 4  # most pipelines' parsers keep no state
    assert listing == len(PIPELINES) + stateful  # one a pipeline, plus one an example of a stateful parser


@pytest.mark.parametrize("pipeline,example", CASES, ids=[ex.where for _, ex in CASES])
def test_example(pipeline: Pipeline, example) -> None:  # type: ignore[no-untyped-def]
    assert check_example(pipeline, example) == ""
    result = run_example(pipeline, example)
    if example.skipped:
        assert isinstance(result, Skipped), f"expected the line to be dropped, got {result}"
        return
    if example.dead_letter:
        assert isinstance(result, DeadLetter), f"expected a dead letter, got {result}"
        assert example.dead_letter in result.reason
        assert result.raw == example.line
        return
    assert isinstance(result, Event), f"rejected: {getattr(result, 'reason', '')}"
    for field, expected in example.expect:
        assert get(result.doc, field) == expected, field
    assert get(result.doc, "event.original") == example.line
    assert get(result.doc, "organization.id") == "test"
    # the field contract: every event says what it is and where it came from
    assert get(result.doc, "event.kind") == "event"
    assert get(result.doc, "event.module") and get(result.doc, "event.dataset")
    assert str(get(result.doc, "@timestamp")).endswith("Z")


def test_linux_auth_year_rolls_over() -> None:
    pipeline = PIPELINES["linux-auth"]
    normalizer = Normalizer(pipeline, agency="a", timezone="UTC", source="s",
                            now=datetime(2026, 1, 1, tzinfo=timezone.utc), year=2005)
    first = normalizer.normalize("Dec 31 23:59:59 h sshd[1]: x", 0, "1")
    second = normalizer.normalize("Jan  1 00:00:01 h sshd[1]: x", 1, "2")
    assert isinstance(first, Event) and isinstance(second, Event)
    assert first.doc["@timestamp"] == "2005-12-31T23:59:59Z"
    assert second.doc["@timestamp"] == "2006-01-01T00:00:01Z"


def test_same_record_same_id() -> None:
    line = PIPELINES["linux-auth"].examples[0].line
    assert normalize(PIPELINES["linux-auth"], line).id == normalize(PIPELINES["linux-auth"], line).id


BAD_PIPELINES = [
    ("id: linux-auth\nparse: {regex: '(?P<ts>'}\ntimestamp: {field: ts, formats: ['%b']}\n", "2:9", "regular expression"),
    ("id: linux-auth\nparse: {regex: '(?P<ts>x)'}\ntimestamp: {field: ts, formats: ['%b']}\nfields:\n  a.b: nope\n",
     "5:3", "capture group 'nope'"),
    ("id: linux-auth\nparse: {regex: '(?P<ts>x)'}\ntimestamp: {field: ts, formats: ['%b']}\nfields:\n  a: {from: ts, type: nope}\n",
     "5:3", "unknown type"),
    ("id: linux-auth\nparsee: {}\n", "2:1", "unknown key 'parsee'"),
    ("id: other\nparse: {regex: '(?P<ts>x)'}\ntimestamp: {field: ts, formats: ['%b']}\n", "1:1", "file name"),
]


@pytest.mark.parametrize("text,where,message", BAD_PIPELINES)
def test_bad_pipeline_is_reported_with_its_location(text: str, where: str, message: str) -> None:
    doc = next(load_all_text(text, "pipelines/linux-auth.yml"))
    with pytest.raises(InputError) as caught:
        parse_pipeline(doc)
    lines = [line.strip() for line in str(caught.value).splitlines()]
    assert any(line.startswith(f"pipelines/linux-auth.yml:{where}:") and message in line for line in lines), lines


def test_every_problem_of_a_pipeline_at_once() -> None:
    """Sections are checked on their own: a broken regex does not hide a wrong type or a bad example."""
    text = ("id: linux-auth\nparse: {regex: '(?P<ts>x)'}\ntimestamp: {field: ts, formats: ['%b']}\n"
            "fields:\n  a: {from: ts, type: nope}\npatterns:\n  - {regex: '(', fields: {}}\nbogus: 1\n")
    doc = next(load_all_text(text, "pipelines/linux-auth.yml"))
    with pytest.raises(InputError) as caught:
        parse_pipeline(doc)
    lines = str(caught.value).splitlines()
    assert lines[0] == "pipelines/linux-auth.yml: 3 problems", lines
    assert "unknown type" in lines[1] and "regular expression" in lines[2] and "unknown key 'bogus'" in lines[3]
