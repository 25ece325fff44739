"""Compiled field rules (normalize/codegen.py) give exactly what the interpreter gives (`_apply_fields`):
the same document, or the same error, for every block of every pipeline in pipelines/, on values
chosen to hit each inline case and each of its edges."""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest

from secmon.normalize.codegen import compile_fields
from secmon.normalize.convert import _address, to_address
from secmon.normalize.engine import _apply_fields, _apply_rule, put_path
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


@pytest.mark.parametrize(("name", "rules"), blocks(), ids=lambda v: v if isinstance(v, str) else "")
def test_rules_compiled_with_known_fallback_names_equal_the_interpreter(name: str, rules: tuple[FieldRule, ...]
                                                                       ) -> None:
    """`fallback_names`: a value absent from `values` and from the names is not looked for in the fallback."""
    names = sorted({n for rule in rules for n in (rule.source, *rule.alternatives)})
    rng = random.Random(name + ":known")
    for _ in range(10):
        known = frozenset(n for n in names if rng.random() < 0.5)
        compiled = compile_fields(rules, _apply_rule, fallback_names=known)
        for _ in range(30):
            values = {n: v for n in names if (v := rng.choice(TRICKY)) is not None}
            fallback = {n: rng.choice(TRICKY[1:]) for n in known} if rng.random() < 0.7 else None
            assert outcome(compiled, values, fallback) == outcome(
                lambda d, v, f: _apply_fields(d, rules, v, f), values, fallback), (known, values, fallback)


def test_an_address_seen_before_gives_what_it_gave_then() -> None:
    for text in ("host.example.org", "1.2.3.4", "::ffff:1.2.3.4", "bad host", "x" * 300):
        first, again = to_address(text), to_address(text)
        assert first == again == _address(text) and first is not again  # a copy: the caller may change it
    with pytest.raises(ValueError, match="neither"):
        to_address("1.2.3.999")
    with pytest.raises(ValueError, match="neither"):  # never kept: raised again
        to_address("1.2.3.999")


@pytest.mark.parametrize("pipeline", [p for p in load_pipelines([ROOT / "pipelines"]).values() if p.fields or p.set],
                         ids=lambda p: p.id)
def test_rules_compiled_for_a_fresh_document_equal_the_interpreter(pipeline: Any) -> None:
    """`fresh`: on a document that holds only those keys, a parent not set before is made without a look."""
    rules = pipeline.fields
    compiled = compile_fields(rules, _apply_rule, before=pipeline.set, fresh=frozenset({"@timestamp"}))

    def interpreted(doc: dict[str, Any], values: Any, fallback: Any) -> None:
        for path, value in pipeline.set:
            put_path(doc, path, value)
        _apply_fields(doc, rules, values, fallback)
    names = sorted({n for rule in rules for n in (rule.source, *rule.alternatives)})
    rng = random.Random(pipeline.id)
    for _ in range(200):
        values = {n: v for n in names if (v := rng.choice(TRICKY)) is not None}
        got, expected = {"@timestamp": "t"}, {"@timestamp": "t"}
        try:
            compiled(got, copy.deepcopy(values), None)
        except ValueError as exc:
            got = {"error": str(exc)}
        try:
            interpreted(expected, copy.deepcopy(values), None)
        except ValueError as exc:
            expected = {"error": str(exc)}
        assert orjson.dumps(got) == orjson.dumps(expected), values


def test_a_parent_set_by_the_interpreted_road_is_not_made_again() -> None:
    rules = (FieldRule("a.b", "x", "lowercase", ("a", "b")), FieldRule("a.c", "y", "string", ("a", "c")),
             FieldRule("tags", "z", "string", ("tags",)), FieldRule("d.e", "w", "url_path", ("d", "e")),
             FieldRule("tags.x", "y", "string", ("tags", "x")))
    compiled = compile_fields(rules, _apply_rule, fresh=frozenset({"@timestamp"}))
    doc: dict[str, Any] = {"@timestamp": "t"}
    compiled(doc, {"x": "B", "y": "c", "w": "/%zz"}, None)
    expected: dict[str, Any] = {"@timestamp": "t"}
    _apply_fields(expected, rules, {"x": "B", "y": "c", "w": "/%zz"}, None)
    assert doc == expected and doc["a"] == {"b": "b", "c": "c"}
