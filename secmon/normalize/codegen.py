"""A block of field rules compiled into one Python function: the ingest hot path without interpretation.

`_apply_fields` in engine.py walks a pipeline's rules for every record, asking
each rule the same questions (plain? a map? a prefix? which converter?). Here
the answers are taken once, when the stream opens: each block of rules (the
pipeline's `fields:`, one pattern's `fields:` and `set:`) becomes the source of
one function whose common cases are inline - a non-empty string copied or
turned into a long or a dotted-quad address - and whose every other case calls
`slow(rule, ...)`, the interpreter's own code for one rule, so that both roads
give the same document.

Nothing from the pipeline file is written into the generated source: names,
paths and values reach it as constants bound by position (`k0`, `r3`, ...),
so a hostile field name cannot become code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from secmon.normalize.convert import canonical_ipv4, known_address
from secmon.normalize.pipeline import FieldRule

Apply = Callable[[dict[str, Any], Any, Any], None]  # (doc, values, fallback values or None)
Patterns = Callable[[dict[str, Any], Any], None]  # (doc, values): the first pattern that holds and matches
Sets = tuple[tuple[tuple[str, ...], Any], ...]  # a `set:` block: (path, value) pairs
Slow = Callable[[dict[str, Any], FieldRule, Any, Any, Any], None]  # (doc, rule, values, fallback, raw)


class _Source:
    """The lines of a generated function and the constants it refers to."""

    def __init__(self, fresh: frozenset[str] | None = None) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        # The top-level keys the document may hold at this point of the function (None: any): `fresh`, the
        # keys it starts with, and then every key a statement before this one may have set.
        self.maybe: set[str] | None = None if fresh is None else set(fresh)

    def const(self, value: Any) -> str:
        name = f"k{len(self.constants)}"
        self.constants[name] = value
        return name

    def node(self, indent: str, path: tuple[str, ...]) -> str:
        """The name of the dict at `path` in `doc`, made as `put_path` makes the parents of a field."""
        node = "doc"
        for depth, part in enumerate(path):
            key, child = self.const(part), f"n{depth}"
            if depth == 0 and self.maybe is not None and part not in self.maybe:  # certainly absent: made
                self.lines.append(f"{indent}{child} = doc[{key}] = {{}}")
                self.maybe.add(part)
            else:
                self.lines += [f"{indent}{child} = {node}.get({key})",
                               f"{indent}if not isinstance({child}, dict):",
                               f"{indent}    {child} = {node}[{key}] = {{}}"]
            node = child
        return node

    def put(self, indent: str, path: tuple[str, ...], value: str) -> None:
        """`put_path(doc, path, value)` for a value that is not a list, written out."""
        node = self.node(indent, path[:-1])
        self.lines.append(f"{indent}{node}[{self.const(path[-1])}] = {value}")


def _inline(rule: FieldRule) -> bool:
    """Whether `rule` has an inline case for a non-empty string."""
    return rule.map is None and not rule.prefix and bool(rule.path) and rule.type in ("string", "long", "address")


def _fast(source: _Source, rule: FieldRule) -> None:
    """The inline case of `rule` for a non-empty string `raw` (other strings go to `slow`)."""
    if rule.type == "string":
        source.put("        ", rule.path, "raw")
        return
    if rule.type == "long":  # ASCII digits, fewer than 19: an int within Elasticsearch's long
        source.lines.append("        if raw.isascii() and raw.isdigit() and len(raw) < 19:")
        source.put("            ", rule.path, "int(raw)")
    else:  # address: a canonical dotted quad is its own ip (as convert.to_address says); another
        # text that to_address has seen gives what it gave then (its fields, strings: put_path's update)
        source.lines.append("        if ipv4(raw):")
        source.put("            ", (*rule.path, "address"), "raw")
        source.put("            ", (*rule.path, "ip"), "raw")
        source.lines.append("        elif (hit := known(raw)) is not None:")
        source.lines.append(f"            {source.node('            ', rule.path)}.update(hit)")
    source.lines += ["        else:", f"            slow(doc, {source.const(rule)}, values, fallback, raw)"]


def _set(source: _Source, pairs: Sets) -> None:
    """A `set:` block: `put_path` of each (path, value) in order; consecutive fields under one parent
    (event.kind, event.module, ...) are one dict.update; a list is copied (never share a pipeline's list)."""
    runs: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for path, value in pairs:
        parent = tuple(path[:-1])
        if not runs or runs[-1][0] != parent:
            runs.append((parent, {}))
        runs[-1][1][path[-1]] = value
    for parent, leaves in runs:
        node = source.node("    ", parent)
        if not parent and source.maybe is not None:
            source.maybe.update(leaves)
        source.lines.append(f"    {node}.update({source.const(leaves)})")
        source.lines += [f"    {node}[{source.const(key)}] = list({source.const(value)})"
                         for key, value in leaves.items() if isinstance(value, list)]


def _dig(source: _Source, dotted: str) -> None:
    """`raw = get(values, dotted)` (what `slow` looks up first when `values` has no such flat key and
    there is no fallback: a flat key holding None wins in `get`, so it is left to `slow`), written out for nested dicts, and `looked` = whether it was: a node of
    another kind (a Mapping, a scalar) leaves it to `slow`. windows-evtx names `winlog.event_data.X`,
    which most records lack: they are answered without a call."""
    parts = dotted.split(".")
    source.lines += ["    looked = False", f"    if raw is None and fallback is None and {source.const(dotted)} not in values:"]
    indent, node = "        ", "values"
    for depth, part in enumerate(parts):
        child = f"d{depth}"
        source.lines.append(f"{indent}{child} = {node}.get({source.const(part)})")
        if depth == len(parts) - 1:
            source.lines += [f"{indent}raw = {child}", f"{indent}looked = True"]
            break
        source.lines += [f"{indent}if {child}.__class__ is not dict:",
                         f"{indent}    looked = {child} is None",
                         f"{indent}else:"]
        indent, node = indent + "    ", child


def compile_fields(rules: tuple[FieldRule, ...], slow: Slow, *, before: Sets = (), after: Sets = (),
                   fallback_names: frozenset[str] | None = None, fresh: frozenset[str] | None = None,
                   names: frozenset[str] = frozenset()) -> Apply:
    """One function doing the `set:` pairs `before`, applying `rules` in order as `slow` would one by one,
    then the `set:` pairs `after` (a pattern's). `slow(doc, rule, values, fallback, raw)` handles one rule
    given its direct value `raw`. `fallback_names`, when known, holds every key the fallback values can
    have (a line pipeline's capture groups): a value absent from both is then not looked for. `fresh`,
    when known, holds every top-level key the document can have when the function is called (a line
    pipeline's: @timestamp): a parent certainly absent is then made without looking for it. `names`: keys
    `values` always holds (a regex's groups: `groupdict` gives each, None when it took no part), read by
    subscript rather than a call of `get`."""
    source = _Source(fresh)
    source.lines.append("def apply(doc, values, fallback):")
    _set(source, before)
    for rule in rules:
        read = "values[{}]" if rule.source in names else "values.get({})"
        source.lines.append(f"    raw = {read.format(source.const(rule.source))}")
        if "." in rule.source:
            _dig(source, rule.source)
        # A value still missing changes nothing unless a fallback or an alternative may give one
        # (a dotted source was looked up already, in `values`, when there is no fallback; a fallback
        # whose every name is known cannot hold another: a line's capture groups).
        if rule.alternatives:
            unless = "True"
        elif "." in rule.source:
            unless = "raw is not None or fallback is not None or not looked"
        elif fallback_names is not None and rule.source not in fallback_names:
            unless = "raw is not None"
        else:
            unless = "raw is not None or fallback is not None"
        if _inline(rule):
            source.lines.append("    if raw.__class__ is str and raw:")
            _fast(source, rule)
            source.lines.append(f"    elif {unless}:")
        else:
            source.lines.append(f"    if {unless}:")
        source.lines.append(f"        slow(doc, {source.const(rule)}, values, fallback, raw)")
        if source.maybe is not None:  # what `slow` may set: the rule's field, or the tags (_apply_rule)
            source.maybe.update((rule.path[0], "tags"))
    _set(source, after)
    source.lines.append("    return None")
    namespace: dict[str, Any] = {**source.constants, "slow": slow, "ipv4": canonical_ipv4, "known": known_address}
    exec(compile("\n".join(source.lines), "<secmon pipeline fields>", "exec"), namespace)  # noqa: S102
    apply: Apply = namespace["apply"]
    return apply


# A pattern as tried (engine.Tried): its tests, the value it searches, its regex's search (None: no regex),
# a text every match contains ("": none known) and its fields.
Candidate = tuple[tuple[tuple[str, frozenset[str]], ...], str, Callable[[str], Any] | None, str, Apply]


def compile_patterns(candidates: tuple[Candidate, ...], holds: Callable[[Any, Any], bool],
                     value: Callable[[Any, str], Any], plain: frozenset[str] = frozenset()) -> Patterns:
    """One function trying `candidates` in order, as the engine's loop does (`_interpreted_patterns`):
    the first whose tests hold (`holds(tests, values)`), whose needle is in the text of its field and
    whose regex finds a match there applies its fields, and no other is tried. Each field's text
    (`str(value(values, name) or "")`) is read once, before the first pattern that searches it. `plain`:
    names whose value `values` always holds as a text or None (a line's groups): `values[name] or ""`."""
    source = _Source()
    source.lines.append("def run(doc, values):")
    texts: dict[str, str] = {}
    for tests, name, search, needle, apply in candidates:
        indent = "    "
        if tests:
            source.lines.append(f"    if holds({source.const(tests)}, values):")
            indent = "        "
        if search is None:
            source.lines += [f"{indent}{source.const(apply)}(doc, values, None)", f"{indent}return"]
            continue
        if name not in texts:
            texts[name] = text = f"x{len(texts)}"
            if name in plain:
                read = f"values[{source.const(name)}] or ''"
            else:
                got = f"values.get({source.const(name)})" if "." not in name else f"value(values, {source.const(name)})"
                read = f"str({got} or '')"
            source.lines.insert(len(source.lines) - (1 if tests else 0), f"    {text} = {read}")
        text = texts[name]
        if needle:
            source.lines.append(f"{indent}if {source.const(needle)} in {text}:")
            indent += "    "
        source.lines += [f"{indent}found = {source.const(search)}({text})",
                         f"{indent}if found is not None:",
                         f"{indent}    {source.const(apply)}(doc, found.groupdict(), values)",
                         f"{indent}    return"]
    source.lines.append("    return None")
    namespace: dict[str, Any] = {**source.constants, "holds": holds, "value": value}
    exec(compile("\n".join(source.lines), "<secmon pipeline patterns>", "exec"), namespace)  # noqa: S102
    run: Patterns = namespace["run"]
    return run
