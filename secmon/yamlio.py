"""YAML loading that remembers where every key and item came from.

Config, pipelines and rules are user input; an error in them must name the file,
line and column. PyYAML's node tree has those marks, its `safe_load` drops them,
so we walk the nodes ourselves and keep a map from key path to position.

The files can be hostile (community rules, a config from a careless admin), and
walking nodes copies what an alias points to: nine levels of nine aliases
("billion laughs") would be 387 million nodes. So the loader counts, while
composing and before building anything, the nodes each alias would add, and
refuses the file past a cap with the alias's position; it also refuses
recursive aliases and nesting deeper than any real config, rule or pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from secmon.errors import InputError, Location

KeyPath = tuple[str | int, ...]

MAX_ALIAS_NODES = 50_000  # nodes that all aliases of one file may add; real files use a handful
MAX_DEPTH = 100  # nesting of mappings and lists; building and matching walk it recursively


class Refused(yaml.YAMLError):
    """A file we will not build: an alias bomb, a recursive alias, or absurd nesting."""

    def __init__(self, problem: str, mark: Any):  # a yaml Mark (pure-Python or libyaml's)
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


def _size(node: yaml.Node, memo: dict[int, tuple[yaml.Node, int]]) -> int:
    """Nodes in the tree that `node` expands to (aliases copied out), memoized: linear in distinct nodes."""
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        if id(current) in memo:
            continue
        children: list[yaml.Node] = []
        if isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        elif isinstance(current, yaml.MappingNode):
            children = [n for pair in current.value for n in pair]
        if children_done or not children:
            # the node is kept in the memo so that its id cannot be reused by another node
            memo[id(current)] = (current, 1 + sum(memo[id(c)][1] for c in children))
            continue
        stack.append((current, True))
        stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(node)][1]


if yaml.__with_libyaml__:
    from yaml._yaml import CParser  # PyYAML's binding of libyaml, which yaml.CSafeLoader is made of

    class _Parsed(yaml.composer.Composer, CParser, yaml.constructor.SafeConstructor,
                  yaml.resolver.Resolver):
        """A SafeLoader whose events come from libyaml (PyYAML's C parser) and whose nodes are composed in
        Python, where `_Loader.compose_node` can count aliases: PyYAML's pure-Python scanner and parser were
        nine tenths of loading a file (a pipeline: 190 million instructions, about 0.06 s of every
        `collect`'s start-up; issue 12). Same events, so the same nodes, marks and errors."""

        def __init__(self, text: str):
            # The pure-Python reader refused control characters, at their place, before parsing; libyaml
            # refuses them later, with a byte offset. Keep the first: callers report its position.
            bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
            if bad:
                raise yaml.reader.ReaderError("<unicode string>", bad.start(), ord(bad.group()), "unicode",
                                              "special characters are not allowed")
            CParser.__init__(self, text)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            yaml.composer.Composer.__init__(self)
else:  # a PyYAML built without libyaml
    _Parsed = yaml.SafeLoader  # type: ignore[misc,assignment]


class _Loader(_Parsed):
    """SafeLoader that counts what aliases expand to while composing, and refuses bombs early."""

    def __init__(self, text: str):
        super().__init__(text)
        self._memo: dict[int, tuple[yaml.Node, int]] = {}
        self._added = 0
        self._open: set[str] = set()  # anchors of the nodes being composed (an alias to one is a cycle)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event: Any = self.peek_event()  # an event of the kind checked below (the stubs say Event | None)
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise Refused(f"alias *{event.anchor} refers to a node that contains it (a recursive structure)",
                              event.start_mark)
            node = cast(yaml.Node, super().compose_node(parent, index))
            self._added += _size(node, self._memo)
            if self._added > MAX_ALIAS_NODES:
                raise Refused(f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes (an alias bomb, "
                              f"\"billion laughs\"?): write the values out or use fewer aliases",
                              event.start_mark)
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        if event.anchor is not None:
            self._open.add(event.anchor)
        try:
            node = cast(yaml.Node, super().compose_node(parent, index))
        finally:
            self._depth -= 1
            if event.anchor is not None:
                self._open.discard(event.anchor)
        return node


@dataclass(frozen=True)
class Located:
    """A parsed YAML document plus the position of each key path in it."""

    data: Any
    path: str
    marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict, compare=False)

    def loc(self, *keys: str | int) -> Location:
        """The position of `keys`, or of its nearest ancestor that has one."""
        probe: KeyPath = tuple(keys)
        while probe and probe not in self.marks:
            probe = probe[:-1]
        line, col = self.marks.get(probe, (1, 1))
        return Location(self.path, line, col)


def _build(node: yaml.Node, at: KeyPath, marks: dict[KeyPath, tuple[int, int]], loader: _Loader, path: str) -> Any:
    marks.setdefault(at, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                where = Location(path, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                raise InputError("a mapping key must be a scalar", location=where)
            key = key if isinstance(key, (str, int)) else str(key)
            marks[at + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _build(value_node, at + (key,), marks, loader, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, at + (i,), marks, loader, path) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _error_location(path: str, exc: yaml.YAMLError) -> Location:
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return Location(path)
    return Location(path, mark.line + 1, mark.column + 1)


def load_all_text(text: str, path: str) -> Iterator[Located]:
    """Every document in `text`; raises InputError with the position of a syntax error."""
    try:
        loader = _Loader(text)  # the reader refuses control characters here, before any parsing
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise InputError(f"invalid YAML: character {exc.character!r} is not allowed (a binary file?)",
                         location=Location(path, line, column)) from None
    try:
        while loader.check_node():
            node = loader.get_node()
            marks: dict[KeyPath, tuple[int, int]] = {}
            if node is None:
                continue
            yield Located(_build(node, (), marks, loader, path), path, marks)
    except Refused as exc:
        raise InputError(exc.problem, location=_error_location(path, exc)) from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"invalid YAML: {problem}", location=_error_location(path, exc)) from None
    finally:
        loader.dispose()


def load_file(path: Path) -> Located:
    """Exactly one YAML document from `path`."""
    docs = list(load_all_file(path))
    if len(docs) != 1:
        raise InputError(f"expected one YAML document, found {len(docs)}", location=Location(str(path)))
    return docs[0]


def read_text(path: Path) -> str:
    """The file as UTF-8 text; a binary or mis-encoded file is an InputError at the line of the first bad byte."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", location=Location(str(path))) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(f"not UTF-8 text (byte 0x{data[exc.start]:02x}): is it a binary file?",
                         location=Location(str(path), line, column)) from None


def load_all_file(path: Path) -> list[Located]:
    return list(load_all_text(read_text(path), str(path)))
