"""YAML loading that remembers where every key and item came from.

Config, pipelines and rules are user input; an error in them must name the file,
line and column. PyYAML's node tree has those marks, its `safe_load` drops them,
so we walk the nodes ourselves and keep a map from key path to position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secmon.errors import InputError, Location

KeyPath = tuple[str | int, ...]


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


def _build(node: yaml.Node, at: KeyPath, marks: dict[KeyPath, tuple[int, int]], loader: yaml.SafeLoader, path: str) -> Any:
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
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            marks: dict[KeyPath, tuple[int, int]] = {}
            if node is None:
                continue
            yield Located(_build(node, (), marks, loader, path), path, marks)
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


def load_all_file(path: Path) -> list[Located]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file: {exc}", location=Location(str(path))) from None
    return list(load_all_text(text, str(path)))
