"""Compiled field rules (normalize/codegen.py) give exactly what the interpreter gives (`_apply_fields`):
the same document, or the same error, for every block of every pipeline in pipelines/, on values
chosen to hit each inline case and each of its edges."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from secmon.normalize.codegen import compile_fields
from secmon.normalize.engine import _apply_fields, _apply_rule
from secmon.normalize.pipeline import FieldRule, load_pipelines
from tests.conftest import ROOT

TRICKY: list[Any] = [None, "", " ", "sshd", "12345", "-7", "0012", "9" * 19, "9" * 30, "١٢٣", "²", "1.2.3.4",
                     "01.2.3.4", "256.1.1.1", "::ffff:1.2.3.4", "[::1]", "fe80::1%eth0", "host.example.org",
                     "bad host", "1.2.3", 7, 2 ** 70, 3.0, 2.5, True, False, [], ["a", "b"], {"k": "v"},
                     "a\r\nb", "true", "Success", "0x1F"]


def blocks() -> list[tuple[str, tuple[FieldRule, ...]]]:
    found = []
    for pipeline in load_pipelines([ROOT / "pipelines"]).values():
        found.append((f"{pipeline.id}:fields", pipeline.fields))
        found += [(f"{pipeline.id}:{pattern.name}", pattern.fields) for pattern in pipeline.patterns]
    return [(name, rules) for name, rules in found if rules]


def outcome(apply: Any, values: dict[str, Any], fallback: dict[str, Any] | None) -> Any:
    doc: dict[str, Any] = {"event": {"kind": "event"}, "host": "a scalar where a parent goes"}
    try:
        apply(doc, copy.deepcopy(values), copy.deepcopy(fallback))
    except ValueError as exc:
        return ("error", str(exc))
    return doc


@pytest.mark.parametrize(("name", "rules"), blocks(), ids=lambda v: v if isinstance(v, str) else "")
def test_compiled_rules_equal_the_interpreter(name: str, rules: tuple[FieldRule, ...]) -> None:
    compiled = compile_fields(rules, _apply_rule)
    names = sorted({n for rule in rules for n in (rule.source, *rule.alternatives)})
    rng = random.Random(name)
    for _ in range(300):
        values = {n: v for n in names if (v := rng.choice(TRICKY)) is not None}
        fallback = {n: rng.choice(TRICKY[1:]) for n in names} if rng.random() < 0.3 else None
        assert outcome(compiled, values, fallback) == outcome(
            lambda d, v, f: _apply_fields(d, rules, v, f), values, fallback), (values, fallback)


def nested(values: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same values, some dotted names as nested objects instead (as a Windows record's flattened fields
    are: winlog.event_data.X), with the odd scalar, None or non-dict node on the way, or both forms at once."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        parts = name.split(".")
        roll = rng.random()
        if len(parts) == 1 or roll < 0.2:
            out[name] = value
            continue
        if roll < 0.3:
            out[name] = None  # a flat key holding None wins over the nested value (engine.get)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if rng.random() < 0.9 else rng.choice([None, "scalar", {"x": 1}])
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value
    return out


@pytest.mark.parametrize(("name", "rules"), blocks(), ids=lambda v: v if isinstance(v, str) else "")
def test_compiled_rules_equal_the_interpreter_on_nested_values(name: str, rules: tuple[FieldRule, ...]) -> None:
    """Dotted sources looked up through nested objects (codegen._dig), without a fallback and with one."""
    compiled = compile_fields(rules, _apply_rule)
    names = sorted({n for rule in rules for n in (rule.source, *rule.alternatives)})
    rng = random.Random("nested " + name)
    for _ in range(300):
        values = nested({n: v for n in names if (v := rng.choice(TRICKY)) is not None}, rng)
        fallback = {n: rng.choice(TRICKY[1:]) for n in names} if rng.random() < 0.2 else None
        assert outcome(compiled, values, fallback) == outcome(
            lambda d, v, f: _apply_fields(d, rules, v, f), values, fallback), (values, fallback)
