"""The pySigma processing pipeline secmon applies before compiling, and logsource conditions.

Field names: on `product: windows` rules, Sigma's EVTX names become the contract's
`winlog.*` fields (windows.yml). Other rules use ECS names directly. Placeholders
(`|expand`) take their values from windows.yml `placeholders`; one without values
makes the rule fail with the placeholder's name instead of silently matching anything.

Logsources become Query DSL conditions: Windows services and categories map to
`winlog.channel` (+ `winlog.event_id` for Sysmon-style categories), other
logsources to `event.dataset`/`event.category`/... conditions from logsources.yml.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from sigma.processing.conditions import (
    FieldNameProcessingItemAppliedCondition,
    LogsourceCondition,
)
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddFieldnamePrefixTransformation,
    FieldMappingTransformation,
    ValueListPlaceholderTransformation,
)
from sigma.rule import SigmaLogSource

from secmon.detect.rules.compile import Query, and_, or_

EVENT_DATA = "winlog.event_data."
USER_DATA = "winlog.user_data."


def _data(name: str) -> Any:
    return yaml.safe_load(resources.files("secmon.detect.rules").joinpath(name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Logsources:
    """Both tables: Windows (windows.yml) and everything else (logsources.yml)."""

    windows: dict[str, Any]
    table: list[dict[str, Any]]

    def query(self, logsource: SigmaLogSource) -> Query | None:
        """Conditions selecting the logsource's events; None when nothing narrows it."""
        if logsource.product == "windows":
            return self._windows(logsource)
        wanted = {k: v for k, v in (("category", logsource.category), ("product", logsource.product),
                                    ("service", logsource.service)) if v}
        best: dict[str, Any] | None = None
        for entry in self.table:
            keys = entry["logsource"]
            if all(wanted.get(k) == v for k, v in keys.items()) and (best is None or len(keys) > len(best["logsource"])):
                best = entry
        if best is None:
            # A product we have no entry for: its events, by the ECS convention that
            # event.module names the product (aws, azure, okta, zeek, ...), never every event.
            return _term("event.module", logsource.product) if logsource.product else None
        return and_([_term(k, v) for k, v in best["conditions"].items()])

    def _windows(self, logsource: SigmaLogSource) -> Query:
        parts: list[Query] = [_term("event.module", "windows")]
        if logsource.service:
            channels = self.windows["services"].get(logsource.service)
            if channels:
                parts.append(_one_of("winlog.channel", channels))
        if logsource.category:
            options = self.windows["categories"].get(logsource.category)
            if options:
                parts.append(or_([and_([_term("winlog.channel", o["channel"]),
                                        _one_of("winlog.event_id", [str(i) for i in o["event_ids"]])])
                                  for o in options]) if len(options) > 1 else
                             and_([_term("winlog.channel", options[0]["channel"]),
                                   _one_of("winlog.event_id", [str(i) for i in options[0]["event_ids"]])]))
        return parts[0] if len(parts) == 1 else and_(parts)

    def known(self, logsource: SigmaLogSource) -> bool:
        if logsource.product == "windows":
            return (not logsource.service or logsource.service in self.windows["services"]) and (
                not logsource.category or logsource.category in self.windows["categories"])
        return self.query(logsource) is not None

    def keyword_fields(self, logsource: SigmaLogSource) -> list[str]:
        kind = "windows" if logsource.product == "windows" else "default"
        return list(self.windows["keyword_fields"][kind])

    def field_alternatives(self, logsource: SigmaLogSource, field: str) -> list[str]:
        """Fields a mapped field may live in: event data fields of UserData services also in user_data."""
        if (logsource.product == "windows" and field.startswith(EVENT_DATA)
                and logsource.service in self.windows["user_data_services"]):
            return [field, USER_DATA + field[len(EVENT_DATA):]]
        return [field]


    def map_field(self, logsource: SigmaLogSource, name: str) -> str:
        """A Sigma field name as the pipeline maps it (for correlation group-by fields)."""
        if logsource.product != "windows" or "." in name:
            return name
        return str(self.windows["fields"].get(name) or EVENT_DATA + name)


def _term(field: str, value: str) -> Query:
    return {"term": {field: {"value": value}}}


def _one_of(field: str, values: list[str]) -> Query:
    return _term(field, values[0]) if len(values) == 1 else {"terms": {field: list(values)}}


@lru_cache(maxsize=1)
def logsources() -> Logsources:
    return Logsources(_data("windows.yml"), _data("logsources.yml"))


def register_modifier_aliases() -> None:
    """Sigma's `utf16le` is pySigma 2.0's `wide`; pySigma lacks the alias, so add it (idempotent)."""
    from sigma.modifiers import modifier_mapping

    modifier_mapping.setdefault("utf16le", modifier_mapping["wide"])


def processing_pipeline() -> ProcessingPipeline:
    """A fresh pipeline (pySigma pipelines keep per-rule state, so never share one)."""
    windows = logsources().windows
    return ProcessingPipeline(name="secmon", priority=20, items=[
        ProcessingItem(identifier="secmon_placeholders",
                       transformation=ValueListPlaceholderTransformation(),
                       ),
        ProcessingItem(identifier="secmon_windows_fields",
                       transformation=FieldMappingTransformation(dict(windows["fields"])),
                       rule_conditions=[LogsourceCondition(product="windows")]),
        ProcessingItem(identifier="secmon_windows_event_data",
                       transformation=AddFieldnamePrefixTransformation(EVENT_DATA),
                       rule_conditions=[LogsourceCondition(product="windows")],
                       field_name_conditions=[FieldNameProcessingItemAppliedCondition("secmon_windows_fields")],
                       field_name_condition_negation=True),
    ], vars=dict(windows.get("placeholders") or {}))
