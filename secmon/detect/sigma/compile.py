"""Compile a pySigma condition tree to native Query DSL.

Never `query_string`: rule values go into term/terms/prefix/wildcard/regexp/range/
exists queries as data, so nothing in a rule can be misread as query syntax. Sigma
matches strings case-insensitively unless `|cased`, hence `case_insensitive: true`
(only where a value has letters, so numeric and ip fields never see the flag, which
they reject). The field's type (fieldtypes.yml) decides what a value may become:
CIDR is a term on an ip field and, on a keyword field, regexps accepting exactly the
textual forms of the network's addresses (cidr.py); wildcards or regexes
on ip/long fields are refused with the reason, since Elasticsearch would fail the
whole search.

`|fieldref` compares two fields of one event, which Query DSL cannot do without
scripts. The compiler then produces two queries: `query`, a superset the cluster
runs (the comparison replaced by "both fields exist", or by nothing under a NOT),
and `refine`, the exact condition with `secmon_fieldref` nodes that only the
in-process matcher understands and that runs on the hits' doc values.

Long values: a keyword value longer than the field's `ignore_above` is not indexed, so no
term, prefix, wildcard or regexp query sees it (a 20 KB PowerShell script block, a command
line padded to 9,000 characters). Elasticsearch names such fields in the document's `_ignored`
metadata field, so the cluster also runs `long_values_query`: "the logsource matches and a
field the rule reads was too long to index". Those few hits are checked exactly in-process on
their `_source` values (store/search.py fetches them, findings.py checks them with
`whole=True`); in-process scans read whole values too, so a long value matches on both paths
as if it had been indexed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
)

from secmon.detect.sigma.cidr import address_regexps, as_ip_term
from secmon.detect.sigma.lucene_regexp import UnsupportedRegex, from_sigma
from secmon.detect.fields import IGNORED, FieldTypes, field_types

Query = dict[str, Any]
MATCH_ALL: Query = {"match_all": {}}
MATCH_NONE: Query = {"match_none": {}}
FIELDREF = "secmon_fieldref"
REGEX_STATES = 100_000


class UnsupportedRule(ValueError):
    """The rule uses something this compiler cannot express; the message says what."""


def and_(queries: list[Query]) -> Query:
    return queries[0] if len(queries) == 1 else {"bool": {"filter": queries}}


def or_(queries: list[Query]) -> Query:
    return queries[0] if len(queries) == 1 else {"bool": {"should": queries, "minimum_should_match": 1}}


def not_(query: Query) -> Query:
    return {"bool": {"must_not": [query]}}


def _escape_wildcard(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


Token = str | SpecialChars  # one character of a Sigma string, or a wildcard
Tokens = tuple[Token, ...]
ANY: Tokens = (SpecialChars.WILDCARD_MULTI,)


def tokens(value: SigmaString) -> Tokens:
    """A Sigma string as one token per character or wildcard (placeholders must be resolved)."""
    out: list[Token] = []
    for part in value.s:
        if isinstance(part, str):
            out.extend(part)
        elif isinstance(part, SpecialChars):
            out.append(part)
        else:
            _plain(value)  # raises for the unresolved placeholder
    return tuple(out)


def wildcard_text(pattern: Tokens) -> str:
    """Tokens as an Elasticsearch wildcard pattern (literal `*`, `?` and `\\` escaped)."""
    return "".join("*" if t is SpecialChars.WILDCARD_MULTI else "?" if t is SpecialChars.WILDCARD_SINGLE
                   else _escape_wildcard(t) for t in pattern)


def _plain(value: SigmaString) -> str:
    parts = []
    for part in value.s:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, SpecialChars):
            parts.append("*" if part is SpecialChars.WILDCARD_MULTI else "?")
        else:
            raise UnsupportedRule(f"placeholder %{getattr(part, 'name', part)}% has no values: list them under "
                                  f"'placeholders' in secmon/detect/sigma/windows.yml")
    return "".join(parts)


_COUNTED = re.compile(r"(?<!\\)\{(\d+)(,?)(\d*)\}")
MAX_COUNTED_REPEAT = 8  # `x{0,64}` after `.*` needs ~2^64 states: relaxed
MAX_OPEN_REPEAT = 100  # `x{40,}` is fine, `.{1000,}` exceeds the budget: relaxed


def _relax(pattern: str) -> str:
    """Costly counted repeats -> `{min(m, 8),}` when the pattern has an open start (see Compiler.regex)."""
    if not pattern.startswith(".*"):
        return pattern

    def lift(m: re.Match[str]) -> str:
        low, high = int(m.group(1)), int(m.group(3) or m.group(1)) if m.group(2) == "" else m.group(3)
        if (high and int(high) <= MAX_COUNTED_REPEAT) or (not high and low <= MAX_OPEN_REPEAT):
            return m.group(0)  # small bounded repeats and moderate open ones determinize fine
        return "{%d,}" % min(low, MAX_COUNTED_REPEAT)
    return _COUNTED.sub(lift, pattern)


def _has_case(text: str) -> bool:
    return text.lower() != text.upper()


@dataclass
class FieldContext:
    """What the compiler needs to know about the rule's fields besides the condition."""

    alternatives: Callable[[str], list[str]] = lambda field: [field]
    keyword_fields: tuple[str, ...] = ("message",)
    types: FieldTypes | None = None
    # A field whose values this kind of event writes differently (Security-audit equivalents of
    # Sysmon fields, audit.py): the translation builds the query instead of a plain comparison.
    translate: Callable[[str], Translation | None] = lambda field: None


class Translation(Protocol):
    def query(self, compiler: Compiler, value: Any) -> Query:
        """The exact query for `value` (one Sigma value, never an expansion); UnsupportedRule if none."""

    def fields(self) -> set[str]:
        """The event fields its queries read."""


class Compiler:
    """One rule's condition -> (superset query for the cluster, exact in-process query or None)."""

    def __init__(self, context: FieldContext | None = None):
        self.context = context or FieldContext()
        self.types = self.context.types or field_types()
        self.needs_refine = False

    # --- tree ------------------------------------------------------------------------------

    def compile(self, node: Any, exact: bool, positive: bool = True) -> Query:
        if isinstance(node, ConditionAND):
            return and_([self.compile(arg, exact, positive) for arg in node.args])
        if isinstance(node, ConditionOR):
            return or_([self.compile(arg, exact, positive) for arg in node.args])
        if isinstance(node, ConditionNOT):
            return not_(self.compile(node.args[0], exact, not positive))
        if isinstance(node, ConditionFieldEqualsValueExpression):
            fields = self.context.alternatives(str(node.field)) if node.field is not None else []
            return or_([self.value(field, node.value, exact, positive) for field in fields])
        if isinstance(node, ConditionValueExpression):
            return self.keyword(node.value)
        raise UnsupportedRule(f"condition element {type(node).__name__} is not supported")

    def keyword(self, value: Any) -> Query:
        """A field-less value: a case-insensitive substring of any keyword field (windows.yml)."""
        if isinstance(value, SigmaExpansion):
            return or_([self.keyword(v) for v in value.values])
        if isinstance(value, SigmaNumber):
            value = SigmaString(str(value.number))
        if not isinstance(value, SigmaString):
            raise UnsupportedRule(f"a keyword (field-less) {type(value).__name__} value is not supported")
        pattern = wildcard_text(tokens(value))
        pattern = ("" if pattern.startswith("*") else "*") + pattern + ("" if pattern.endswith("*") and not
                                                                        pattern.endswith("\\*") else "*")
        insensitive = not isinstance(value, SigmaCasedString) and _has_case(pattern)
        return or_([{"wildcard": {f: {"value": pattern, "case_insensitive": insensitive}}}
                    for f in self.context.keyword_fields])

    # --- values ----------------------------------------------------------------------------

    def value(self, field: str, value: Any, exact: bool, positive: bool) -> Query:
        kind = self.types.type_of(field)
        if isinstance(value, SigmaExpansion):
            return or_([self.value(field, v, exact, positive) for v in value.values])
        translation = self.context.translate(field)
        if translation is not None:
            return translation.query(self, value)
        if isinstance(value, SigmaFieldReference):
            return self.fieldref(field, value, exact, positive)
        if isinstance(value, SigmaString):
            return self.string(field, kind, value)
        if isinstance(value, SigmaNull):
            return not_({"exists": {"field": field}})
        if isinstance(value, SigmaExists):
            return {"exists": {"field": field}} if value.exists else not_({"exists": {"field": field}})
        if isinstance(value, SigmaTimestampPart):
            raise UnsupportedRule(f"timestamp part modifiers (field {field!r}) need scripts; not supported")
        if isinstance(value, SigmaBool):
            return {"term": {field: {"value": value.boolean}}}
        if isinstance(value, SigmaNumber):
            if kind == "ip":
                raise UnsupportedRule(f"number {value.number} compared with ip field {field!r}")
            return {"term": {field: {"value": value.number}}}
        if isinstance(value, SigmaRegularExpression):
            return self.regex(field, kind, value, exact, positive)
        if isinstance(value, SigmaCIDRExpression):
            return self.cidr(field, kind, value)
        if isinstance(value, SigmaCompareExpression):
            return self.compare(field, kind, value)
        raise UnsupportedRule(f"value type {type(value).__name__} on field {field!r} is not supported")

    def string(self, field: str, kind: str | None, value: SigmaString) -> Query:
        insensitive = not isinstance(value, SigmaCasedString)
        if kind in ("ip", "long", "date"):
            text = _plain(value)
            if value.contains_special():
                raise UnsupportedRule(f"wildcards on {kind} field {field!r} ({text!r}): Elasticsearch refuses them"
                                      + (" (use |cidr)" if kind == "ip" else ""))
            self._check_typed(field, kind, text)
            return {"term": {field: {"value": text}}}
        return self.pattern(field, tokens(value), insensitive)

    @staticmethod
    def pattern(field: str, pattern: Tokens, insensitive: bool) -> Query:
        """A keyword field compared with a Sigma string: term, prefix or wildcard, whichever is exact."""
        if not any(isinstance(t, SpecialChars) for t in pattern):
            text = "".join(str(t) for t in pattern)
            return {"term": {field: {"value": text, "case_insensitive": insensitive and _has_case(text)}}}
        if pattern == ANY:
            return {"wildcard": {field: {"value": "*"}}}  # any indexed value, as Elasticsearch sees it
        if pattern[-1] is SpecialChars.WILDCARD_MULTI and all(isinstance(t, str) for t in pattern[:-1]):
            text = "".join(str(t) for t in pattern[:-1])
            return {"prefix": {field: {"value": text, "case_insensitive": insensitive and _has_case(text)}}}
        text = wildcard_text(pattern)
        return {"wildcard": {field: {"value": text, "case_insensitive": insensitive and _has_case(text)}}}

    @staticmethod
    def _check_typed(field: str, kind: str, text: str) -> None:
        try:
            if kind == "ip":
                ipaddress.ip_address(text)
            elif kind == "long":
                int(text)
        except ValueError:
            raise UnsupportedRule(f"{text!r} is not a valid {kind} for field {field!r}") from None

    def regex(self, field: str, kind: str | None, value: SigmaRegularExpression, exact: bool, positive: bool
              ) -> Query:
        if kind in ("ip", "long", "date"):
            raise UnsupportedRule(f"a regular expression on {kind} field {field!r}: Elasticsearch refuses it")
        flags = value.flags
        try:
            pattern = from_sigma(str(value.regexp), dotall=SigmaRegularExpressionFlag.DOTALL in flags,
                                 multiline=SigmaRegularExpressionFlag.MULTILINE in flags)
        except UnsupportedRegex as exc:
            raise UnsupportedRule(f"field {field!r}: {exc}") from None
        # Sigma regexes search, so the pattern starts with `.*`: determinizing that costs more than
        # Lucene's default budget (10,000) for many community rules.
        insensitive = SigmaRegularExpressionFlag.IGNORECASE in flags or str(value.regexp).startswith("(?i)")
        relaxed = _relax(pattern)
        if relaxed != pattern:
            # A counted repeat after an open start (`.*[^"]{0,64}x`) needs an exponential automaton,
            # which Lucene refuses at any budget. The cluster runs the pattern with the count
            # lifted (a superset); the exact pattern refines the hits in-process.
            self.needs_refine = True
            if not exact:
                pattern = relaxed if positive else ""
                if not pattern:
                    return MATCH_NONE
        query: Query = {"value": pattern, "flags": "NONE", "max_determinized_states": REGEX_STATES}
        if insensitive:
            query["case_insensitive"] = True
        return {"regexp": {field: query}}

    def cidr(self, field: str, kind: str | None, value: SigmaCIDRExpression) -> Query:
        if kind == "ip":
            return {"term": {field: {"value": as_ip_term(value.network)}}}
        if kind in ("long", "date"):
            raise UnsupportedRule(f"a CIDR on {kind} field {field!r}")
        # An address stored as text: every textual form of every address in the network (cidr.py).
        return or_([{"regexp": {field: {"value": pattern, "flags": "NONE", "max_determinized_states": REGEX_STATES}}}
                    for pattern in address_regexps(value.network)])

    def compare(self, field: str, kind: str | None, value: SigmaCompareExpression) -> Query:
        if kind in ("ip",) or field.startswith("winlog."):
            raise UnsupportedRule(f"|lt/|gt on {field!r}: it is a text (keyword) field, which Elasticsearch "
                                  f"compares as text; map it to a numeric ECS field")
        op = {CompareOperators.LT: "lt", CompareOperators.LTE: "lte", CompareOperators.GT: "gt",
              CompareOperators.GTE: "gte"}[value.op]
        return {"range": {field: {op: value.number.number}}}

    def fieldref(self, field: str, value: SigmaFieldReference, exact: bool, positive: bool) -> Query:
        self.needs_refine = True
        other = self.context.alternatives(value.field)[0]
        if exact:
            mode = "startswith" if value.starts_with else "endswith" if value.ends_with else "equals"
            return {FIELDREF: {"field": field, "ref": other, "mode": mode, "case_insensitive": True}}
        if positive:  # superset: both fields must be there for the values to be compared
            return and_([{"exists": {"field": field}}, {"exists": {"field": other}}])
        return MATCH_NONE  # under a NOT: the negation of "never" keeps every candidate


@dataclass(frozen=True)
class Compiled:
    query: Query  # what the cluster runs
    refine: Query | None  # the exact condition for the hits, when `query` is only a superset
    refine_fields: tuple[str, ...]  # fields `refine` reads (fetched as doc values)
    long_query: Query | None = None  # events with a value too long to index that `query` may miss


def compile_condition(node: Any, context: FieldContext | None = None) -> Query:
    """The cluster query of one condition (the superset when it uses |fieldref)."""
    return Compiler(context).compile(node, exact=False)


def compile_conditions(nodes: list[Any], context: FieldContext | None = None) -> Compiled:
    compiler = Compiler(context)
    query = or_([compiler.compile(node, exact=False) for node in nodes])
    if not compiler.needs_refine:
        return Compiled(query, None, ())
    refine = or_([compiler.compile(node, exact=True) for node in nodes])
    return Compiled(query, refine, tuple(sorted(query_fields(refine))))


def long_values_query(query: Query, types: FieldTypes | None = None) -> Query | None:
    """Documents in which a keyword field `query` reads was too long to index, or None if it reads none."""
    types = types or field_types()
    fields = sorted(f for f in query_fields(query) if types.type_of(f) is None and f not in types.not_indexed)
    return {"terms": {IGNORED: fields}} if fields else None


def query_fields(query: Any) -> set[str]:
    """Every field a query reads."""
    found: set[str] = set()
    if isinstance(query, dict):
        for kind, body in query.items():
            if kind == "bool":
                for clause in ("filter", "must", "should", "must_not"):
                    for sub in body.get(clause, []):
                        found |= query_fields(sub)
            elif kind == "exists":
                found.add(body["field"])
            elif kind == FIELDREF:
                found |= {body["field"], body["ref"]}
            elif kind in ("term", "terms", "prefix", "wildcard", "regexp", "range"):
                found |= {k for k in body if k != "boost"}
    return found
