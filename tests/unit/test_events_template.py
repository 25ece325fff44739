"""The events template maps what the pipelines write and what the rules read, and nothing grows it.

It is `dynamic: false`: a field it does not map is kept in _source, never indexed, so made-up
field names (hostile JSON) cannot fill the mapping. That is only safe if every field a pipeline
writes, and every field a rule reads, is mapped: these tests hold the template to it.
(tests/integration/test_sigma_cluster.py checks the community rules' fields the same way.)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from secmon.detect.sigma.compile import query_fields
from secmon.detect.sigma.load import CompiledRule, load_rules
from secmon.model import Event
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import FieldRule, load_pipelines

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "secmon" / "store" / "templates" / "events.json"
UNMAPPED_OK = ("winlog.event_data.", "winlog.user_data.")  # event data no rule reads: kept in _source


def mappings() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text(encoding="utf-8"))["template"]["mappings"]  # type: ignore[no-any-return]


def mapped() -> set[str]:
    out: set[str] = set()

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, spec in properties.items():
            out.add(prefix + name)
            walk(spec.get("properties", {}), f"{prefix}{name}.")
    walk(mappings()["properties"], "")
    return out


def leaves(doc: Any, prefix: str = "") -> set[str]:
    if isinstance(doc, dict):
        return {leaf for key, value in doc.items() for leaf in leaves(value, f"{prefix}{key}.")}
    if isinstance(doc, list):
        return {leaf for value in doc for leaf in leaves(value, prefix)} or {prefix[:-1]}
    return {prefix[:-1]}


def targets(rule: FieldRule) -> list[str]:
    return [f"{rule.target}.{sub}" for sub in ("address", "ip", "domain")] if rule.type == "address" else [rule.target]


def test_nothing_in_the_template_maps_fields_as_they_come() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    assert mappings()["dynamic"] is False
    assert '"dynamic": true' not in text and '"dynamic": "true"' not in text and '"runtime"' not in text
    settings = json.loads(text)["template"]["settings"]
    assert settings["index.mapping.total_fields.limit"] <= 2000  # a bound, should dynamic mapping ever come back


def test_every_field_a_pipeline_writes_is_mapped() -> None:
    known = mapped()
    missing: dict[str, str] = {}
    for pipeline in load_pipelines([ROOT / "pipelines"]).values():
        written = [".".join(path) for path, _ in pipeline.set]
        written += [t for rule in pipeline.fields for t in targets(rule)]
        for pattern in pipeline.patterns:
            written += [".".join(path) for path, _ in pattern.set]
            written += [t for rule in pattern.fields for t in targets(rule)]
        written += [".".join(path) for lookup in pipeline.enrich for pairs in lookup.table.values()
                    for path, _ in pairs]
        normalizer = Normalizer(pipeline, agency="t", timezone="UTC", source="x",
                                now=datetime(2026, 1, 1, tzinfo=timezone.utc))
        for example in pipeline.examples:
            for line in (*example.before, example.line):
                result = normalizer.normalize(line, 0, line)
                if isinstance(result, Event):
                    written += sorted(leaves(dict(result.doc)))
        for name in written:
            if name not in known and not name.startswith(UNMAPPED_OK):
                missing.setdefault(name, pipeline.id)
    assert not missing, f"fields written but not mapped in events.json (field: pipeline): {missing}"


@pytest.fixture(scope="module")
def library() -> list[CompiledRule]:
    return load_rules([ROOT / "rules"]).rules


def rule_fields(rule: CompiledRule) -> set[str]:
    fields = set(query_fields(rule.query)) | set(rule.fields)
    if rule.refine is not None:
        fields |= query_fields(rule.refine)
    if rule.correlation is not None:
        for leaf in rule.correlation.leaves():
            fields |= query_fields(leaf.query)
    return fields


def test_every_field_our_rules_read_is_mapped(library: list[CompiledRule]) -> None:
    known = mapped()
    missing = {field: rule.path for rule in library for field in rule_fields(rule) if field not in known}
    assert not missing, f"fields rules read but events.json does not map (field: rule): {missing}"
