"""The pySigma processing pipeline secmon applies before compiling, and logsource conditions.

Field names: on `product: windows` rules, Sigma's EVTX names become the contract's
`winlog.*` fields (windows.yml); a name that is already ours (`process.executable`,
`source.ip`, `winlog.channel`: windows.yml `ecs`) passes unchanged. Other rules use ECS
names directly. Placeholders
(`|expand`) take their values from windows.yml `placeholders`; one without values
makes the rule fail with the placeholder's name instead of silently matching anything.

Logsources become Query DSL conditions: Windows services and categories map to
`winlog.channel` (compared case-insensitively) + `winlog.event_id` for Sysmon-style
categories, other logsources to `event.dataset`/`event.category`/... conditions from
logsources.yml. A Sysmon category may also be a Security-audit event (process_creation is
Sysmon 1 or Security 4688): each such `Variant` names the fields its own way (windows.yml
`audit:`, audit.py), and the rule's condition is compiled once per variant.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from sigma.processing.conditions import (
    FieldNameProcessingItemAppliedCondition,
    IncludeFieldCondition,
    LogsourceCondition,
)
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddFieldnamePrefixTransformation,
    FieldMappingTransformation,
    ValueListPlaceholderTransformation,
)
from sigma.rule import SigmaLogSource

from secmon.detect.sigma.audit import translation
from secmon.detect.sigma.compile import Query, Translation, and_, or_

EVENT_DATA = "winlog.event_data."
USER_DATA = "winlog.user_data."


def _data(name: str) -> Any:
    return yaml.safe_load(resources.files("secmon.detect.sigma").joinpath(name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Variant:
    """One kind of event a rule's logsource selects, and how that event names Sigma's fields.

    `process_creation` is Sysmon 1 or Security 4688: the rule's condition is compiled once per
    variant, each with its own field names (windows.yml `audit:`), under that variant's query."""

    label: str  # "Security 4688", for the notes of rules that cannot run on it
    query: Query | None  # the events of this variant (None: nothing narrows it)
    renames: Mapping[str, str] = field(default_factory=dict)  # mapped field -> this event's field
    translations: Mapping[str, Translation] = field(default_factory=dict)  # mapped field -> translation

    def alternatives(self, sources: Logsources, logsource: SigmaLogSource) -> Callable[[str], list[str]]:
        def fields(name: str) -> list[str]:
            # pySigma's processing leaves the field of a `|fieldref` item unmapped (`User`): map it here
            name = sources.map_field(logsource, name)
            return sources.field_alternatives(logsource, self.renames.get(name, name))
        return fields

    def translate(self, name: str) -> Translation | None:
        return self.translations.get(name)


@dataclass(frozen=True)
class Logsources:
    """Both tables: Windows (windows.yml) and everything else (logsources.yml)."""

    windows: dict[str, Any]
    table: list[dict[str, Any]]

    def variants(self, logsource: SigmaLogSource) -> list[Variant]:
        """The kinds of event the logsource selects, the primary (Sysmon-style) one first."""
        if logsource.product != "windows":
            return [Variant(str(logsource.product or logsource.category or "any"), self._other(logsource))]
        parts: list[Query] = [_term("event.module", "windows")]
        if logsource.service:
            channels = self.windows["services"].get(logsource.service)
            if channels:
                parts.append(or_([_channel(c) for c in channels]))
        options = self.windows["categories"].get(logsource.category) if logsource.category else None
        if not options:
            return [Variant("windows", and_(parts))]
        return [self._variant(parts, option) for option in options]

    def _variant(self, parts: list[Query], option: Mapping[str, Any]) -> Variant:
        ids = [str(i) for i in option["event_ids"]]
        conditions = [_channel(option["channel"]), _one_of("winlog.event_id", ids)]
        for name, values in (option.get("where") or {}).items():
            conditions.append(_one_of(EVENT_DATA + name, [str(v) for v in (values if isinstance(values, list)
                                                                            else [values])]))
        renames: dict[str, str] = {}
        translations: dict[str, Translation] = {}
        for name, spec in (self.windows["audit"][option["audit"]] if "audit" in option else {}).items():
            if isinstance(spec, str):
                renames[EVENT_DATA + name] = EVENT_DATA + spec
            else:
                translations[EVENT_DATA + name] = translation(spec)
        label = f"{option['channel'].split('/')[0]} {'/'.join(ids)}"
        return Variant(label, and_(parts + [and_(conditions)]), renames, translations)

    def audit_fields(self) -> list[str]:
        """Every event field a Security-audit variant may read (renames, translations, `where`): the
        fields the events template must map for Sysmon-named rules to match those events."""
        found: set[str] = set()
        for options in self.windows["categories"].values():
            for option in options:
                found |= {EVENT_DATA + name for name in option.get("where") or {}}
                if "audit" not in option:
                    continue
                variant = self._variant([], option)
                found |= set(variant.renames.values())
                found |= {f for t in variant.translations.values() for f in t.fields()}
        return sorted(found)

    def query(self, logsource: SigmaLogSource) -> Query | None:
        """Conditions selecting the logsource's events (every variant); None when nothing narrows it."""
        queries = [v.query for v in self.variants(logsource)]
        if any(q is None for q in queries):
            return None
        return or_([q for q in queries if q is not None])

    def _other(self, logsource: SigmaLogSource) -> Query | None:
        best = self._entry(logsource)
        if best is not None:
            return and_([_term(k, v) for k, v in best["conditions"].items()])
        if not logsource.product:
            return None
        # A product we have no entry for: its events, by the ECS convention that event.module
        # names the product and event.dataset is <module>.<dataset> (aws.cloudtrail, zeek.http).
        parts = [_term("event.module", logsource.product)]
        if logsource.service:
            parts.append(_term("event.dataset", f"{logsource.product}.{logsource.service}"))
        return and_(parts)

    def _entry(self, logsource: SigmaLogSource) -> dict[str, Any] | None:
        wanted = {k: v for k, v in (("category", logsource.category), ("product", logsource.product),
                                    ("service", logsource.service)) if v}
        best: dict[str, Any] | None = None
        for entry in self.table:
            keys = entry["logsource"]
            if all(wanted.get(k) == v for k, v in keys.items()) and (best is None or len(keys) > len(best["logsource"])):
                best = entry
        return best

    def known(self, logsource: SigmaLogSource) -> bool:
        """Whether the logsource is mapped, i.e. its query selects the events it means. Windows: its
        service and category are in windows.yml. Others: an entry of logsources.yml names its
        category and service; or, for a product without entries, the ECS convention (event.module,
        event.dataset) with no category but `application` (the product's own logs). An unmapped
        logsource selects more than it means (a `category: proxy` rule: every event; `linux` +
        `process_creation`: every Linux log line), so such rules run only when asked (load.py)."""
        if logsource.product == "windows":
            return (not logsource.service or logsource.service in self.windows["services"]) and (
                not logsource.category or logsource.category in self.windows["categories"])
        best = self._entry(logsource)
        if best is None:
            return bool(logsource.product) and logsource.category in (None, "application")
        return all(key in best["logsource"] for key in ("category", "service") if getattr(logsource, key))

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
        if logsource.product != "windows" or self.ours(name):
            return name
        return str(self.windows["fields"].get(name) or EVENT_DATA + name)

    def ours(self, name: str) -> bool:
        """Whether a field a Windows rule names is already an ECS or `winlog.*` field of our events
        (windows.yml `ecs`), which the Windows mapping must leave alone."""
        return _ours_pattern(tuple(self.windows["ecs"]["objects"]),
                             tuple(self.windows["ecs"]["fields"])).fullmatch(name) is not None


def _channel(name: str) -> Query:
    """Windows and its shippers write channel names in either case (`Security`, `security`)."""
    return {"term": {"winlog.channel": {"value": name, "case_insensitive": True}}}


def _term(field: str, value: str) -> Query:
    return {"term": {field: {"value": value}}}


def _one_of(field: str, values: list[str]) -> Query:
    return _term(field, values[0]) if len(values) == 1 else {"terms": {field: list(values)}}


@lru_cache(maxsize=4)
def _ours_pattern(objects: tuple[str, ...], fields: tuple[str, ...]) -> re.Pattern[str]:
    under = "|".join(re.escape(o) for o in objects)
    exact = "|".join(re.escape(f) for f in fields)
    # anchored at the end too: pySigma tries it with `match` (and re2, which has no \Z), so
    # `messages` must not pass as `message`
    return re.compile(rf"(?s)(?:(?:{under})\..+|{exact})$")


@lru_cache(maxsize=1)
def logsources() -> Logsources:
    return Logsources(_data("windows.yml"), _data("logsources.yml"))


def register_modifier_aliases() -> None:
    """Sigma's `utf16le` is pySigma 2.0's `wide`; pySigma lacks the alias, so add it (idempotent)."""
    from sigma.modifiers import modifier_mapping

    modifier_mapping.setdefault("utf16le", modifier_mapping["wide"])


def processing_pipeline() -> ProcessingPipeline:
    """A fresh pipeline (pySigma pipelines keep per-rule state, so never share one)."""
    sources = logsources()
    windows = sources.windows
    ours = IncludeFieldCondition(fields=[_ours_pattern(tuple(windows["ecs"]["objects"]),
                                                       tuple(windows["ecs"]["fields"])).pattern], mode="re")
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
                       # neither mapped by name (EventID) nor already ours (process.executable)
                       field_name_conditions=[FieldNameProcessingItemAppliedCondition("secmon_windows_fields"),
                                              ours],
                       field_name_condition_linking=any,
                       field_name_condition_negation=True),
    ], vars=dict(windows.get("placeholders") or {}))
