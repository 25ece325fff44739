"""Many rules over many documents in-process: try each document only on the rules that can match it.

A rule's logsource becomes mandatory terms at the top of its query (winlog.channel,
winlog.event_id, event.dataset, ...), and its detection names literal text that every
match contains (secmon.detect.inprocess.prefilter). `RuleRouter` indexes the rules by both,
so a Sysmon process event is only tried on the few process-creation rules whose
literals occur in it, not on the whole corpus. The answer is exactly
`matches(rule query, doc)` for every rule: the indexes only skip rules whose
necessary conditions the document does not meet (tests/integration/test_sigma_cluster.py
holds the router to trying every rule, over the whole community corpus).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from secmon.detect.windowing.findings import doc_value_limits, doc_values, findings, hit, sort_hits
from secmon.detect.inprocess.linear import RegexTimeout
from secmon.detect.compiled import CompiledRule
from secmon.detect.fields import FieldTypes, field_types
from secmon.detect.inprocess.match import View, ViewPredicate, compile_view_matcher
from secmon.detect.inprocess.prefilter import MEMO_LENGTH, ROUTE_FIELDS, Among, Groups, NeedleIndex, flatten, needles
from secmon.model import Finding
from secmon.types import AGENCY_FIELD


# Route fields compared case-insensitively (pipeline._channel): their route keys are lower-cased on
# both sides. Safe for ASCII values: a character matches another case-insensitively, as
# Elasticsearch folds (fields.alt_case), exactly when both lower-case alike.
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


PAIR = ("winlog.channel", "winlog.event_id")
ROUTES = 4096  # routes remembered (by values, by keys); then they are made again
RouteKey = tuple[str, str, str]  # ("pair", channel, event id) or (field, value, "")


@dataclass(frozen=True)
class RuleIndex:
    """What the router reads from a rule's query, computed once (and kept by the rule cache, cache.py)."""

    route: frozenset[RouteKey] | None  # the logsource's route keys; None: any event
    needles: Groups  # literal conditions (prefilter.needles); [] = none known


def rule_index(rule: CompiledRule) -> RuleIndex:
    return RuleIndex(_route_keys(rule.query), needles(rule.query))


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


class _Route(NamedTuple):
    """What a document's route keys admit: the rules without needles to try (in order), and those
    with needles (tried where their needles occur)."""

    fixed: tuple[int, ...]
    needles: Among


class RuleRouter:
    """The rules indexed two ways, so that `candidates(view)` are few and include every rule that
    can match: by their logsource terms (route keys), and by the literal text one of which every
    match contains (secmon.detect.inprocess.prefilter). A rule with literals is a candidate when one
    occurs in the document and its route admits it; a rule without is routed by logsource alone."""

    def __init__(self, rules: Iterable[CompiledRule], indexes: Mapping[int, RuleIndex] | None = None):
        """`indexes`, by position in `rules`, saves reading each query again (the rule cache has them).
        A rule's predicate is compiled the first time an event is a candidate for it: most rules of a
        large corpus never are, on a given set of files."""
        self.rules = list(rules)
        self._predicates: list[ViewPredicate | None] = [None] * len(self.rules)
        self._routes: list[frozenset[RouteKey] | None] = []
        self._unfiltered: dict[RouteKey, list[int]] = {}
        self._always: list[int] = []
        self._needled: dict[RouteKey | None, list[int]] = {}  # rules with needles by route key (None: any)
        with_needles: list[tuple[int, Groups]] = []
        for number, rule in enumerate(self.rules):
            index = indexes.get(number) if indexes is not None else None
            index = index or rule_index(rule)
            self._routes.append(index.route)
            if index.needles:
                with_needles.append((number, index.needles))
                for key in index.route if index.route is not None else (None,):
                    self._needled.setdefault(key, []).append(number)
            elif index.route is None:
                self._always.append(number)
            else:
                for key in index.route:
                    self._unfiltered.setdefault(key, []).append(number)
        self._needles = NeedleIndex(with_needles)
        self._known = frozenset(self._unfiltered) | {k for k in self._needled if k is not None}
        # A document's route (what its logsource fields admit) depends on those fields' values alone:
        # remembered by the values (most documents repeat a few dozen channels and event ids), and by
        # the route keys some rule names (a value no rule names changes nothing: hostile logs with
        # a new event id each get the route already built).
        self._by_values: dict[tuple[tuple[str, ...], ...], _Route] = {}
        self._by_keys: dict[frozenset[RouteKey], _Route] = {}

    def predicate(self, number: int) -> ViewPredicate:
        """The rule's compiled condition (its exact `refine` when it has one), compiled once."""
        found = self._predicates[number]
        if found is None:
            rule = self.rules[number]
            # In-process, long values are read whole (compile.py, "Long values").
            found = self._predicates[number] = compile_view_matcher(rule.refine or rule.query, _whole())
        return found

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

    def candidates(self, view: View) -> list[int]:
        """Positions (in `rules`) of the rules worth trying on the document, in order: what
        `candidates_unrouted` answers, with the document's route looked up instead of made."""
        route = self._route(view)
        hits = self._needles.hits(view.flat, route.needles)
        if not hits:
            return list(route.fixed)
        return sorted(set(route.fixed).union(hits)) if route.fixed else sorted(hits)

    def candidates_unrouted(self, view: View) -> list[int]:
        """`candidates` the plain way: every needle hit, then each hit's route tested (the tests hold
        `candidates` to it)."""
        keys = self._keys(view)
        found = set(self._always)
        for key in keys:
            found.update(self._unfiltered.get(key, ()))
        routes = self._routes
        for number in self._needles.hits(view.flat):
            route = routes[number]
            if route is None or not route.isdisjoint(keys):
                found.add(number)
        return sorted(found)

    def _route(self, view: View) -> _Route:
        values = view.values
        raw: list[tuple[str, ...]] | None = []
        for name in ROUTE_FIELDS:
            found = values(name)
            for value in found:
                # 1, 1.0 and True are equal keys with other texts; a long text (input) is not kept as a key
                if value.__class__ is not str or len(value) > MEMO_LENGTH:
                    raw = None
                    break
            if raw is None:
                break
            raw.append(tuple(found))
        key = tuple(raw) if raw is not None else None
        route = self._by_values.get(key) if key is not None else None
        if route is None:
            relevant = frozenset(k for k in self._keys(view) if k in self._known)
            route = self._by_keys.get(relevant)
            if route is None:
                route = self._make_route(relevant)
                if len(self._by_keys) >= ROUTES:
                    self._by_keys.clear()
                self._by_keys[relevant] = route
            if key is not None:
                if len(self._by_values) >= ROUTES:
                    self._by_values.clear()
                self._by_values[key] = route
        return route

    def _make_route(self, keys: frozenset[RouteKey]) -> _Route:
        """The rules a document with these route keys can be a candidate for: those without needles
        (tried on every such document) and those with (tried where their needles occur)."""
        fixed = set(self._always)
        needled = set(self._needled.get(None, ()))
        for key in keys:
            fixed.update(self._unfiltered.get(key, ()))
            needled.update(self._needled.get(key, ()))
        return _Route(tuple(sorted(fixed)), self._needles.among(needled))

    def matching_numbers(self, view: View, timeouts: dict[int, int] | None = None,
                         broken: dict[int, tuple[str, int]] | None = None) -> list[int]:
        """Positions of every rule whose query matches the document. With `timeouts`, a rule whose
        bounded fallback regex timed out (linear.RegexTimeout) is counted there, not raised; with
        `broken`, a rule whose query does not compile in-process is (reason, documents not matched)."""
        found = []
        predicates = self._predicates
        for number in self.candidates(view):
            try:
                predicate = predicates[number] or self.predicate(number)
                if predicate(view):
                    found.append(number)
            except RegexTimeout:
                if timeouts is None:
                    raise
                timeouts[number] = timeouts.get(number, 0) + 1
            except ValueError as exc:  # UnsupportedQuery, a CIDR or number the compiler cannot read
                if broken is None:
                    raise
                reason, count = broken.get(number, (str(exc)[:300], 0))
                broken[number] = (reason, count + 1)
        return found

    def matching(self, doc: Mapping[str, Any], timeouts: dict[int, int] | None = None) -> list[CompiledRule]:
        """Every rule whose query matches `doc` (see `matching_numbers`)."""
        return [self.rules[n] for n in self.matching_numbers(self.view(doc), timeouts)]

    def matching_routed_only(self, doc: Mapping[str, Any]) -> list[CompiledRule]:
        """`matching` without the needle prefilter: every rule whose logsource admits `doc` is tried."""
        view = self.view(doc)
        keys = self._keys(view)
        return [self.rules[n] for n, route in enumerate(self._routes)
                if (route is None or not route.isdisjoint(keys)) and self.predicate(n)(view)]

    def matching_unrouted(self, doc: Mapping[str, Any]) -> list[CompiledRule]:
        """`matching` the slow way, every rule tried: what the routing must never change."""
        view = self.view(doc)
        return [rule for n, rule in enumerate(self.rules) if self.predicate(n)(view)]


@functools.cache
def _whole() -> FieldTypes:
    return field_types().whole()


class _Leaves:
    """The leaf queries of the correlations that matched, compiled once each (the names a hit carries
    in `matched_queries`, as the cluster's named queries would)."""

    def __init__(self) -> None:
        self._compiled: dict[int, list[tuple[str, ViewPredicate]]] = {}

    def names(self, number: int, rule: CompiledRule, view: View) -> list[str]:
        leaves = self._compiled.get(number)
        if leaves is None:
            assert rule.correlation is not None
            leaves = self._compiled[number] = [(leaf.name, compile_view_matcher(leaf.query, _whole()))
                                               for leaf in rule.correlation.leaves()]
        return [name for name, predicate in leaves if predicate(view)]


@dataclass
class Matches:
    """What matching some documents found: each rule's hits (by position in the router's rules) and
    the rules whose bounded fallback regex timed out, with how often. Parts merge (`add`), so
    documents may be matched in several processes."""

    hits: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    timeouts: dict[int, int] = field(default_factory=dict)
    broken: dict[int, tuple[str, int]] = field(default_factory=dict)  # rules that did not compile in-process

    def add(self, other: Matches) -> None:
        for number, hits in other.hits.items():
            self.hits.setdefault(number, []).extend(hits)
        for number, count in other.timeouts.items():
            self.timeouts[number] = self.timeouts.get(number, 0) + count
        for number, (reason, count) in other.broken.items():
            self.broken[number] = (reason, self.broken.get(number, (reason, 0))[1] + count)


def match_documents(router: RuleRouter, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> Matches:
    """Route and match every document; each match becomes its hit at once (the few fields the
    windowing reads), so nothing is matched or compiled twice and no document is kept."""
    rules = router.rules
    wanted = [("@timestamp", AGENCY_FIELD, *rule.fields) for rule in rules]
    short = [doc_value_limits(rule) for rule in rules]
    leaves = _Leaves()
    found = Matches()
    for ident, doc in docs:
        view = router.view(doc)
        for number in router.matching_numbers(view, found.timeouts, found.broken):
            rule = rules[number]
            one = hit(ident, doc_values(view.values, short[number]), wanted[number])
            if one is None:
                continue
            if rule.correlation is not None:
                one["matched_queries"] = leaves.names(number, rule, view)
            found.hits.setdefault(number, []).append(one)
    return found


def findings_of(rules: list[CompiledRule], matches: Matches, failures: list[tuple[str, str]] | None = None
                ) -> list[Finding]:
    """The findings of the matches, through the same windowing code as the cluster path
    (secmon.detect.windowing.findings). A rule whose bounded fallback regex timed out on some documents,
    or whose query did not compile in-process, is reported in `failures` (rule, reason) with the
    number of documents it was not matched against."""
    for number, count in sorted(matches.timeouts.items()):
        if failures is None:
            raise RegexTimeout(f"rule {rules[number].path}")
        failures.append((f"{rules[number].path}: {rules[number].title}",
                         f"a regex outside RE2 timed out on {count} events, which it was not matched against"))
    for number, (reason, count) in sorted(matches.broken.items()):
        if failures is None:
            raise ValueError(f"rule {rules[number].path}: {reason}")
        failures.append((f"{rules[number].path}: {rules[number].title}",
                         f"its query does not run in-process ({reason}): not matched against {count} events"))
    result: list[Finding] = []
    for number, hits in sorted(matches.hits.items()):
        result += findings(rules[number], sort_hits(hits))
    return sorted(result, key=lambda f: (f.first_seen, f.rule_id, f.group))


def scan_documents(rules: Iterable[CompiledRule], docs: Iterable[tuple[str, Mapping[str, Any]]],
                   failures: list[tuple[str, str]] | None = None,
                   indexes: Mapping[int, RuleIndex] | None = None) -> list[Finding]:
    """Findings of every rule over in-memory documents (match_documents, then findings_of)."""
    router = RuleRouter(rules, indexes)
    return findings_of(router.rules, match_documents(router, docs), failures)
