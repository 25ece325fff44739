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

from secmon.normalize.convert import canonical_ipv4
from secmon.normalize.pipeline import FieldRule

Apply = Callable[[dict[str, Any], Any, Any], None]  # (doc, values, fallback values or None)
Sets = tuple[tuple[tuple[str, ...], Any], ...]  # a `set:` block: (path, value) pairs
Slow = Callable[[dict[str, Any], FieldRule, Any, Any, Any], None]  # (doc, rule, values, fallback, raw)


class _Source:
    """The lines of a generated function and the constants it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}

    def const(self, value: Any) -> str:
        name = f"k{len(self.constants)}"
        self.constants[name] = value
        return name

    def put(self, indent: str, path: tuple[str, ...], value: str) -> None:
        """`put_path(doc, path, value)` for a value that is not a list, written out."""
        node = "doc"
        for depth, part in enumerate(path[:-1]):
            key, child = self.const(part), f"n{depth}"
            self.lines += [f"{indent}{child} = {node}.get({key})",
                           f"{indent}if not isinstance({child}, dict):",
                           f"{indent}    {child} = {node}[{key}] = {{}}"]
            node = child
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
    else:  # address: a canonical dotted quad is its own ip (as convert.to_address says)
        source.lines.append("        if ipv4(raw):")
        source.put("            ", (*rule.path, "address"), "raw")
        source.put("            ", (*rule.path, "ip"), "raw")
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
        node = "doc"
        for depth, part in enumerate(parent):
            key, child = source.const(part), f"n{depth}"
            source.lines += [f"    {child} = {node}.get({key})",
                             f"    if not isinstance({child}, dict):",
                             f"        {child} = {node}[{key}] = {{}}"]
            node = child
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


def compile_fields(rules: tuple[FieldRule, ...], slow: Slow, *, before: Sets = (), after: Sets = ()) -> Apply:
    """One function doing the `set:` pairs `before`, applying `rules` in order as `slow` would one by one,
    then the `set:` pairs `after` (a pattern's). `slow(doc, rule, values, fallback, raw)` handles one rule
    given its direct value `raw`."""
    source = _Source()
    source.lines.append("def apply(doc, values, fallback):")
    _set(source, before)
    for rule in rules:
        source.lines.append(f"    raw = values.get({source.const(rule.source)})")
        if "." in rule.source:
            _dig(source, rule.source)
        # A value still missing changes nothing unless a fallback or an alternative may give one
        # (a dotted source was looked up already, in `values`, when there is no fallback).
        unless = ("True" if rule.alternatives else
                  "raw is not None or fallback is not None" + (" or not looked" if "." in rule.source else ""))
        if _inline(rule):
            source.lines.append("    if raw.__class__ is str and raw:")
            _fast(source, rule)
            source.lines.append(f"    elif {unless}:")
        else:
            source.lines.append(f"    if {unless}:")
        source.lines.append(f"        slow(doc, {source.const(rule)}, values, fallback, raw)")
    _set(source, after)
    source.lines.append("    return None")
    namespace: dict[str, Any] = {**source.constants, "slow": slow, "ipv4": canonical_ipv4}
    exec(compile("\n".join(source.lines), "<secmon pipeline fields>", "exec"), namespace)  # noqa: S102
    apply: Apply = namespace["apply"]
    return apply
