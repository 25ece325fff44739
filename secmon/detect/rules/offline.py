"""Many rules over many documents in-process: try each document only on the rules that can match it.

A rule's logsource becomes mandatory terms at the top of its query (winlog.channel,
winlog.event_id, event.dataset, ...), and its detection names literal text that every
match contains (secmon.detect.rules.prefilter). `RuleRouter` indexes the rules by both,
so a Sysmon process event is only tried on the few process-creation rules whose
literals occur in it, not on the whole corpus. The answer is exactly
`matches(rule query, doc)` for every rule: the indexes only skip rules whose
necessary conditions the document does not meet (tests/integration/test_sigma_cluster.py
holds the router to trying every rule, over the whole community corpus).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from secmon.detect.rules.findings import findings, hits_from_docs
from secmon.detect.rules.linear import RegexTimeout
from secmon.detect.rules.load import CompiledRule
from secmon.detect.rules.match import View, ViewPredicate, compile_view_matcher, field_types
from secmon.detect.rules.prefilter import ROUTE_FIELDS, Groups, NeedleIndex, flatten, needles
from secmon.model import Finding


# Route fields compared case-insensitively (pipeline._channel): their route keys are lower-cased on
# both sides. Safe for ASCII values: a character matches another case-insensitively, as
# Elasticsearch folds (match.alt_case), exactly when both lower-case alike.
FOLDED = frozenset({"winlog.channel"})


def _required(query: Mapping[str, Any]) -> list[dict[str, frozenset[str]]]:
    """Alternatives of mandatory exact (case-sensitive) terms: [{field: allowed values}, ...]; [{}] = none known."""
    if "term" in query:
        (field, spec), = query["term"].items()
        value = str(spec.get("value") if isinstance(spec, Mapping) else spec)
        insensitive = isinstance(spec, Mapping) and spec.get("case_insensitive")
        if field in FOLDED and value.isascii():
            return [{field: frozenset({value.lower()})}]
        if field in ROUTE_FIELDS and not insensitive:
            return [{field: frozenset({value})}]
        return [{}]
    if "terms" in query:
        (field, values), = query["terms"].items()
        texts = [str(v) for v in values]
        if field in FOLDED:
            return [{field: frozenset(t.lower() for t in texts)}] if all(t.isascii() for t in texts) else [{}]
        return [{field: frozenset(texts)}] if field in ROUTE_FIELDS else [{}]
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
    number: int  # position in the router's rules


PAIR = ("winlog.channel", "winlog.event_id")
RouteKey = tuple[str, str, str]  # ("pair", channel, event id) or (field, value, "")


def _route_keys(query: Mapping[str, Any]) -> frozenset[RouteKey] | None:
    """The route keys one of which a matching document has; None when the logsource names none."""
    alternatives = _required(query)
    if any(not alt for alt in alternatives):
        return None
    keys: set[RouteKey] = set()
    for alt in alternatives:
        if all(f in alt for f in PAIR):  # Sysmon-style categories: channel and event id
            keys |= {("pair", c, e) for c in alt[PAIR[0]] for e in alt[PAIR[1]]}
        else:
            field = next(f for f in ROUTE_FIELDS if f in alt)  # the most selective known field
            keys |= {(field, v, "") for v in alt[field]}
    return frozenset(keys)


class RuleRouter:
    """The rules indexed two ways, so that `candidates(view)` are few and include every rule that
    can match: by their logsource terms (route keys), and by the literal text one of which every
    match contains (secmon.detect.rules.prefilter). A rule with literals is a candidate when one
    occurs in the document and its route admits it; a rule without is routed by logsource alone."""

    def __init__(self, rules: Iterable[CompiledRule]):
        self._entries: list[_Entry] = []
        self._routes: list[frozenset[RouteKey] | None] = []
        self._unfiltered: dict[RouteKey, list[int]] = {}
        self._always: list[int] = []
        with_needles: list[tuple[int, Groups]] = []
        whole = field_types().whole()
        for number, rule in enumerate(rules):
            # In-process, long values are read whole (compile.py, "Long values").
            self._entries.append(_Entry(rule, compile_view_matcher(rule.refine or rule.query, whole), number))
            route = _route_keys(rule.query)
            self._routes.append(route)
            groups = needles(rule.query)
            if groups:
                with_needles.append((number, groups))
            elif route is None:
                self._always.append(number)
            else:
                for key in route:
                    self._unfiltered.setdefault(key, []).append(number)
        self._needles = NeedleIndex(with_needles)

    @staticmethod
    def view(doc: Mapping[str, Any]) -> View:
        """The View routing reads: every leaf flattened once, shared with the predicates."""
        return View(doc, flatten(doc))

    @staticmethod
    def _keys(view: View) -> set[RouteKey]:
        channels = [str(c).lower() for c in view.values(PAIR[0])]
        keys: set[RouteKey] = {("pair", c, str(e)) for c in channels for e in view.values(PAIR[1])}
        keys.update((field, str(value).lower() if field in FOLDED else str(value), "")
                    for field in ROUTE_FIELDS for value in view.values(field))
        return keys

    def candidates(self, view: View) -> list[_Entry]:
        keys = self._keys(view)
        found = set(self._always)
        for key in keys:
            found.update(self._unfiltered.get(key, ()))
        routes = self._routes
        for number in self._needles.hits(view.flat):
            route = routes[number]
            if route is None or not route.isdisjoint(keys):
                found.add(number)
        return [self._entries[n] for n in sorted(found)]

    def matching(self, doc: Mapping[str, Any], timeouts: dict[int, int] | None = None) -> list[CompiledRule]:
        """Every rule whose query matches `doc`. With `timeouts`, a rule whose bounded fallback regex
        timed out (linear.RegexTimeout) is counted there by its position in the rules, not raised."""
        view = self.view(doc)
        found = []
        for entry in self.candidates(view):
            try:
                if entry.predicate(view):
                    found.append(entry.rule)
            except RegexTimeout:
                if timeouts is None:
                    raise
                timeouts[entry.number] = timeouts.get(entry.number, 0) + 1
        return found

    def matching_routed_only(self, doc: Mapping[str, Any]) -> list[CompiledRule]:
        """`matching` without the needle prefilter: every rule whose logsource admits `doc` is tried."""
        view = self.view(doc)
        keys = self._keys(view)
        return [e.rule for e, route in zip(self._entries, self._routes)
                if (route is None or not route.isdisjoint(keys)) and e.predicate(view)]

    def matching_unrouted(self, doc: Mapping[str, Any]) -> list[CompiledRule]:
        """`matching` the slow way, every rule tried: what the routing must never change."""
        view = self.view(doc)
        return [e.rule for e in self._entries if e.predicate(view)]


def scan_documents(rules: Iterable[CompiledRule], docs: Iterable[tuple[str, Mapping[str, Any]]],
                   failures: list[tuple[str, str]] | None = None) -> list[Finding]:
    """Findings of every rule over in-memory documents: routing, matching and the same windowing
    code as the cluster path (secmon.detect.rules.findings). A rule whose bounded fallback regex
    timed out on some documents is reported in `failures` (rule, reason) with their count."""
    rules = list(rules)
    router = RuleRouter(rules)
    matched: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    timeouts: dict[int, int] = {}
    for ident, doc in docs:
        for rule in router.matching(doc, timeouts):
            matched.setdefault(rule.id + "\x1f" + rule.path, []).append((ident, doc))
    for number, count in sorted(timeouts.items()):
        if failures is None:
            raise RegexTimeout(f"rule {rules[number].path}")
        failures.append((f"{rules[number].path}: {rules[number].title}",
                         f"a regex outside RE2 timed out on {count} events, which it was not matched against"))
    found: list[Finding] = []
    for rule in rules:
        hits = matched.get(rule.id + "\x1f" + rule.path)
        if hits:
            found += findings(rule, hits_from_docs(rule, hits))
    return sorted(found, key=lambda f: (f.first_seen, f.rule_id, f.group))
