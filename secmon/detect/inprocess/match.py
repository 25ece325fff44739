"""In-process matching: the Query DSL subset the compiler emits, with Elasticsearch's semantics.

`matches(query, doc)` answers what the cluster would answer for `doc` indexed
with secmon's events template: multi-valued fields match when any value does,
objects and dotted keys are the same field, keyword values longer than the
field's `ignore_above` are not indexed, a term on an ip field may be a CIDR,
a term on a long field compares numbers, `case_insensitive` folds case per
character the way Elasticsearch's automaton does. A differential test
(tests/integration/test_sigma_differential.py) holds it to the real node.

Queries are compiled once into closures (`compile_matcher`); `matches` caches
them per query object, so a rule's query is compiled once per process.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import re2

from secmon.detect.sigma.cidr import as_ipv6
from secmon.detect.inprocess import linear
from secmon.detect.inprocess.linear import FullMatch, compile_fullmatch, encode, required_literals
from secmon.detect.sigma.lucene_regexp import python_source
from secmon.detect.fields import (
    IGNORED, FieldTypes, field_types, field_values, as_keyword, literal_regex, wildcard_source, as_list,
)

Doc = Mapping[str, Any]
Predicate = Callable[[Doc], bool]
ViewPredicate = Callable[["View"], bool]


class UnsupportedQuery(ValueError):
    """A query outside the subset the compiler emits."""


class View:
    """A document plus the values already read from it: each field is resolved once per document,
    however many rules look at it."""

    __slots__ = ("_complete", "_encoded", "_folded", "_keywords", "_values", "doc")

    def __init__(self, doc: Doc, flat: dict[str, list[Any]] | None = None):
        """`flat`, when given, is every leaf of `doc` by dotted path (prefilter.flatten): then a
        field it lacks has no values, and nothing is read from `doc` again."""
        self.doc = doc
        self._complete = flat is not None
        self._values: dict[str, list[Any]] = flat if flat is not None else {}
        self._keywords: dict[str, list[str]] = {}
        self._encoded: dict[str, list[bytes]] = {}
        self._folded: dict[str, list[bytes]] = {}

    @property
    def flat(self) -> dict[str, list[Any]]:
        """Every leaf by dotted path (only when the View was made with `flat`)."""
        if not self._complete:
            raise ValueError("this View was made without its flattened document")
        return self._values

    def values(self, field: str) -> list[Any]:
        found = self._values.get(field)
        if found is None:
            if self._complete:
                return []
            found = self._values[field] = field_values(self.doc, field)
        return found

    def keywords(self, field: str, limit: int) -> list[str]:
        """The field's values as Elasticsearch indexes them in a keyword field with `ignore_above: limit`."""
        found = self._keywords.get(field)
        if found is None:
            found = self._keywords[field] = [s for s in map(as_keyword, self.values(field)) if len(s) <= limit]
        return found

    def encoded(self, field: str, limit: int) -> list[bytes]:
        """`keywords(field, limit)` as the UTF-8 bytes the regular expressions read (linear.py)."""
        found = self._encoded.get(field)
        if found is None:
            found = self._encoded[field] = [encode(s) for s in self.keywords(field, limit)]
        return found

    def folded(self, field: str, limit: int) -> list[bytes]:
        """`encoded(field, limit)` with ASCII letters lower-cased (bytes.lower touches nothing else)."""
        found = self._folded.get(field)
        if found is None:
            found = self._folded[field] = [b.lower() for b in self.encoded(field, limit)]
        return found


# --- compiling a query into a predicate ----------------------------------------------------

class _Compiler:
    def __init__(self, types: FieldTypes):
        self.types = types
        self.fallbacks: list[str] = []  # why RE2 refused a pattern (it then runs bounded: linear.py)

    def regex(self, source: str) -> FullMatch:
        found = compile_fullmatch(source)
        if found.fallback:
            self.fallbacks.append(f"{found.fallback}: {source[:120]}")
        return found

    def compile(self, query: Mapping[str, Any]) -> ViewPredicate:
        if len(query) != 1:
            raise UnsupportedQuery(f"a query has exactly one key, got {sorted(query)}")
        (kind, body), = query.items()
        handler = getattr(self, f"q_{kind}", None)
        if handler is None:
            raise UnsupportedQuery(f"query type {kind!r} is not part of what the compiler emits")
        return handler(body)  # type: ignore[no-any-return]

    def q_match_all(self, body: Any) -> ViewPredicate:
        return lambda doc: True

    def q_match_none(self, body: Any) -> ViewPredicate:
        return lambda doc: False

    def q_bool(self, body: Mapping[str, Any]) -> ViewPredicate:
        unknown = set(body) - {"filter", "must", "should", "must_not", "minimum_should_match", "_name"}
        if unknown:
            raise UnsupportedQuery(f"bool keys {sorted(unknown)} are not supported")
        musts = [self.compile(q) for q in _conjuncts(as_list(body.get("filter")) + as_list(body.get("must")))]
        nots = [self.compile(q) for q in as_list(body.get("must_not"))]
        should_queries = as_list(body.get("should"))
        # Elasticsearch: with should clauses and no must/filter, one should must match.
        minimum = int(body.get("minimum_should_match", 0 if musts else 1)) if should_queries else 0
        shoulds = self._merged(should_queries) if minimum == 1 else [self.compile(q) for q in should_queries]

        return _bool_predicate(musts, nots, shoulds, minimum)

    def _merged(self, queries: list[Mapping[str, Any]]) -> list[ViewPredicate]:
        """Any-of clauses: the string queries on one keyword field become one regex (same answers, one pass)."""
        by_field: dict[str, list[_Spec]] = {}
        rest: list[ViewPredicate] = []
        for query in queries:
            found = self._pattern_spec(query)
            if found is None:
                rest.append(self.compile(query))
            else:
                by_field.setdefault(found.field, []).append(found)
        for field, specs in by_field.items():
            rest[0:0] = self._strings(field, specs)
        return rest

    def _strings(self, field: str, specs: list[_Spec]) -> list[ViewPredicate]:
        """Predicates for "the field matches any of these string queries": plain ASCII patterns by
        byte search (exact: see _Spec), the rest as one RE2 automaton."""
        found: list[ViewPredicate] = []
        for insensitive in (False, True):
            literal = [s.parts for s in specs if s.parts is not None and s.insensitive is insensitive]
            if literal:
                values = self._folded(field) if insensitive else self._encoded(field)
                found.append(_literal_any(literal, values))
        sources = [s.source for s in specs if s.parts is None]
        if not sources:
            return found
        encoded = self._encoded(field)
        merged = compile_fullmatch(sources[0] if len(sources) == 1 else "(?:" + "|".join(sources) + ")")
        if merged.fallback and len(sources) > 1:  # too big for RE2 as one: each on its own
            found += [_fullmatch_any(self.regex(source), encoded) for source in sources]
        else:
            found.append(_fullmatch_any(self.regex(merged.source) if merged.fallback else merged, encoded))
        return found

    def _pattern_spec(self, query: Mapping[str, Any]) -> _Spec | None:
        """A term/prefix/wildcard/regexp query on a keyword field, as a _Spec."""
        if len(query) != 1:
            return None
        (kind, body), = query.items()
        if kind not in ("term", "prefix", "wildcard", "regexp") or not isinstance(body, Mapping) or len(body) != 1:
            return None
        field, spec = self._field(body, kind)
        if self.types.type_of(field) is not None or field in self.types.not_indexed:
            return None
        insensitive = bool(spec.get("case_insensitive"))
        if kind == "term":
            text = as_keyword(spec["value"])
            return _Spec(field, insensitive, lambda: literal_regex(text, insensitive), _parts([text], insensitive))
        if kind == "prefix":
            text = str(spec["value"])
            return _Spec(field, insensitive, lambda: literal_regex(text, insensitive) + ".*",
                         _parts([text, ""], insensitive))
        if kind == "wildcard":
            pattern = str(spec.get("value", spec.get("wildcard")))
            return _Spec(field, insensitive, lambda: wildcard_source(pattern, insensitive),
                         _parts(_wildcard_segments(pattern), insensitive))
        if str(spec.get("flags", "ALL")).upper() != "NONE":
            return None
        source = python_source(str(spec["value"]), insensitive)
        return _Spec(field, insensitive, lambda: source, None)

    def _field(self, body: Mapping[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
        if len(body) != 1:
            raise UnsupportedQuery(f"{kind} takes one field, got {sorted(body)}")
        (field, spec), = body.items()
        return field, dict(spec) if isinstance(spec, Mapping) else {"value": spec}

    def _keywords(self, field: str) -> Callable[[View], list[str]]:
        """The indexed keyword terms of a field (long values past ignore_above are not indexed)."""
        limit = self.types.limit(field)
        if field in self.types.not_indexed:
            return lambda doc: []

        return lambda doc: doc.keywords(field, limit)

    def _encoded(self, field: str) -> Callable[[View], list[bytes]]:
        """`_keywords` as UTF-8 bytes, for the regular expressions."""
        limit = self.types.limit(field)
        if field in self.types.not_indexed:
            return lambda doc: []
        return lambda doc: doc.encoded(field, limit)

    def _folded(self, field: str) -> Callable[[View], list[bytes]]:
        """`_encoded` with ASCII letters lower-cased (what case-insensitive ASCII patterns compare)."""
        limit = self.types.limit(field)
        if field in self.types.not_indexed:
            return lambda doc: []
        return lambda doc: doc.folded(field, limit)

    def q_term(self, body: Mapping[str, Any]) -> ViewPredicate:
        field, spec = self._field(body, "term")
        if field == IGNORED:
            return self._ignored([str(spec["value"])])
        return self._term_predicate(field, [spec["value"]], bool(spec.get("case_insensitive", False)))

    def _ignored(self, fields: list[str]) -> ViewPredicate:
        """`_ignored`: the document has a keyword value longer than the field's ignore_above (what
        Elasticsearch records there at index time; never, when matching whole values)."""
        limits = [(f, self.types.limit(f)) for f in fields if f not in self.types.not_indexed]
        return lambda doc: any(len(as_keyword(v)) > limit for f, limit in limits for v in doc.values(f)
                               if not isinstance(v, Mapping))

    def q_terms(self, body: Mapping[str, Any]) -> ViewPredicate:
        fields = {k: v for k, v in body.items() if k != "boost"}
        if len(fields) != 1:
            raise UnsupportedQuery("terms takes one field")
        (field, values), = fields.items()
        if field == IGNORED:
            return self._ignored([str(v) for v in values])
        return self._term_predicate(field, list(values), False)

    def _term_predicate(self, field: str, wanted: list[Any], insensitive: bool) -> ViewPredicate:
        kind = self.types.type_of(field)
        if kind == "ip":
            networks = [as_ipv6(ipaddress.ip_network(str(v), strict=False)) for v in wanted]
            return lambda doc: any(_in_networks(v, networks) for v in doc.values(field))
        if kind == "long":
            numbers = [float(v) for v in wanted]
            return lambda doc: any(_number(v) in numbers for v in doc.values(field))
        if kind == "date":
            moments = [_moment(v) for v in wanted]
            return lambda doc: any(_moment(v) in moments for v in doc.values(field))
        texts = [as_keyword(v) for v in wanted]
        if insensitive:
            return _any_of(self._strings(field, [_Spec(field, True, partial(literal_regex, t, True), _parts([t], True))
                                                 for t in texts]))
        exact = set(texts)
        if field in self.types.not_indexed:
            return lambda doc: False  # no value of it is indexed (as `_keywords` says)
        limit = self.types.limit(field)
        return lambda doc: not exact.isdisjoint(doc.keywords(field, limit))

    def q_prefix(self, body: Mapping[str, Any]) -> ViewPredicate:
        return self._string_query({"prefix": body})

    def q_wildcard(self, body: Mapping[str, Any]) -> ViewPredicate:
        return self._string_query({"wildcard": body})

    def q_regexp(self, body: Mapping[str, Any]) -> ViewPredicate:
        field, spec = self._field(body, "regexp")
        if str(spec.get("flags", "ALL")).upper() != "NONE":
            raise UnsupportedQuery("regexp queries must use flags NONE (the compiler never emits others)")
        return self._string_query({"regexp": body})

    def _string_query(self, query: Mapping[str, Any]) -> ViewPredicate:
        found = self._pattern_spec(query)
        if found is None:
            (kind, body), = query.items()
            field, _ = self._field(body, kind)
            typed = self.types.type_of(field)
            if typed is not None:  # the node refuses the query (a wildcard on a number): so does the matcher
                raise UnsupportedQuery(f"a {kind} query on {field}, a field of type {typed}")
            return lambda doc: False  # an unindexed field: Elasticsearch matches no value of it
        return _any_of(self._strings(found.field, [found]))

    def q_range(self, body: Mapping[str, Any]) -> ViewPredicate:
        field, spec = self._field(body, "range")
        kind = self.types.type_of(field)
        bounds = [(op, spec[op]) for op in ("gt", "gte", "lt", "lte") if op in spec]
        if kind == "date":
            convert: Callable[[Any], Any] = _moment
        elif kind == "long":
            convert = _number
        else:
            convert = _inferred_number_or_keyword
        limits = [(op, convert(v)) for op, v in bounds]

        def check(doc: View) -> bool:
            for raw in doc.values(field):
                value = convert(raw)
                if value is None or (isinstance(value, str) and len(value) > self.types.limit(field)):
                    continue
                try:
                    if all(_compare(op, value, limit) for op, limit in limits):
                        return True
                except TypeError:  # a number against a keyword bound: Elasticsearch compares the text
                    if all(_compare(op, as_keyword(raw), as_keyword(lim)) for op, lim in limits):
                        return True
            return False
        return check

    def q_secmon_fieldref(self, body: Mapping[str, Any]) -> ViewPredicate:
        """Two fields of one event compared (Sigma |fieldref): in-process only, see compile.py."""
        field, ref, mode = body["field"], body["ref"], body.get("mode", "equals")
        insensitive = bool(body.get("case_insensitive", True))
        tests: dict[str, Callable[[str, str], bool]] = {
            "equals": lambda a, b: a == b, "startswith": str.startswith, "endswith": str.endswith}
        test = tests[mode]

        def fold(text: str) -> str:
            return text.lower() if insensitive else text

        def check(doc: View) -> bool:
            refs = [fold(as_keyword(v)) for v in doc.values(ref)]
            return any(test(fold(as_keyword(v)), r) for v in doc.values(field) for r in refs)
        return check

    def q_exists(self, body: Mapping[str, Any]) -> ViewPredicate:
        field = body["field"]
        if field in self.types.not_indexed:
            return lambda doc: False
        kind = self.types.type_of(field)
        if kind in ("ip", "long", "date"):
            return lambda doc: bool(doc.values(field))
        keywords = self._keywords(field)
        # A field holding only an object (no leaf values) exists when any sub-field does.
        return lambda doc: bool(keywords(doc)) or _has_object_leaf(doc.doc, field)


def _conjuncts(queries: list[Any]) -> list[Any]:
    """The clauses every match satisfies, with each nested bool of filter/must clauses only (a
    logsource: module, then channel and event id) spliced in, in order: the same conjunction, one
    loop instead of a call per level on every candidate rule of every event. (An empty such bool
    matches everything, as the empty conjunction it leaves.)"""
    out: list[Any] = []
    for query in queries:
        body = query.get("bool") if isinstance(query, Mapping) and len(query) == 1 else None
        if isinstance(body, Mapping) and body.keys() <= {"filter", "must"}:
            out += _conjuncts(as_list(body.get("filter")) + as_list(body.get("must")))
        else:
            out.append(query)
    return out


@dataclass(frozen=True)
class _Spec:
    """A string query on a keyword field: its regex source, and, when the pattern is a term, a
    prefix or a wildcard without `?`, the same as literal UTF-8 segments between the `*`s (`parts`,
    ASCII letters lower-cased when insensitive).

    Why the segments are exact: under case_insensitive, Elasticsearch folds ASCII letters only
    (alt_case), which `bytes.lower` folds alike on both sides, and every other character matches
    only itself; UTF-8 is self-synchronizing, so a segment found in the value's bytes is found at a
    character boundary."""

    field: str
    insensitive: bool
    make_source: Callable[[], str]  # Python-dialect regex for a whole-value match (built when needed)
    parts: tuple[bytes, ...] | None = None  # segments between `*`s: first and last anchored

    @property
    def source(self) -> str:
        return self.make_source()


def _parts(segments: list[str] | None, insensitive: bool) -> tuple[bytes, ...] | None:
    if segments is None:
        return None
    encoded = tuple(encode(s) for s in segments)
    return tuple(s.lower() for s in encoded) if insensitive else encoded


# A wildcard pattern's tokens: an escaped character, `*` or `?`, a run of plain characters, a
# backslash that ends the pattern (a literal backslash, as Elasticsearch reads it).
_WILDCARD_TOKENS = re.compile(r"\\(.)|([*?])|([^\\*?]+)|(\\)", re.DOTALL)


def _wildcard_segments(pattern: str) -> list[str] | None:
    """An Elasticsearch wildcard pattern split at its `*`s (escapes resolved); None if it has a `?`."""
    if "\\" not in pattern:  # most patterns: no escape to resolve
        return None if "?" in pattern else pattern.split("*")
    # Windows paths escape every backslash: read by runs, not character by character (compiling
    # the ~500 rules a set of files meets reads thousands of these).
    segments: list[str] = []
    current: list[str] = []
    for escaped, operator, run, trailing in _WILDCARD_TOKENS.findall(pattern):
        if operator == "?":
            return None
        if operator == "*":
            segments.append("".join(current))
            current = []
        else:
            current.append(escaped or run or trailing)
    segments.append("".join(current))
    return segments


def _segments_match(value: bytes, parts: tuple[bytes, ...]) -> bool:
    """Does `value` match first*middle*...*last? Leftmost-first search is exact for `*`-only patterns."""
    if len(parts) == 1:
        return value == parts[0]
    first, last = parts[0], parts[-1]
    end = len(value) - len(last)
    if end < len(first) or not value.startswith(first) or not value.endswith(last):
        return False
    position = len(first)
    for middle in parts[1:-1]:
        if middle:
            found = value.find(middle, position, end)
            if found < 0:
                return False
            position = found + len(middle)
    return True


def _literal_any(patterns: list[tuple[bytes, ...]], values: Callable[[View], list[bytes]]) -> ViewPredicate:
    """Any value matches any pattern. The shapes Sigma writes most (equals, startswith, endswith,
    contains) are tested with one C-level call each (set membership, bytes.startswith/endswith
    with a tuple, `in`); only the rest go through _segments_match."""
    exact = frozenset(p[0] for p in patterns if len(p) == 1)
    starts = tuple(p[0] for p in patterns if len(p) == 2 and not p[1])
    ends = tuple(p[1] for p in patterns if len(p) == 2 and not p[0] and p[1])
    contains = tuple(p[1] for p in patterns if len(p) == 3 and not p[0] and not p[2])
    others = [p for p in patterns if not (len(p) == 1 or (len(p) == 2 and (not p[1] or not p[0]))
                                          or (len(p) == 3 and not p[0] and not p[2]))]

    if not (starts or ends or contains or others):  # equals only (a case-insensitive channel, ...)
        return lambda doc: not exact.isdisjoint(values(doc))

    if len(contains) >= CONTAINS_SEARCH:
        def any_in(value: bytes) -> bool:
            for needle in contains:
                if needle in value:
                    return True
            return False
        test: Callable[[bytes], bool] = any_in
        calls = 0

        def searched(doc: View) -> bool:
            nonlocal test, calls
            calls += 1
            if calls == SEARCH_AFTER:  # tried often: worth compiling (most rules of a corpus rarely are)
                test = contains_any(contains) or any_in
            for value in values(doc):
                if value in exact or (starts and value.startswith(starts)) or (ends and value.endswith(ends)):
                    return True
                if test(value):
                    return True
                for parts in others:
                    if _segments_match(value, parts):
                        return True
            return False
        return searched

    def check(doc: View) -> bool:
        for value in values(doc):
            if value in exact or (starts and value.startswith(starts)) or (ends and value.endswith(ends)):
                return True
            for needle in contains:
                if needle in value:
                    return True
            for parts in others:
                if _segments_match(value, parts):
                    return True
        return False
    return check


# From this many `contains` texts on (below it the `in` tests are as fast), one RE2 search over the
# value replaces a `needle in value` per text (Sigma lists dozens: a command line against 28 took 17 us,
# the search 2).
CONTAINS_SEARCH = 8
SEARCH_AFTER = 64  # calls of the predicate before its search is compiled (0.2 ms; thousands of lists)
_BYTES = re2.Options()
_BYTES.encoding = re2.Options.Encoding.LATIN1  # a byte is a character: what `needle in value` compares
_BYTES.log_errors = False
_BYTES.max_mem = 64 << 20


def contains_any(needles: tuple[bytes, ...]) -> Callable[[bytes], bool] | None:
    """`lambda value: any(n in value for n in needles)` as one unanchored RE2 search. None (the caller
    keeps its `in` tests: the same answers) when RE2 refuses it, or when this google-re2 lacks the private
    bytes API (linear.RAW), whose speed is the point of the search."""
    raw = linear.RAW
    if raw is None:
        return None
    compiled = raw.compile(b"|".join(re.escape(n) for n in needles), _BYTES)
    if not compiled.ok():
        return None
    match, unanchored = compiled.Match, raw.unanchored

    def search(value: bytes) -> bool:
        return bool(match(unanchored, value, 0, len(value))[0][0] >= 0)
    return search


def _any_of(predicates: list[ViewPredicate]) -> ViewPredicate:
    if len(predicates) == 1:
        return predicates[0]
    return lambda doc: any(p(doc) for p in predicates)


def _bool_predicate(musts: list[ViewPredicate], nots: list[ViewPredicate], shoulds: list[ViewPredicate],
                    minimum: int) -> ViewPredicate:
    """A bool query's closure. Plain loops, and the common shapes on their own, because these run
    for every candidate rule of every document of an offline scan."""
    if not nots and minimum <= 0:
        if len(musts) == 1:
            return musts[0]

        def all_of(doc: View) -> bool:
            for p in musts:
                if not p(doc):
                    return False
            return True
        return all_of
    if not musts and not nots and minimum == 1:
        if len(shoulds) == 1:
            return shoulds[0]

        def any_of(doc: View) -> bool:
            for p in shoulds:
                if p(doc):
                    return True
            return False
        return any_of

    def check(doc: View) -> bool:
        for p in musts:
            if not p(doc):
                return False
        for p in nots:
            if p(doc):
                return False
        if minimum <= 0:
            return True
        if minimum == 1:
            for p in shoulds:
                if p(doc):
                    return True
            return False
        return sum(1 for p in shoulds if p(doc)) >= minimum
    return check


def _fullmatch_any(pattern: FullMatch, values: Callable[[View], list[bytes]]) -> ViewPredicate:
    """Any value matches the pattern. Once the predicate has run SEARCH_AFTER times (worth reading
    the pattern: most of a corpus's rarely run), a value that holds none of the texts every match
    contains (linear.required_literals: a backtick, `-f`, `${`) is passed over without running it."""
    test = pattern.test
    needed: tuple[bytes, ...] = ()
    calls = 0

    def check(doc: View) -> bool:
        nonlocal needed, calls
        if calls < SEARCH_AFTER:
            calls += 1
            if calls == SEARCH_AFTER:
                needed = required_literals(pattern.source) or ()
        for value in values(doc):
            if needed:
                for text in needed:
                    if text in value:
                        break
                else:
                    continue
            if test(value):
                return True
        return False
    return check


def _has_object_leaf(doc: Doc, field: str) -> bool:
    found: list[Any] = []
    _collect_objects(doc, field.split("."), found)
    return any(_leaves(obj) for obj in found)


def _collect_objects(node: Any, parts: list[str], out: list[Any]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect_objects(item, parts, out)
        return
    if not isinstance(node, Mapping):
        return
    if not parts:
        out.append(node)
        return
    for n in range(1, len(parts) + 1):
        key = ".".join(parts[:n])
        if key in node:
            _collect_objects(node[key], parts[n:], out)


def _leaves(node: Any) -> bool:
    if isinstance(node, Mapping):
        return any(_leaves(v) for v in node.values())
    if isinstance(node, list):
        return any(_leaves(v) for v in node)
    return node is not None


def _in_networks(value: Any, networks: list[ipaddress.IPv6Network]) -> bool:
    """Elasticsearch's ip type: every address is 128 bits, IPv4 as IPv4-mapped IPv6 (cidr.as_ipv6)."""
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        return False
    wide = as_ipv6(ipaddress.ip_network(address)).network_address
    return any(wide in n for n in networks)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _inferred_number_or_keyword(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


def _moment(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _compare(op: str, value: Any, limit: Any) -> bool:
    if op == "gt":
        return bool(value > limit)
    if op == "gte":
        return bool(value >= limit)
    if op == "lt":
        return bool(value < limit)
    return bool(value <= limit)


# --- public API ----------------------------------------------------------------------------

def compile_view_matcher(query: Mapping[str, Any], types: FieldTypes | None = None) -> ViewPredicate:
    """Like compile_matcher, over a View (share one View per document across many rules)."""
    return _Compiler(types or field_types()).compile(query)


def compile_matcher(query: Mapping[str, Any], types: FieldTypes | None = None) -> Predicate:
    """A predicate over docs answering what `query` answers on the cluster."""
    inner = compile_view_matcher(query, types)
    return lambda doc: inner(View(doc))


_CACHE: dict[tuple[int, bool], tuple[Mapping[str, Any], Predicate]] = {}
_CACHE_LIMIT = 20000


def matches(query: Mapping[str, Any], doc: Mapping[str, Any], whole: bool = False) -> bool:
    """Would Elasticsearch return `doc` (indexed with secmon's events template) for `query`?
    With `whole`, keyword values longer than ignore_above count as indexed (FieldTypes.whole)."""
    key = (id(query), whole)
    cached = _CACHE.get(key)
    if cached is None or cached[0] is not query:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        types = field_types().whole() if whole else None
        cached = (query, compile_matcher(query, types))  # the query is kept, so its id is not reused
        _CACHE[key] = cached
    return cached[1](doc)


def regex_fallbacks(query: Mapping[str, Any], types: FieldTypes | None = None) -> list[str]:
    """The patterns of `query` that RE2 refuses and that therefore run on the bounded fallback
    engine (linear.py), each with the reason: what `rules validate` reports. (Patterns merged per
    field fall back to their parts, so only single patterns can end up there.)"""
    compiler = _Compiler(types or field_types())
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, Mapping):
            return
        spec = compiler._pattern_spec(node) if len(node) == 1 else None
        if spec is not None and spec.parts is None:
            pattern = compile_fullmatch(spec.source)
            if pattern.fallback:
                found.append(f"{pattern.fallback}: {spec.source[:120]}")
            return
        for value in node.values():
            walk(value)
    walk(query)
    return found
