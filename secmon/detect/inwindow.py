"""The probe in-process: a window of few events is read once and every rule matched here.

The batched scan (plan.py) learns which rules have new matches from one size-0 search per
rule. On the node each of those costs about the same whatever the window holds: a wildcard,
regexp or case-insensitive term is expanded over the dictionary of the whole monthly index
before the window's range narrows anything, and each search has its aggregations and shard
context to set up. Measured with the node's search stats on an index of 200,000 events, one
after another: the library's 231 probes cost 2.2 s of shard time over an empty 5-minute window,
0.6 s of it without their aggregations; sent in _msearch on the busy two-core machine, 5 to 15 s. The scheduler's windows are five minutes of events: a few thousand at
most. Those are cheaper to read once, in one search (only the fields the rules read), and to
match here, with the matcher the offline scan uses, which answers what the node answers
(tests/integration/test_sigma_differential.py).

This gives the `Fresh` the node's probe would give: the first and last @timestamp and the
narrowing keys are the node's own doc values of the matching events (the window search asks
for them), so the fetch that follows, on the node as before, is the same search. A rule the
matcher cannot answer for (a query outside its subset, a fallback regex that timed out) is
left undecided, and probed on the node; so is a rule whose narrowing or hit fields have no doc
values (a group-by on a text field: the window search cannot ask them, and the node refuses
that rule alone, as its probe or fetch), and every rule of a window with more than
WINDOW_LIMIT events (a backfill, a scheduler catching up).

A single rule over an event.ingested window needs no fetch at all (plan.window_only): its
hits are the window's documents it matched, with the doc values the node's fetch would
return (`rule_hits`; the window search asks for them), so findings.py reads the same
values, in the same order for multi-valued fields, whichever way the hits came.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from secmon.detect import plan
from secmon.detect.sigma.compile import Query, query_fields
from secmon.detect.compiled import CompiledRule
from secmon.detect.inprocess.linear import RegexTimeout
from secmon.detect.fields import IGNORED, as_keyword, field_types, field_values
from secmon.detect.inprocess.match import View, ViewPredicate, compile_view_matcher
from secmon.detect.inprocess.router import RuleRouter
from secmon.detect.inprocess.prefilter import ROUTE_FIELDS
from secmon.model import ScanWindow

# At most this many events are read for a window: a node search answers at most 10,000 hits
# (index.max_result_window), and this many events' rule fields are a few MB.
WINDOW_LIMIT = 10_000
MAX_DOCVALUE_FIELDS = 100  # the node's index.max_docvalue_fields_search default


def read_fields(query: Query) -> set[str]:
    """The `_source` fields matching `query` reads: its fields, and those an `_ignored` term names."""
    return (query_fields(query) - {IGNORED}) | _named_by_ignored(query)


def _named_by_ignored(query: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(query, Mapping):
        for kind, body in query.items():
            if kind == "bool":
                for clause in ("filter", "must", "should", "must_not"):
                    for sub in body.get(clause, []):
                        found |= _named_by_ignored(sub)
            elif kind in ("term", "terms") and IGNORED in body:
                named = body[IGNORED]
                named = named.get("value") if isinstance(named, Mapping) else named
                found |= {str(n) for n in (named if isinstance(named, list) else [named])}
    return found


def on_node(rule: CompiledRule) -> bool:
    """Whether the rule's narrowing field or hit fields lack doc values (a group-by on a text field):
    the window search must not ask them (the node would refuse the whole search), so the rule is
    left to the node's probe and fetch, which refuse it alone."""
    types = field_types()
    return not all(types.has_doc_values(f) for f in (plan.narrowing_field(rule), *plan.hit_fields(rule)))


def _narrowing(rules: Sequence[CompiledRule]) -> list[str]:
    return sorted({plan.narrowing_field(rule) for rule in rules} - {"@timestamp"})


def window_search(rules: Sequence[CompiledRule], window: ScanWindow) -> dict[str, Any] | None:
    """One search for the window's events: the `_source` fields the rules read, and as doc values
    @timestamp, every rule's narrowing field and the fields a hit of a window-only rule needs
    (`builds_hits`), except those of the rules left `on_node`; None when the node would refuse
    that many doc values."""
    here = [rule for rule in rules if not on_node(rule)]
    narrowing = _narrowing(here)
    if len(narrowing) + 1 > MAX_DOCVALUE_FIELDS:
        return None
    extra = _hit_docvalues(here, window, narrowing) or []
    sources = _compiled(rules).sources()
    if extra:  # a hit with a value too long to index is checked on its whole values, from _source
        sources = sorted(set(sources).union(*(rule.fields for rule in here if plan.window_only(rule, window))))
    return {"query": plan.window_filter(window.start, window.end, window.field),
            "size": WINDOW_LIMIT, "track_total_hits": WINDOW_LIMIT + 1, "sort": ["_doc"],
            "_source": {"includes": sources},
            "docvalue_fields": [{"field": "@timestamp", "format": "epoch_millis"}, *narrowing, *extra]}


def _hit_docvalues(rules: Sequence[CompiledRule], window: ScanWindow, narrowing: Sequence[str]) -> list[str] | None:
    """The doc values the hits of the window-only rules need besides @timestamp and the narrowing
    fields; None when there is no such rule or they do not fit under the node's limit (their hits
    are then fetched)."""
    only = [rule for rule in rules if plan.window_only(rule, window)]
    if not only:
        return None
    wanted = set().union(*(plan.hit_fields(rule) for rule in only)) - {"@timestamp", *narrowing}
    if any(rule.long_query is not None for rule in only):
        wanted.add(IGNORED)
    return sorted(wanted) if len(narrowing) + 1 + len(wanted) <= MAX_DOCVALUE_FIELDS else None


def builds_hits(rules: Sequence[CompiledRule], window: ScanWindow) -> bool:
    """Whether `window_search` asks the doc values the window-only rules' hits need (`rule_hits`)."""
    here = [rule for rule in rules if not on_node(rule)]
    narrowing = _narrowing(here)
    return len(narrowing) + 1 <= MAX_DOCVALUE_FIELDS and _hit_docvalues(here, window, narrowing) is not None


def rule_hits(rule: CompiledRule, documents: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The hits the node's fetch of `rule` (plan.fetch_query, store/search.py) returns for these
    window documents, which matched it: `_id`, and as `fields` the doc values of @timestamp and
    `plan.hit_fields`, read from the window search's doc values; a document with a value too long to
    index (`_ignored`) also carries the whole values of the fields the rule reads, from `_source`,
    as `_complete` gives them on the node, so that findings.py checks it exactly."""
    wanted = plan.hit_fields(rule)
    whole = (*rule.fields, *plan.long_fields(rule))
    hits = []
    for document in documents:
        values = document.get("fields", {})
        stamps = values.get("@timestamp")
        if not stamps:
            continue
        fields: dict[str, list[Any]] = {"@timestamp": [plan.moment(float(stamps[0])).isoformat()]}
        fields.update({f: list(values[f]) for f in wanted if values.get(f)})
        if rule.long_query is not None and values.get(IGNORED):
            fields[IGNORED] = list(values[IGNORED])
            source = document.get("_source") or {}
            # The doc values stand where they are whole (a keyword under its limit reads the same
            # either way); the fields too long to index, or without a doc value, come from _source.
            fields.update({f: found for f in whole
                           if (f in values[IGNORED] or f not in fields) and (found := field_values(source, f))})
        hits.append({"_id": str(document["_id"]), "fields": fields})
    return hits


@dataclass
class _Seen:
    """A rule's new matches so far, as the probe's aggregations would sum them up."""

    first: float | None = None  # epoch milliseconds
    last: float | None = None
    keys: dict[Any, None] = field(default_factory=dict)  # insertion-ordered set
    lacking: bool = False

    def add(self, values: Mapping[str, list[Any]], narrowing: str) -> None:
        stamps = values.get("@timestamp")
        if stamps:
            moment = float(stamps[0])
            self.first = moment if self.first is None else min(self.first, moment)
            self.last = moment if self.last is None else max(self.last, moment)
        found = values.get(narrowing)
        if found:
            self.keys.update(dict.fromkeys(found))
        else:
            self.lacking = True

    def fresh(self) -> plan.Fresh | None:
        if self.first is None or self.last is None:
            return None  # as the node's min aggregation: no timestamp among them, no new match
        keys = tuple(self.keys)
        return plan.Fresh(plan.moment(self.first), plan.moment(self.last),
                          keys if len(keys) <= plan.MAX_NARROWING_GROUPS else None, self.lacking)


def _long_need(query: Any) -> frozenset[str] | None:
    """Fields one of which a document matching `query` (a rule's long-value part) has a value too
    long to index in; None when that is not a condition of every match."""
    if not isinstance(query, Mapping):
        return None
    if "terms" in query and IGNORED in query["terms"] or "term" in query and IGNORED in query["term"]:
        return frozenset(_named_by_ignored(query))
    body = query.get("bool")
    if not isinstance(body, Mapping):
        return None
    for clause in (*body.get("filter", []), *body.get("must", [])):
        if (found := _long_need(clause)) is not None:
            return found
    should = body.get("should", [])
    if should and int(body.get("minimum_should_match", 1)) >= 1 and not body.get("filter") and not body.get("must"):
        needs = [_long_need(clause) for clause in should]
        return None if any(n is None for n in needs) else frozenset().union(*needs)  # type: ignore[arg-type]
    return None


class _Candidates:
    """The rules worth matching against a document: those the router picks for their query (by
    logsource and literal text, offline.py), and those whose long-value part the document can meet."""

    def __init__(self, rules: Sequence[CompiledRule]):
        self.router = RuleRouter([replace(rule, refine=None, long_query=None) for rule in rules])
        self.types = field_types()
        self.always: set[int] = set()
        self.by_long_field: dict[str, set[int]] = {}
        for number, rule in enumerate(rules):
            if rule.long_query is None:
                continue
            need = _long_need(rule.long_query)
            if need is None:
                self.always.add(number)
            for name in need or ():
                self.by_long_field.setdefault(name, set()).add(number)
        # A field's ignore_above, looked up once (a dynamic template's is an fnmatch over its patterns).
        self.long_limits = {name: self.types.limit(name) for name in self.by_long_field}

    def of(self, view: View) -> list[int]:
        found = set(self.router.candidates(view)) | self.always
        flat = view.flat  # the fields the document has: only those can hold a long value
        for name in flat.keys() & self.long_limits.keys():
            limit = self.long_limits[name]
            if any(len(as_keyword(v)) > limit for v in flat[name] if not isinstance(v, Mapping)):
                found |= self.by_long_field[name]
        return sorted(found)


class _Compiled:
    """`_Candidates` and the rules' predicates, compiled for one list of rules and kept while the
    scans' rules are the same: the scheduler scans every few minutes with rules that change only
    when a file does (load.py recompiles a changed file, and exceptions rewrite the queries they
    touch), and building the router and predicates again costs more than matching a window."""

    def __init__(self, rules: Sequence[CompiledRule]):
        self.rules = tuple(rules)
        self.candidates = _Candidates(rules)
        self.predicates: dict[int, ViewPredicate] = {}  # by position, compiled when first needed
        self._sources: list[str] | None = None

    def sources(self) -> list[str]:
        """The `_source` fields the rules read, and those routing reads."""
        if self._sources is None:
            self._sources = sorted(set(ROUTE_FIELDS).union(*(read_fields(plan.matching(rule)) for rule in self.rules)))
        return list(self._sources)

    def serves(self, rules: Sequence[CompiledRule]) -> bool:
        """Whether these rules match as ours do. `==` on the queries: the same objects (rules from
        load.py's memo) compare at once; rebuilt but equal queries (an exception's) compare equal."""
        return len(rules) == len(self.rules) and all(
            new is old or (new.query == old.query and new.long_query == old.long_query)
            for new, old in zip(rules, self.rules))

    def predicate(self, number: int) -> ViewPredicate:
        """What the node's probe asks (the query or its long-value part), with the node's semantics:
        values too long to index are not matched (not `whole`, unlike offline). Raises UnsupportedQuery."""
        found = self.predicates.get(number)
        if found is None:
            found = self.predicates[number] = compile_view_matcher(plan.matching(self.rules[number]),
                                                                   self.candidates.types)
        return found


_last: _Compiled | None = None
_last_lock = threading.Lock()


def _compiled(rules: Sequence[CompiledRule]) -> _Compiled:
    """The rules compiled for matching, from the last scan when it had the same rules (one kept:
    a process scans with one rule set)."""
    global _last
    with _last_lock:
        if _last is None or not _last.serves(rules):
            _last = _Compiled(rules)
        return _last


@dataclass(frozen=True)
class Matched:
    """What the window's documents say of each rule, by the rule's position."""

    fresh: dict[int, plan.Fresh | None]  # what its probe search would find; missing: left to the node
    documents: dict[int, list[Mapping[str, Any]]]  # the window documents it matched (decided rules only)


def probe_documents(rules: Sequence[CompiledRule], hits: Iterable[Mapping[str, Any]]
                    ) -> dict[int, plan.Fresh | None]:
    """What each rule's probe search would find among these hits (the window's every event, from
    `window_search`), by the rule's position: its `Fresh`, or None for no new match. Positions
    missing are the rules left to the node (see the module's docstring)."""
    return match_documents(rules, hits).fresh


def match_documents(rules: Sequence[CompiledRule], hits: Iterable[Mapping[str, Any]]) -> Matched:
    """`probe_documents`, and the documents each decided rule matched."""
    compiled = _compiled(rules)
    candidates = compiled.candidates
    undecided = {number for number, rule in enumerate(rules) if on_node(rule)}
    seen: dict[int, _Seen] = {}
    documents: dict[int, list[Mapping[str, Any]]] = {}
    narrowing = [plan.narrowing_field(rule) for rule in rules]
    for hit in hits:
        view = candidates.router.view(hit.get("_source") or {})
        values = hit.get("fields", {})
        for number in candidates.of(view):
            if number in undecided:
                continue
            try:
                if not compiled.predicate(number)(view):
                    continue
            except (ValueError, RegexTimeout):  # UnsupportedQuery, a number or CIDR it cannot read (router.py)
                undecided.add(number)
                continue
            seen.setdefault(number, _Seen()).add(values, narrowing[number])
            documents.setdefault(number, []).append(hit)
    decided = [number for number in range(len(rules)) if number not in undecided]
    return Matched({number: (seen[number].fresh() if number in seen else None) for number in decided},
                   {number: documents.get(number, []) for number in decided})
