"""Many rules over many documents in-process: route each document to the rules that can match it.

A rule's logsource becomes mandatory terms at the top of its query (winlog.channel,
winlog.event_id, event.dataset, ...). `RuleRouter` reads those terms once and
indexes the rules by them, so a Sysmon network event is only tried against the
rules whose logsource admits it, not against the whole corpus. The answer is
exactly `matches(rule query, doc)` for every rule: routing only skips rules whose
mandatory terms the document cannot satisfy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from secmon.detect.rules.findings import findings, hits_from_docs
from secmon.detect.rules.load import CompiledRule
from secmon.detect.rules.match import View, ViewPredicate, compile_view_matcher
from secmon.model import Finding

ROUTE_FIELDS = ("winlog.channel", "winlog.event_id", "event.dataset", "event.module", "event.category")


def _required(query: Mapping[str, Any]) -> list[dict[str, frozenset[str]]]:
    """Alternatives of mandatory exact (case-sensitive) terms: [{field: allowed values}, ...]; [{}] = none known."""
    if "term" in query:
        (field, spec), = query["term"].items()
        value = spec.get("value") if isinstance(spec, Mapping) else spec
        if field in ROUTE_FIELDS and not (isinstance(spec, Mapping) and spec.get("case_insensitive")):
            return [{field: frozenset({str(value)})}]
        return [{}]
    if "terms" in query:
        (field, values), = query["terms"].items()
        return [{field: frozenset(map(str, values))}] if field in ROUTE_FIELDS else [{}]
    body = query.get("bool")
    if not isinstance(body, Mapping):
        return [{}]
    alternatives: list[dict[str, frozenset[str]]] = [{}]
    for clause in list(body.get("filter", [])) + list(body.get("must", [])):
        sub = _required(clause)
        combined = []
        for left in alternatives:
            for right in sub:
                merged = dict(left)
                for field, values in right.items():
                    merged[field] = merged[field] & values if field in merged else values
                combined.append(merged)
        alternatives = combined if len(combined) <= 64 else [{}]
    should = body.get("should", [])
    if should and not body.get("filter") and not body.get("must") and int(body.get("minimum_should_match", 1)) >= 1:
        options = [alt for clause in should for alt in _required(clause)]
        return [{}] if any(not alt for alt in options) else options
    return alternatives


@dataclass(frozen=True)
class _Entry:
    rule: CompiledRule
    predicate: ViewPredicate


PAIR = ("winlog.channel", "winlog.event_id")


class RuleRouter:
    """The rules indexed by their logsource terms; `candidates(view)` are the only ones that can match."""

    def __init__(self, rules: Iterable[CompiledRule]):
        self._by_pair: dict[tuple[str, str], list[_Entry]] = {}
        self._by_key: dict[tuple[str, str], list[_Entry]] = {}
        self._always: list[_Entry] = []
        for rule in rules:
            entry = _Entry(rule, compile_view_matcher(rule.refine or rule.query))
            alternatives = _required(rule.query)
            if any(not alt for alt in alternatives):
                self._always.append(entry)
                continue
            for alt in alternatives:
                index: dict[tuple[str, str], list[_Entry]]
                if all(f in alt for f in PAIR):  # Sysmon-style categories: channel and event id
                    keys = [(c, e) for c in alt[PAIR[0]] for e in alt[PAIR[1]]]
                    index = self._by_pair
                else:
                    field = next(f for f in ROUTE_FIELDS if f in alt)  # the most selective known field
                    keys, index = [(field, v) for v in alt[field]], self._by_key
                for key in keys:
                    bucket = index.setdefault(key, [])
                    if entry not in bucket:
                        bucket.append(entry)

    def candidates(self, view: View) -> list[_Entry]:
        found = list(self._always)
        seen = {id(e) for e in found}
        buckets = [self._by_pair.get((str(c), str(e)), ()) for c in view.values(PAIR[0]) for e in view.values(PAIR[1])]
        buckets += [self._by_key.get((field, str(value)), ()) for field in ROUTE_FIELDS for value in view.values(field)]
        for bucket in buckets:
            for entry in bucket:
                if id(entry) not in seen:
                    seen.add(id(entry))
                    found.append(entry)
        return found

    def matching(self, doc: Mapping[str, Any]) -> list[CompiledRule]:
        """Every rule whose query matches `doc`."""
        view = View(doc)
        return [e.rule for e in self.candidates(view) if e.predicate(view)]


def scan_documents(rules: Iterable[CompiledRule], docs: Iterable[tuple[str, Mapping[str, Any]]]
                   ) -> list[Finding]:
    """Findings of every rule over in-memory documents: routing, matching and the same windowing
    code as the cluster path (secmon.detect.rules.findings)."""
    rules = list(rules)
    router = RuleRouter(rules)
    matched: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for ident, doc in docs:
        for rule in router.matching(doc):
            matched.setdefault(rule.id + "\x1f" + rule.path, []).append((ident, doc))
    found: list[Finding] = []
    for rule in rules:
        hits = matched.get(rule.id + "\x1f" + rule.path)
        if hits:
            found += findings(rule, hits_from_docs(rule, hits))
    return sorted(found, key=lambda f: (f.first_seen, f.rule_id, f.group))
