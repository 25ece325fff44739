"""secmon.yamlio takes its YAML events from libyaml (issue 12: PyYAML's pure-Python scanner and parser were
most of the cost of loading a pipeline at every `collect`) and composes the nodes in Python as before: the
data, the position of every key and the position of every syntax error must be those of the pure-Python loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from secmon.errors import InputError
from secmon.yamlio import _build, load_all_text, read_text
from tests.conftest import ROOT

FILES = sorted([*ROOT.glob("pipelines/*.yml"), *ROOT.glob("rules/linux/*.yml"), *ROOT.glob("rules/anomaly/*.yml"),
                *ROOT.glob("examples/**/*.yml"), *ROOT.glob("docker/*.yml"), *ROOT.glob("secmon/**/*.yml")])
BROKEN = ["a: [1, 2\n", "a: b: c\n", "- a\nb: c\n", "a: 'x\n", "a: *nope\n", "k: v\n\tz: 1\n", "é: [1, é\n",
          "a: \x01\n", "é\x02\n", "a:\n  - b\n  -c\n - d\n", 'a: "\\x"\n', "é: ü\nx: [1, 2, 3, 4, é, 5, :]\n",
          "a: !custom x\n", "? [a]\n: 1\n"]
SHAPES = ["%YAML 1.1\n---\na: 1\n", "---\na: 1\n---\nb: 2\n", "", "# only\n", "a: !!binary aGk=\n",
          "a: 2024-01-01\nb: 0o17\nc: 1_000\nd: .inf\ne: ~\nf: yes\ng: 0x1F\nh: '08:00'\ni: 8:00\n", "\ufeffa: 1\n",
          "a: |\n  x\n  y\nb: >-\n  p\n  q\n", "<<: {a: 1}\nb: 2\nc: &c {d: 1}\ne:\n  <<: *c\n  f: 2\n",
          "a: {b: 1, b: 2}\n", "ü: [é, {ñ: 'ß'}]\n", "a: 'x\r\n  y'\r\nb: 1\r\n"]


def _pure(text: str, path: str) -> list[tuple[Any, dict[Any, Any]]]:
    """What the pure-Python SafeLoader composes, built into data and marks as secmon.yamlio builds them."""
    loader = yaml.SafeLoader(text)
    try:
        docs = []
        while loader.check_node():
            node = loader.get_node()
            marks: dict[Any, Any] = {}
            docs.append((_build(node, (), marks, loader, path), marks))  # type: ignore[arg-type]
        return docs
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def _ours(text: str, path: str) -> list[tuple[Any, dict[Any, Any]]]:
    return [(doc.data, doc.marks) for doc in load_all_text(text, path)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_repositorys_yaml_files_load_the_same(path: Path) -> None:
    text = read_text(path)
    assert _ours(text, str(path)) == _pure(text, str(path))


@pytest.mark.parametrize("text", SHAPES)
def test_documents_load_the_same(text: str) -> None:
    assert _ours(text, "x.yml") == _pure(text, "x.yml")


@pytest.mark.parametrize("text", BROKEN)
def test_a_broken_document_is_refused_at_the_same_place(text: str) -> None:
    with pytest.raises(InputError) as caught:
        _ours(text, "x.yml")
    try:
        _pure(text, "x.yml")
    except yaml.reader.ReaderError as exc:  # a control character: reported at its character
        line = text.count("\n", 0, exc.position) + 1
        expected = (line, exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1)
    except yaml.MarkedYAMLError as exc:
        assert exc.problem_mark is not None
        expected = (exc.problem_mark.line + 1, exc.problem_mark.column + 1)
    except InputError as exc:  # refused by secmon.yamlio while building (a mapping as a key)
        expected = (exc.location.line, exc.location.column)  # type: ignore[union-attr]
    else:
        pytest.fail("the pure-Python loader took it")
    location = caught.value.location
    assert location is not None and (location.line, location.column) == expected, caught.value
