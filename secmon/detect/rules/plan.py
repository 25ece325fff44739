"""What to ask the cluster for one rule over one scan window: pure query composition.

`store/` executes these queries and `service/scan.py` wires the two; nothing
here does I/O. The search starts one timespan before the window so that a burst
crossing the window's start is seen whole and keeps its identity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from secmon.detect.rules.compile import Query, and_
from secmon.detect.rules.compiled import CompiledRule
from secmon.types import AGENCY_FIELD, iso

MAX_NARROWING_GROUPS = 500  # beyond that the bool query costs more than it saves


def window_filter(start: datetime, end: datetime, field: str = "@timestamp") -> Query:
    return {"range": {field: {"gte": iso(start), "lt": iso(end), "format": "strict_date_optional_time"}}}


def rule_window_query(rule: CompiledRule, start: datetime, end: datetime) -> Query:
    """The rule's matches in [start - timespan, end)."""
    return and_([window_filter(start - rule.timespan, end), rule.query])


def group_fields(rule: CompiledRule) -> tuple[str, ...]:
    return (AGENCY_FIELD, *rule.group_by)


def hit_fields(rule: CompiledRule) -> tuple[str, ...]:
    """Doc values each hit must carry for windowing (besides @timestamp)."""
    return (AGENCY_FIELD, *rule.fields)


def candidate_groups(rule: CompiledRule, counts: Iterable[tuple[Mapping[str, Any], int]]) -> list[Mapping[str, Any]]:
    """Groups with enough matches in the window to possibly fire (a correlation's necessary condition)."""
    return [key for key, count in counts if count >= rule.threshold]


def narrowed_query(rule: CompiledRule, query: Query, candidates: list[Mapping[str, Any]]) -> Query:
    """`query` restricted to the candidate groups, unless there are too many for that to pay."""
    if len(candidates) > MAX_NARROWING_GROUPS:
        return query
    fields = group_fields(rule)
    return and_([query, {"bool": {"should": [and_([{"term": {f: key[f]}} for f in fields]) for key in candidates],
                                  "minimum_should_match": 1}}])


def in_groups(rule: CompiledRule, hits: Iterable[Mapping[str, Any]], candidates: list[Mapping[str, Any]]
              ) -> list[Mapping[str, Any]]:
    """The hits that belong to a candidate group (what a non-narrowed query also returned)."""
    fields = group_fields(rule)
    wanted = {tuple(str(key[f]) for f in fields) for key in candidates}
    return [hit for hit in hits
            if all(f in hit["fields"] for f in fields)
            and tuple(str(hit["fields"][f][0]) for f in fields) in wanted]
