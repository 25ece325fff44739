"""Matching hits -> findings: grouping and windowing, the same for the cluster and in-process.

A hit is shaped like an Elasticsearch search hit with doc values: `_id`,
`fields` ({field: [values]}, including `@timestamp`) and `matched_queries` (the
names of the correlated rules' queries it matched). `hits_from_docs` builds the
same shape from documents in memory, so offline scans and rule examples go
through exactly the code the cluster path does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from typing import Any

from secmon.detect.windowing.correlate import Hit, bursts, fire
from secmon.detect.compiled import CompiledRule
from secmon.detect.fields import IGNORED, as_keyword, field_types, field_values
from secmon.detect.inprocess.match import matches
from secmon.model import Finding
from secmon.types import AGENCY_FIELD

SAMPLE_IDS = 20
MISSING = "(none)"  # the group value of a single-rule match that lacks a group-by field


def _stamp(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def hits_from_docs(rule: CompiledRule, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """(id, doc) pairs -> the hits the cluster would return for `rule.query`, oldest first."""
    leaves = rule.correlation.leaves() if rule.correlation else []
    wanted = ("@timestamp", AGENCY_FIELD, *rule.fields)
    hits = []
    short = doc_value_limits(rule)
    for ident, doc in docs:
        if not matches(rule.query, doc, whole=True):  # long values read whole (compile.py, "Long values")
            continue
        found = hit(ident, doc_values(lambda f: field_values(doc, f), short), wanted)  # noqa: B023 - called at once
        if found is None:
            continue
        if leaves:
            found["matched_queries"] = [leaf.name for leaf in leaves if matches(leaf.query, doc, whole=True)]
        hits.append(found)
    return sort_hits(hits)


def doc_values(values: Callable[[str], list[Any]], short: Mapping[str, int]) -> Callable[[str], list[Any]]:
    """`values` as the cluster's doc values give them: without the values too long to index (`short`)."""
    if not short:
        return values
    return lambda f: [v for v in values(f) if f not in short or len(as_keyword(v)) <= short[f]]


def hit(ident: str, values: Callable[[str], list[Any]], wanted: tuple[str, ...]) -> dict[str, Any] | None:
    """A matching document as a search hit with doc values: `_id` and `fields` (`wanted`, those it has);
    None without a timestamp (every stored event has one; without it there is no window to place it in)."""
    fields = {f: v for f in wanted if (v := values(f))}
    return {"_id": ident, "fields": fields} if "@timestamp" in fields else None


def sort_hits(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first, ties by id: the order the cluster's sorted search returns."""
    return sorted(hits, key=lambda h: (_stamp(h["fields"]["@timestamp"][0]), h["_id"]))


def doc_value_limits(rule: CompiledRule) -> dict[str, int]:
    """A correlation groups and counts on the cluster by doc values, which a keyword value longer
    than ignore_above does not have: in-process drops such values alike (load.py notes it)."""
    if rule.kind == "single":
        return {}
    types = field_types()
    fields = (*rule.group_by, *((rule.value_field,) if rule.value_field else ()))
    return {f: types.limit(f) for f in fields if types.type_of(f) is None}


def findings(rule: CompiledRule, hits: Iterable[Mapping[str, Any]], start: datetime | None = None,
             agency_field: str = AGENCY_FIELD, new: AbstractSet[str] | None = None) -> list[Finding]:
    """Findings of `rule` from its hits, in any order.

    Only bursts reaching `start` or later count and, when `new` is given, only bursts that hold
    one of those event ids (a scan by arrival time: the events that reached the store in its window).
    """
    fields = (agency_field, *rule.group_by)
    leaves = rule.correlation.leaves() if rule.correlation else []
    exact = {leaf.name: leaf.refine for leaf in leaves if leaf.refine}
    groups: dict[tuple[str, ...], list[Hit]] = {}
    for hit in hits:
        values = hit.get("fields", {})
        if IGNORED in values:
            # A value too long to index: the hit may come from `long_query` alone; it carries its
            # whole values (store/search.py) and is checked exactly (compile.py, "Long values").
            if not matches(rule.refine or rule.query, values, whole=True):
                continue
            names = frozenset(leaf.name for leaf in leaves if matches(leaf.refine or leaf.query, values, whole=True))
        else:
            if rule.refine is not None and not matches(rule.refine, values, whole=True):
                continue  # the cluster query was a superset (|fieldref, costly regex): apply the exact condition
            names = frozenset(n for n in hit.get("matched_queries", ())
                              if n not in exact or matches(exact[n], values, whole=True))
        if leaves and (exact or IGNORED in values) and not names:
            continue
        if "@timestamp" not in values or agency_field not in values:
            continue
        if rule.kind == "single":
            # A single rule's match is a detection by itself; grouping only folds repeats into
            # one incident, so an event without a group-by field must not be dropped.
            key = tuple(str(values[f][0]) if f in values else MISSING for f in fields)
        elif all(f in values for f in fields):
            key = tuple(str(values[f][0]) for f in fields)
        else:
            continue  # correlations count per group: no group value, no group (as Sigma backends do)
        value = values[rule.value_field][0] if rule.value_field and rule.value_field in values else None
        groups.setdefault(key, []).append(Hit(_stamp(values["@timestamp"][0]), str(hit["_id"]), names, value))
    found = []
    for key, group in groups.items():
        # Oldest first, ties by event id: whichever path fetched the hits (one search, pages, a
        # batch) and however the shards ordered them, the same event comes first and names the incident.
        group.sort(key=lambda h: (h.at, h.id))
        if rule.correlation is not None:
            runs = fire(rule.correlation, group)
        else:
            runs = bursts([(h.at, h.id) for h in group], rule.threshold, rule.timespan)
        stamps = {h.id: h.at for h in group}
        for burst in runs:
            if start is not None and burst.last < start:
                continue
            if new is not None and new.isdisjoint(burst.ids):
                continue
            # What this window adds to the incident: its new events (by arrival, or by time)
            fresh = (sum(1 for i in burst.ids if i in new) if new is not None
                     else None if start is None else sum(1 for i in burst.ids if stamps.get(i, start) >= start))
            found.append(Finding(
                rule_id=rule.id, rule_title=rule.title, severity=rule.severity, agency=key[0],
                group=tuple(zip(rule.group_by, key[1:])), first_seen=burst.first, last_seen=burst.last,
                count=burst.count, sample_event_ids=burst.ids[:SAMPLE_IDS], tags=rule.tags,
                description=rule.description, translations=rule.translations, new_count=fresh,
                joins=rule.timespan if rule.kind == "single" else timedelta(0)))
    return sorted(found, key=lambda f: (f.first_seen, f.rule_id, f.group))
