"""A pipeline definition (`pipelines/<id>.yml`), validated on load with file:line:column errors.

The format is documented in pipelines/README.md. A definition is data only:
loading it compiles its regular expressions and checks every reference, so a
mistake is found when the file is read, not on the millionth line. Each section is
checked on its own and every problem goes into one error (`secmon.validation`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from secmon.errors import InputError, Problem
from secmon.normalize.convert import CONVERTERS, SPECIAL_FORMATS
from secmon.normalize.formats import FORMATS, LAYOUT_BY_COUNT, FormatSpec, kv_pattern
from secmon.validation import Problems
from secmon.yamlio import Located, load_file

_TOP_KEYS = {"id", "description", "format", "set", "parse", "timestamp", "fields", "patterns", "enrich",
             "drop", "keep", "examples"}
_PARSE_KEYS = {
    "line": {"regex"},
    "json": {"regex", "payload"},
    "kv": {"regex", "payload", "separator", "assign", "quote", "nested"},
    "csv": {"regex", "payload", "separator", "quote", "columns", "layout_column", "layouts", "header", "unset"},
    "cef": {"regex", "payload"},
    "leef": {"regex", "payload"},
    "evtx": set(),
    "winlog": set(),
    "xml": {"regex", "payload"},
}
_WINDOWS = ("evtx", "winlog", "xml")
_PATTERN_KEYS = {"name", "field", "when", "regex", "fields", "set"}
_FIELD_KEYS = {"from", "type", "map", "prefix"}
_STAMP_KEYS = {"field", "join", "formats", "timezone", "optional"}


@dataclass(frozen=True)
class FieldRule:
    target: str  # dotted ECS name
    source: str  # value name: capture group, JSON path, key, column
    type: str  # key of CONVERTERS
    path: tuple[str, ...] = ()  # target split on dots, once
    map: Mapping[str, Any] | None = None  # raw value -> stored value (unknown values kept as they are)
    alternatives: tuple[str, ...] = ()  # further value names tried when `source` is absent
    prefix: str = ""  # prepended to a string value (zeek. + dns = zeek.dns)
    plain: bool = field(init=False, repr=False, compare=False)  # see __post_init__

    def __post_init__(self) -> None:
        # A string copied as it is to a two-level field (host.hostname: host): the engine's fast path.
        object.__setattr__(self, "plain", self.map is None and not self.prefix and self.type == "string"
                           and len(self.path) == 2)


@dataclass(frozen=True)
class Condition:
    """All of `tests` hold: each names a value and the texts it may equal."""

    tests: tuple[tuple[str, frozenset[str]], ...]


@dataclass(frozen=True)
class Pattern:
    name: str
    field: str  # the value the regex searches ("" when there is no regex)
    when: Condition
    regex: re.Pattern[str] | None
    fields: tuple[FieldRule, ...]
    set: tuple[tuple[tuple[str, ...], Any], ...]


@dataclass(frozen=True)
class Lookup:
    """Enrichment: the value of an ECS field selects fields to add."""

    field: str
    table: Mapping[str, tuple[tuple[tuple[str, ...], Any], ...]]


@dataclass(frozen=True)
class Timestamp:
    fields: tuple[str, ...]  # alternatives: the first present is used
    join: tuple[str, ...]  # or: these values joined by a space (date + time)
    formats: tuple[str, ...]
    timezone: str  # "" = the agency's
    optional: bool  # absent: the collection time is used


@dataclass(frozen=True)
class Example:
    line: str
    expect: tuple[tuple[str, Any], ...]  # dotted field -> value; empty for dead letters
    dead_letter: str  # expected reason substring, "" if the line must parse
    where: str  # file:line of the example, for test ids
    before: tuple[str, ...] = ()  # lines fed first (a Zeek header)
    skipped: bool = False  # the line must be dropped


@dataclass(frozen=True)
class Pipeline:
    id: str
    description: str
    format: str
    parse: FormatSpec
    set: tuple[tuple[tuple[str, ...], Any], ...]
    timestamp: Timestamp | None  # None: Windows formats take the flattener's @timestamp
    fields: tuple[FieldRule, ...]
    patterns: tuple[Pattern, ...]
    enrich: tuple[Lookup, ...]
    drop: tuple[Condition, ...]
    keep: tuple[Condition, ...]
    examples: tuple[Example, ...]
    path: str


def _need(doc: Located, value: Any, kind: type | tuple[type, ...], *at: str | int) -> Any:
    if not isinstance(value, kind):
        name = ".".join(str(p) for p in at)
        wanted = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(f"{name} must be a {wanted}, found {value!r}", location=doc.loc(*at))
    return value


def _regex(doc: Located, text: Any, *at: str | int) -> re.Pattern[str]:
    _need(doc, text, str, *at)
    try:
        return re.compile(text)
    except re.error as exc:
        raise InputError(f"invalid regular expression: {exc}", location=doc.loc(*at)) from None


def _check_keys(doc: Located, data: dict[str, Any], allowed: set[str], *at: str | int) -> None:
    for key in data:
        if key not in allowed:
            raise InputError(
                f"unknown key {key!r}", location=doc.loc(*at, key), hint=f"allowed: {', '.join(sorted(allowed)) or 'none'}"
            )


def _known(doc: Located, name: str, names: set[str] | None, what: str, *at: str | int) -> None:
    """Check a value name when the format's names are all known at load time."""
    if names is not None and name not in names:
        raise InputError(f"{what} {name!r} does not exist", location=doc.loc(*at),
                         hint=f"names available here: {', '.join(sorted(names)) or 'none'}")


def _field_rules(doc: Located, data: Any, names: set[str] | None, *at: str | int) -> tuple[FieldRule, ...]:
    rules = []
    for target, spec in _need(doc, data or {}, dict, *at).items():
        if isinstance(spec, str):
            spec = {"from": spec}
        spec = _need(doc, spec, dict, *at, target)
        _check_keys(doc, spec, _FIELD_KEYS, *at, target)
        sources, kind = _strings(doc, spec.get("from"), *at, target, "from"), spec.get("type", "string")
        if not sources:
            raise InputError(f"{target}: 'from' names no value", location=doc.loc(*at, target))
        for source in sources:
            if names is not None and source not in names:
                raise InputError(f"{target}: capture group {source!r} does not exist", location=doc.loc(*at, target),
                                 hint=f"groups available here: {', '.join(sorted(names)) or 'none'}")
        if kind not in CONVERTERS:
            raise InputError(f"{target}: unknown type {kind!r}", location=doc.loc(*at, target),
                             hint=f"allowed: {', '.join(CONVERTERS)}")
        mapping = spec.get("map")
        if mapping is not None:
            mapping = {str(k): v for k, v in _need(doc, mapping, dict, *at, target, "map").items()}
        prefix = str(spec.get("prefix", ""))
        rules.append(FieldRule(str(target), sources[0], kind, tuple(str(target).split(".")), mapping, sources[1:], prefix))
    return tuple(rules)


def _sets(doc: Located, data: Any, *at: str | int) -> tuple[tuple[tuple[str, ...], Any], ...]:
    return tuple((tuple(str(k).split(".")), v) for k, v in _need(doc, data or {}, dict, *at).items())


def _condition(doc: Located, data: Any, names: set[str] | None, *at: str | int) -> Condition:
    tests = []
    for key, allowed in _need(doc, data or {}, dict, *at).items():
        _known(doc, str(key), names, "condition value", *at, key)
        options = allowed if isinstance(allowed, list) else [allowed]
        for i, option in enumerate(options):
            _need(doc, option, (str, int, float, bool), *at, key, i)
        tests.append((str(key), frozenset(("true" if o else "false") if isinstance(o, bool) else str(o) for o in options)))
    return Condition(tuple(tests))


def _conditions(doc: Located, data: Any, names: set[str] | None, key: str) -> tuple[Condition, ...]:
    items = data if isinstance(data, list) else [data] if data is not None else []
    return tuple(_condition(doc, item, names, key, i) for i, item in enumerate(items))


def _strings(doc: Located, data: Any, *at: str | int) -> tuple[str, ...]:
    items = [data] if isinstance(data, str) else _need(doc, data, list, *at) if data is not None else []
    return tuple(_need(doc, item, str, *at, i) for i, item in enumerate(items))


def _parse_spec(doc: Located, fmt: str, data: Any) -> tuple[FormatSpec, set[str] | None]:
    """The `parse:` section, and the value names it yields when they are all known now."""
    parse = _need(doc, data if data is not None else {}, dict, "parse")
    _check_keys(doc, parse, _PARSE_KEYS[fmt], "parse")
    regex = _regex(doc, parse["regex"], "parse", "regex") if "regex" in parse else None
    if fmt == "line" and regex is None:
        raise InputError("format line needs parse.regex", location=doc.loc("parse"))
    payload = str(parse.get("payload", "payload"))
    if regex is not None and fmt != "line" and payload not in regex.groupindex:
        raise InputError(f"parse.regex has no group {payload!r} holding the {fmt} payload", location=doc.loc("parse", "regex"))
    opts: dict[str, Any] = {"kind": fmt, "regex": regex, "payload": payload, "separator": "," if fmt == "csv" else " "}
    for key in ("separator", "assign", "quote", "header"):
        if key in parse:
            opts[key] = _need(doc, parse[key], str, "parse", key)
            if key in ("separator", "assign") and not opts[key]:
                raise InputError(f"parse.{key} must not be empty", location=doc.loc("parse", key))
    if opts.get("header", "") not in ("", "zeek", "w3c"):
        raise InputError(f"unknown header {opts['header']!r}", location=doc.loc("parse", "header"), hint="allowed: zeek, w3c")
    for key in ("nested", "columns", "unset"):
        if key in parse:
            opts[key] = _strings(doc, parse[key], "parse", key)
    if "layouts" in parse:
        layouts = _need(doc, parse["layouts"], dict, "parse", "layouts")
        opts["layouts"] = tuple((str(k), _strings(doc, v, "parse", "layouts", k)) for k, v in layouts.items())
        column = parse.get("layout_column")
        # a column index, or "count": IIS logs written without a header differ only in how many fields they have
        opts["layout_column"] = LAYOUT_BY_COUNT if column == "count" else _need(doc, column, int, "parse", "layout_column")
    if fmt == "csv" and not (opts.get("columns") or opts.get("layouts") or opts.get("header")):
        raise InputError("format csv needs parse.columns, parse.layouts or parse.header", location=doc.loc("parse"))
    if fmt == "kv":
        opts["kv_regex"] = kv_pattern(opts.get("separator", " "), opts.get("assign", "="), opts.get("quote", "\"'"))
    spec = FormatSpec(**opts)
    names: set[str] | None = None
    if fmt == "line" and regex is not None:
        names = set(regex.groupindex)
    elif fmt == "csv" and spec.columns and not spec.header:
        names = set(spec.columns) | (set(regex.groupindex) if regex is not None else set())
    return spec, names


def _timestamp(doc: Located, data: Any, fmt: str, names: set[str] | None) -> Timestamp | None:
    if data is None:
        if fmt in _WINDOWS:
            return None
        raise InputError("missing required key 'timestamp'", location=doc.loc())
    stamp = _need(doc, data, dict, "timestamp")
    _check_keys(doc, stamp, _STAMP_KEYS, "timestamp")
    fields = _strings(doc, stamp.get("field", []), "timestamp", "field")
    join = _strings(doc, stamp.get("join", []), "timestamp", "join")
    if bool(fields) == bool(join):
        raise InputError("timestamp needs exactly one of field or join", location=doc.loc("timestamp"))
    for name in fields + join:
        if names is not None and name not in names:
            raise InputError(f"timestamp.field {name!r} is not a capture group", location=doc.loc("timestamp"))
    formats = _strings(doc, stamp.get("formats"), "timestamp", "formats")
    for i, fmt_text in enumerate(formats):
        if fmt_text.isupper() and fmt_text not in SPECIAL_FORMATS:
            raise InputError(f"unknown timestamp format {fmt_text!r}", location=doc.loc("timestamp", "formats", i),
                             hint=f"allowed: strptime formats (%d/%b/%Y:%H:%M:%S %z) or {', '.join(SPECIAL_FORMATS)}")
    zone = str(stamp.get("timezone", ""))
    if zone:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"unknown timezone {zone!r}", location=doc.loc("timestamp", "timezone"),
                             hint="an IANA name such as UTC or Asia/Ho_Chi_Minh") from None
    optional = _need(doc, stamp.get("optional", False), bool, "timestamp", "optional")
    return Timestamp(fields, join, formats, zone, optional)


def _patterns(doc: Located, data: Any, names: set[str] | None) -> tuple[Pattern, ...]:
    patterns = []
    for i, spec in enumerate(_need(doc, data or [], list, "patterns")):
        spec = _need(doc, spec, dict, "patterns", i)
        _check_keys(doc, spec, _PATTERN_KEYS, "patterns", i)
        regex = _regex(doc, spec["regex"], "patterns", i, "regex") if "regex" in spec else None
        field = str(spec.get("field", "message")) if regex is not None else ""
        if regex is not None and names is not None and field not in names:
            raise InputError(f"pattern field {field!r} is not a header capture group", location=doc.loc("patterns", i))
        when = _condition(doc, spec.get("when"), names, "patterns", i, "when")
        own = set(regex.groupindex) if regex is not None else set()
        patterns.append(Pattern(
            name=str(spec.get("name", f"pattern-{i}")), field=field, when=when, regex=regex,
            fields=_field_rules(doc, spec.get("fields"), None if names is None else own | names, "patterns", i, "fields"),
            set=_sets(doc, spec.get("set"), "patterns", i, "set"),
        ))
    return tuple(patterns)


def _enrich(doc: Located, data: Any) -> tuple[Lookup, ...]:
    lookups = []
    for i, spec in enumerate(_need(doc, data or [], list, "enrich")):
        spec = _need(doc, spec, dict, "enrich", i)
        _check_keys(doc, spec, {"lookup", "table"}, "enrich", i)
        field = _need(doc, spec.get("lookup"), str, "enrich", i, "lookup")
        table = _need(doc, spec.get("table"), dict, "enrich", i, "table")
        lookups.append(Lookup(field, {str(k): _sets(doc, v, "enrich", i, "table", k) for k, v in table.items()}))
    return tuple(lookups)


def _examples(doc: Located, data: Any) -> tuple[Example, ...]:
    examples = []
    for i, spec in enumerate(_need(doc, data or [], list, "examples")):
        spec = _need(doc, spec, dict, "examples", i)
        _check_keys(doc, spec, {"line", "expect", "dead_letter", "before", "skipped"}, "examples", i)
        examples.append(Example(
            line=_need(doc, spec.get("line"), str, "examples", i, "line"),
            expect=tuple(_need(doc, spec.get("expect", {}), dict, "examples", i, "expect").items()),
            dead_letter=str(spec.get("dead_letter", "")),
            where=str(doc.loc("examples", i)),
            before=_strings(doc, spec.get("before", []), "examples", i, "before"),
            skipped=_need(doc, spec.get("skipped", False), bool, "examples", i, "skipped"),
        ))
    return tuple(examples)


def parse_pipeline(doc: Located) -> Pipeline:
    """A pipeline file -> Pipeline; one InputError naming every problem (each section checked on its own)."""
    data = _need(doc, doc.data, dict)
    problems = Problems(doc)
    for key in data:
        if key not in _TOP_KEYS:
            problems.add(f"unknown key {key!r}", key, hint=f"allowed: {', '.join(sorted(_TOP_KEYS))}")
    fmt = data.get("format", "line")
    if fmt not in FORMATS:
        problems.add(f"unknown format {fmt!r}", "format", hint=f"allowed: {', '.join(FORMATS)}")
        problems.raise_for(InputError)  # every other section depends on the format
    pipeline_id = str(data.get("id", ""))
    if "id" not in data:
        problems.add("missing required key 'id'")
    elif Path(doc.path).stem != pipeline_id:
        problems.add(f"id {pipeline_id!r} must equal the file name {Path(doc.path).stem!r}", "id")
    spec, names = None, None
    if fmt == "line" and "parse" not in data:
        problems.add("missing required key 'parse' (format line needs parse.regex)")
    else:
        with problems.section():
            spec, names = _parse_spec(doc, fmt, data.get("parse"))
    parts: dict[str, Any] = {}
    readers: dict[str, Callable[[], Any]] = {
        "timestamp": lambda: _timestamp(doc, data.get("timestamp"), fmt, names),
        "set": lambda: _sets(doc, data.get("set"), "set"),
        "fields": lambda: _field_rules(doc, data.get("fields"), names, "fields"),
        "patterns": lambda: _patterns(doc, data.get("patterns"), names),
        "enrich": lambda: _enrich(doc, data.get("enrich")),
        "drop": lambda: _conditions(doc, data.get("drop"), names, "drop"),
        "keep": lambda: _conditions(doc, data.get("keep"), names, "keep"),
        "examples": lambda: _examples(doc, data.get("examples")),
    }
    for name, read in readers.items():
        with problems.section():
            parts[name] = read()
    problems.raise_for(InputError)
    assert spec is not None  # raise_for raised otherwise
    return Pipeline(id=pipeline_id, description=str(data.get("description", "")), format=fmt, parse=spec,
                    path=doc.path, **parts)


def load_pipelines(folders: list[Path]) -> dict[str, Pipeline]:
    """All pipelines in `folders`, keyed by id; one InputError naming every problem of every file."""
    found: dict[str, Pipeline] = {}
    problems: list[Problem] = []
    for folder in folders:
        for path in sorted(folder.glob("*.yml")):
            try:
                pipeline = parse_pipeline(load_file(path))
            except InputError as exc:
                problems += exc.problems or (Problem(exc.message, exc.location, exc.hint),)
                continue
            found.setdefault(pipeline.id, pipeline)
    if len(problems) == 1:
        raise InputError(problems[0].message, location=problems[0].location, hint=problems[0].hint)
    if problems:
        raise InputError(f"{len(problems)} problems in the pipelines of {', '.join(map(str, folders))}",
                         problems=tuple(problems))
    return found


def pipeline_named(folders: list[Path], pipeline_id: str) -> Pipeline | None:
    """The pipeline `pipeline_id` from the first folder that has it, reading only its own file (an id
    must equal its file name, see parse_pipeline): a collector starts without parsing every pipeline."""
    if not pipeline_id or Path(pipeline_id).name != pipeline_id or pipeline_id.startswith("."):
        return None
    for folder in folders:
        path = folder / f"{pipeline_id}.yml"
        if path.is_file():
            return parse_pipeline(load_file(path))
    return None
