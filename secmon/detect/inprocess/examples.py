"""Run a rule file's own examples (`secmon: examples: {match: [...], nomatch: [...]}`) in-process.

Examples live in the file's first YAML document (other Sigma tools ignore the
`secmon:` section). A single rule's examples are events; a correlation's are
lists of events, each of which must (match) or must not (nomatch) produce a
finding through the same windowing code the scanner runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secmon.detect.windowing.findings import findings, hits_from_docs
from secmon.detect.compiled import CompiledRule
from secmon.detect.inprocess.match import matches
from secmon.types import AGENCY_FIELD
from secmon.yamlio import load_all_file


@dataclass(frozen=True)
class ExampleResult:
    rule: CompiledRule
    passed: int
    failures: tuple[str, ...]  # "match example 2 does not fire", ...


def examples_of(path: Path) -> Mapping[str, Any] | None:
    """The file's examples, or None when it has none; InputError when the file cannot be read as YAML."""
    first = next((doc.data for doc in load_all_file(path) if doc.data is not None), None)
    if not isinstance(first, Mapping):
        return None
    section = first.get("secmon")
    examples = section.get("examples") if isinstance(section, Mapping) else None
    return examples if isinstance(examples, Mapping) else None


def fires(rule: CompiledRule, example: Any) -> bool:
    """Whether the rule raises a finding on one example (an event, or a list of events)."""
    if rule.kind == "single" and isinstance(example, Mapping):
        return matches(rule.refine or rule.query, example, whole=True)
    events = example if isinstance(example, list) else [example]
    docs = []
    for n, event in enumerate(events):
        doc = dict(event)
        if AGENCY_FIELD not in doc and "organization" not in doc:
            doc[AGENCY_FIELD] = "example"
        docs.append((f"e{n}", doc))
    return bool(findings(rule, hits_from_docs(rule, docs)))


def run_examples(rule: CompiledRule, examples: Mapping[str, Any]) -> ExampleResult:
    failures, passed = [], 0
    for expected, kind in ((True, "match"), (False, "nomatch")):
        for n, example in enumerate(examples.get(kind) or []):
            if fires(rule, example) == expected:
                passed += 1
            else:
                failures.append(f"{kind} example {n} " + ("does not fire" if expected else "fires"))
    return ExampleResult(rule, passed, tuple(failures))
