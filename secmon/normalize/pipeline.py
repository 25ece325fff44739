"""A pipeline definition (`pipelines/<id>.yml`), validated on load with file:line errors.

The format is documented in pipelines/README.md. A definition is data only:
loading it compiles its regular expressions and checks every reference, so a
mistake is found when the file is read, not on the millionth line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secmon.errors import InputError
from secmon.normalize.convert import CONVERTERS
from secmon.yamlio import Located, load_file

_TOP_KEYS = {"id", "description", "format", "set", "parse", "timestamp", "fields", "patterns", "examples"}
_PATTERN_KEYS = {"name", "field", "when", "regex", "fields", "set"}
_FORMATS = ("line",)


@dataclass(frozen=True)
class FieldRule:
    target: str  # dotted ECS name
    source: str  # capture group name
    type: str  # key of CONVERTERS


@dataclass(frozen=True)
class Pattern:
    name: str
    field: str
    when: tuple[tuple[str, str], ...]
    regex: re.Pattern[str]
    fields: tuple[FieldRule, ...]
    set: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Example:
    line: str
    expect: tuple[tuple[str, Any], ...]  # dotted field -> value; empty for dead letters
    dead_letter: str  # expected reason substring, "" if the line must parse
    where: str  # file:line of the example, for test ids


@dataclass(frozen=True)
class Pipeline:
    id: str
    description: str
    format: str
    set: tuple[tuple[str, Any], ...]
    header: re.Pattern[str]
    timestamp_field: str
    timestamp_formats: tuple[str, ...]
    fields: tuple[FieldRule, ...]
    patterns: tuple[Pattern, ...]
    examples: tuple[Example, ...]
    path: str


def _need(doc: Located, value: Any, kind: type, *at: str | int) -> Any:
    if not isinstance(value, kind):
        name = ".".join(str(p) for p in at)
        raise InputError(f"{name} must be a {kind.__name__}, found {value!r}", location=doc.loc(*at))
    return value


def _regex(doc: Located, text: Any, *at: str | int) -> re.Pattern[str]:
    _need(doc, text, str, *at)
    try:
        return re.compile(text)
    except re.error as exc:
        raise InputError(f"invalid regular expression: {exc}", location=doc.loc(*at)) from None


def _field_rules(doc: Located, data: Any, groups: set[str], *at: str | int) -> tuple[FieldRule, ...]:
    rules = []
    for target, spec in _need(doc, data or {}, dict, *at).items():
        if isinstance(spec, str):
            spec = {"from": spec}
        spec = _need(doc, spec, dict, *at, target)
        source, kind = spec.get("from"), spec.get("type", "string")
        if source not in groups:
            raise InputError(
                f"{target}: capture group {source!r} does not exist",
                location=doc.loc(*at, target),
                hint=f"groups available here: {', '.join(sorted(groups)) or 'none'}",
            )
        if kind not in CONVERTERS:
            raise InputError(
                f"{target}: unknown type {kind!r}",
                location=doc.loc(*at, target),
                hint=f"allowed: {', '.join(CONVERTERS)}",
            )
        rules.append(FieldRule(str(target), source, kind))
    return tuple(rules)


def _check_keys(doc: Located, data: dict[str, Any], allowed: set[str], *at: str | int) -> None:
    for key in data:
        if key not in allowed:
            raise InputError(
                f"unknown key {key!r}", location=doc.loc(*at, key), hint=f"allowed: {', '.join(sorted(allowed))}"
            )


def parse_pipeline(doc: Located) -> Pipeline:
    data = _need(doc, doc.data, dict)
    _check_keys(doc, data, _TOP_KEYS)
    for key in ("id", "parse", "timestamp"):
        if key not in data:
            raise InputError(f"missing required key {key!r}", location=doc.loc())
    fmt = data.get("format", "line")
    if fmt not in _FORMATS:
        raise InputError(f"unknown format {fmt!r}", location=doc.loc("format"), hint=f"allowed: {', '.join(_FORMATS)}")
    parse = _need(doc, data["parse"], dict, "parse")
    _check_keys(doc, parse, {"regex"}, "parse")
    header = _regex(doc, parse.get("regex"), "parse", "regex")
    groups = set(header.groupindex)
    stamp = _need(doc, data["timestamp"], dict, "timestamp")
    _check_keys(doc, stamp, {"field", "formats"}, "timestamp")
    if stamp.get("field") not in groups:
        raise InputError(f"timestamp.field {stamp.get('field')!r} is not a capture group", location=doc.loc("timestamp"))
    formats = tuple(_need(doc, stamp.get("formats"), list, "timestamp", "formats"))
    patterns = []
    for i, spec in enumerate(_need(doc, data.get("patterns", []), list, "patterns")):
        spec = _need(doc, spec, dict, "patterns", i)
        _check_keys(doc, spec, _PATTERN_KEYS, "patterns", i)
        regex = _regex(doc, spec.get("regex"), "patterns", i, "regex")
        field = spec.get("field", "message")
        if field not in groups:
            raise InputError(f"pattern field {field!r} is not a header capture group", location=doc.loc("patterns", i))
        when = tuple((str(k), str(v)) for k, v in _need(doc, spec.get("when", {}), dict, "patterns", i, "when").items())
        for key, _ in when:
            if key not in groups:
                raise InputError(f"when: {key!r} is not a header capture group", location=doc.loc("patterns", i, "when"))
        patterns.append(
            Pattern(
                name=str(spec.get("name", f"pattern-{i}")),
                field=field,
                when=when,
                regex=regex,
                fields=_field_rules(doc, spec.get("fields"), set(regex.groupindex), "patterns", i, "fields"),
                set=tuple(_need(doc, spec.get("set", {}), dict, "patterns", i, "set").items()),
            )
        )
    examples = []
    for i, spec in enumerate(_need(doc, data.get("examples", []), list, "examples")):
        spec = _need(doc, spec, dict, "examples", i)
        _check_keys(doc, spec, {"line", "expect", "dead_letter"}, "examples", i)
        examples.append(
            Example(
                line=_need(doc, spec.get("line"), str, "examples", i, "line"),
                expect=tuple(_need(doc, spec.get("expect", {}), dict, "examples", i, "expect").items()),
                dead_letter=str(spec.get("dead_letter", "")),
                where=str(doc.loc("examples", i)),
            )
        )
    pipeline_id = str(data["id"])
    if Path(doc.path).stem != pipeline_id:
        raise InputError(f"id {pipeline_id!r} must equal the file name {Path(doc.path).stem!r}", location=doc.loc("id"))
    return Pipeline(
        id=pipeline_id,
        description=str(data.get("description", "")),
        format=fmt,
        set=tuple(_need(doc, data.get("set", {}), dict, "set").items()),
        header=header,
        timestamp_field=stamp["field"],
        timestamp_formats=tuple(str(f) for f in formats),
        fields=_field_rules(doc, data.get("fields"), groups, "fields"),
        patterns=tuple(patterns),
        examples=tuple(examples),
        path=doc.path,
    )


def load_pipelines(folders: list[Path]) -> dict[str, Pipeline]:
    """All pipelines in `folders`, keyed by id. The first error stops loading."""
    found: dict[str, Pipeline] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.yml")):
            pipeline = parse_pipeline(load_file(path))
            found.setdefault(pipeline.id, pipeline)
    return found
