"""Rule examples taken from real events are real (issue 10, item 9).

A match example introduced by `# A real event: SOURCE FILE` (or `# Real events:` for a correlation's list)
holds fields of an event of that dataset file, as secmon's pipeline makes it. This test reads the file
from ../shared/datasets at test time and checks that every field of the example has the value that
event has, so an example cannot drift from the data it claims to come from, nor be invented. The
repository keeps only those few fields, never the dataset files. `secmon rules test` runs the examples.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from secmon.model import Event
from secmon.normalize.engine import Normalizer
from tests.unit.test_pipelines import PIPELINES

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT.parent / "shared" / "datasets"
WINDOWS = sorted((ROOT / "rules" / "windows").glob("*.yml"))
MARK = re.compile(r"(?:A real event|Real events):\s*(EVTX-ATTACK-SAMPLES|SigmaHQ)\s+(.+?\.(?:evtx|json))\b")
# Windows rules with a real-event example; the others' techniques are absent from the datasets (README)
AT_LEAST = 53


def flat(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _records(kind: str, name: str) -> Iterator[str]:
    if kind == "EVTX-ATTACK-SAMPLES":
        yield from (DATASETS / "evtx_attack_samples" / "jsonl" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        return
    text = (DATASETS / "sigma_regression" / name).read_text(encoding="utf-8")
    decoder, at = json.JSONDecoder(), 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):  # concatenated JSON documents
        record, at = decoder.raw_decode(text, at)
        for one in record if isinstance(record, list) else [record]:
            yield json.dumps(one)


@lru_cache(maxsize=None)
def events(kind: str, name: str) -> tuple[dict[str, Any], ...]:
    """The file's records as `collect` stores them (pipelines/windows-evtx.yml), flattened."""
    normalizer = Normalizer(PIPELINES["windows-evtx"], agency="example", timezone="UTC", source=name,
                            now=datetime.now(UTC))
    out = []
    for n, line in enumerate(_records(kind, name)):
        result = normalizer.normalize(line, n, str(n))
        if isinstance(result, Event):
            out.append(flat(result.doc))
    return tuple(out)


def real_examples(path: Path) -> list[tuple[str, str, Any]]:
    """(dataset, file, example) for every match example the file says comes from a real event."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    root = yaml.compose(text.split("\n---", 1)[0])  # examples live in the first document
    data = yaml.safe_load(text.split("\n---", 1)[0])
    assert root is not None
    section = dict((k.value, v) for k, v in root.value)["secmon"]
    matches = dict((k.value, v) for k, v in dict((k.value, v) for k, v in section.value)["examples"].value)["match"]
    found = []
    for n, node in enumerate(matches.value):
        # the comment lines right above the example, joined (a long one wraps: "...Credential" / "# Access/...")
        first = node.start_mark.line
        while first > 0 and lines[first - 1].strip().startswith("#"):
            first -= 1
        mark = MARK.search(" ".join(line.strip().lstrip("#").strip() for line in lines[first:node.start_mark.line]))
        if mark:
            found.append((mark.group(1), mark.group(2), data["secmon"]["examples"]["match"][n]))
    return found


@pytest.mark.parametrize("path", WINDOWS, ids=[p.name for p in WINDOWS])
def test_real_examples_are_real(path: Path) -> None:
    if not DATASETS.is_dir():
        pytest.skip(f"{DATASETS} is absent")
    for kind, name, example in real_examples(path):
        real = events(kind, name)
        assert real, f"{path.name}: {kind} {name} holds no event"
        for one in example if isinstance(example, list) else [example]:
            assert any(all(k in doc and doc[k] == v for k, v in one.items()) for doc in real), \
                f"{path.name}: no event of {kind} {name} has all of {one}"


def test_how_many_windows_rules_have_a_real_example() -> None:
    have = [p.name for p in WINDOWS if real_examples(p)]
    assert len(have) >= AT_LEAST, f"{len(have)} of {len(WINDOWS)}: {sorted(set(p.name for p in WINDOWS) - set(have))}"
