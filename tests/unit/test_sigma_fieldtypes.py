"""fieldtypes.yml (what the compiler and the in-process matcher believe) agrees with the events template."""

from __future__ import annotations

import json
from pathlib import Path

from secmon.detect.fields import field_types

TEMPLATE = Path(__file__).resolve().parents[2] / "secmon" / "store" / "templates" / "events.json"


def leaves(properties: dict, prefix: str = "") -> dict[str, dict]:  # type: ignore[type-arg]
    out = {}
    for name, spec in properties.items():
        if "properties" in spec:
            out.update(leaves(spec["properties"], f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = spec
    return out


def test_field_types_match_the_events_template() -> None:
    mappings = json.loads(TEMPLATE.read_text(encoding="utf-8"))["template"]["mappings"]
    fields = leaves(mappings["properties"])
    types = field_types()
    for name, spec in fields.items():
        kind = spec.get("type")
        if kind in ("date", "ip", "long"):
            assert types.type_of(name) == kind, name
        elif kind == "keyword":
            assert types.type_of(name) is None, name
            if spec.get("index") is False:
                assert name in types.not_indexed, name
            else:
                assert types.limit(name) == spec.get("ignore_above", types.default_ignore_above), name
    for name in types.types:
        assert name in fields, f"{name} is typed in fieldtypes.yml but not in the template"
    assert mappings.get("date_detection") is False  # else ISO-looking strings would become dates
    dynamic = [next(iter(t.values())) for t in mappings["dynamic_templates"]]
    for template in dynamic:
        limit = template["mapping"].get("ignore_above")
        for pattern in template.get("path_match", []):
            assert types.limit(pattern.replace("*", "X")) == limit, pattern
    catch_all = [t for t in dynamic if "path_match" not in t and t.get("match_mapping_type") == "string"]
    assert catch_all and catch_all[0]["mapping"]["ignore_above"] == types.default_ignore_above
    every = {**fields, **{f"{name}.{sub}": spec for name, parent in fields.items()
                          for sub, spec in parent.get("fields", {}).items()}}
    docless = {name for name, spec in every.items()
               if spec.get("type") in ("text", "match_only_text") or spec.get("doc_values") is False}
    assert types.no_doc_values == docless
    assert all(not d.get("mapping", {}).get("type", "keyword").endswith("text") for d in dynamic)
