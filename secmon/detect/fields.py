"""Field types and values as Elasticsearch sees them: what the compiler and the in-process matcher share.

The events template's field types (fieldtypes.yml: date, ip, long, ignore_above), how a
document's field reads (dotted keys, objects and lists alike), how a value becomes a keyword,
and how a case-insensitive term or wildcard folds case. The compiler (detect/sigma) emits only
queries a field's type accepts and the matcher (detect/inprocess) answers as the node would,
both from these definitions, so neither depends on the other.
"""

from __future__ import annotations

import re
import sys
from fnmatch import fnmatchcase
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml


IGNORED = "_ignored"  # Elasticsearch's metadata field naming the fields a document had too long to index


@dataclass(frozen=True)
class FieldTypes:
    """What the events template says about a field, as far as matching depends on it."""

    types: Mapping[str, str]  # field -> date | ip | long (anything else: inferred from the value)
    ignore_above: Mapping[str, int]
    not_indexed: frozenset[str]
    default_ignore_above: int = 1024
    path_limits: tuple[tuple[str, int], ...] = ()  # (fnmatch pattern, ignore_above) of dynamic templates
    no_doc_values: frozenset[str] = frozenset()  # text multi-fields, stored-only keywords

    def type_of(self, field: str) -> str | None:
        return self.types.get(field)

    def has_doc_values(self, field: str) -> bool:
        """Whether the node can give the field's doc values (docvalue_fields, aggregations). An
        unmapped field has none to give, and the node says nothing of it: not refused."""
        return field not in self.no_doc_values

    def whole(self) -> FieldTypes:
        """The same fields with every keyword value indexed whatever its length: how secmon matches
        long values (sigma/compile.py, "Long values"), on `_source` values, in-process."""
        return replace(self, ignore_above={}, default_ignore_above=sys.maxsize, path_limits=())

    def limit(self, field: str) -> int:
        if field in self.ignore_above:
            return self.ignore_above[field]
        for pattern, limit in self.path_limits:
            if fnmatchcase(field, pattern):
                return limit
        return self.default_ignore_above


@lru_cache(maxsize=1)
def field_types() -> FieldTypes:
    text = resources.files("secmon.detect").joinpath("fieldtypes.yml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    types = {name: kind for kind in ("date", "ip", "long") for name in data[kind]}
    limits = {name: int(limit) for limit, names in data["ignore_above"].items() for name in names}
    paths = tuple((pattern, int(limit)) for limit, patterns in (data.get("ignore_above_paths") or {}).items()
                  for pattern in patterns)
    return FieldTypes(types, limits, frozenset(data["not_indexed"]), int(data["default_ignore_above"]), paths,
                      frozenset(data["no_doc_values"]))


# --- reading a field -----------------------------------------------------------------------

def field_values(doc: Any, field: str) -> list[Any]:
    """Every leaf value of `field` (a.b.c), whether the doc nests objects, uses dotted keys or lists."""
    out: list[Any] = []
    _collect(doc, field.split("."), out)
    return out


def _collect(node: Any, parts: list[str], out: list[Any]) -> None:
    if type(node) is list:
        for item in node:
            _collect(item, parts, out)
        return
    if not parts:
        if node is not None and not isinstance(node, Mapping):
            out.append(node)
        return
    if not isinstance(node, Mapping):
        return
    for n in range(1, len(parts) + 1):
        key = parts[0] if n == 1 else ".".join(parts[:n])
        if key in node:
            _collect(node[key], parts[n:], out)


def as_keyword(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- case folding as Elasticsearch does it -------------------------------------------------

def alt_case(ch: str) -> str:
    """The other case a character matches in a case_insensitive term, prefix or wildcard query:
    Elasticsearch 9 folds ASCII letters only there (`é` does not match `É`; a `regexp` query folds
    Unicode, see sigma/lucene_regexp.py, case_class)."""
    return ch.swapcase() if ch.isascii() and ch.isalpha() else ch


def _insensitive_char(ch: str) -> str:
    alt = alt_case(ch)
    return re.escape(ch) if alt == ch else f"[{re.escape(ch)}{re.escape(alt)}]"


def literal_regex(text: str, insensitive: bool) -> str:
    return "".join(_insensitive_char(c) for c in text) if insensitive else re.escape(text)


def wildcard_source(pattern: str, insensitive: bool) -> str:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(literal_regex(pattern[i + 1], insensitive))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else literal_regex(ch, insensitive))
        i += 1
    return "".join(out)


def as_list(value: Any) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]
