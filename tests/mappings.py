"""Read our index templates (secmon/store/templates/*.json) the way Elasticsearch would map a field.

Tests of dashboards and reports ask here whether a field they name exists and
whether Elasticsearch can aggregate, sort or histogram on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secmon.store.templates import load_template

TEMPLATES = Path(__file__).resolve().parent.parent / "secmon" / "store" / "templates"
NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}
AGGREGATABLE = NUMERIC | {"keyword", "date", "date_nanos", "ip", "boolean"}


def template_names() -> set[str]:
    return {path.stem for path in TEMPLATES.glob("*.json")}


def mapping(template: str, field: str) -> dict[str, Any] | None:
    """The mapping of `field` (dotted; multi-fields such as `x.text` too) in a template, or None."""
    node: dict[str, Any] = {"properties": load_template(template, "secmon")["template"]["mappings"]["properties"]}
    parts = field.split(".")
    for i, part in enumerate(parts):
        children = node.get("properties", {})
        if part in children:
            node = children[part]
            continue
        sub = node.get("fields", {})
        if part in sub and i == len(parts) - 1:
            return sub[part]  # type: ignore[no-any-return]
        return None
    return node


def aggregatable(template: str, field: str) -> str | None:
    """The field's type if Elasticsearch can aggregate on it (doc values on), else None."""
    found = mapping(template, field)
    if not found:
        return None
    kind = found.get("type", "object")
    if kind not in AGGREGATABLE or found.get("doc_values") is False:
        return None
    return str(kind)
