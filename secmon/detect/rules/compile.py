"""Compile a pySigma condition tree to native Query DSL.

Never `query_string`: rule values go into term/wildcard/regexp/range queries as
data, so nothing in a rule can be misread as query syntax. Sigma matches
strings case-insensitively unless `|cased`, hence `case_insensitive: true`.
"""

from __future__ import annotations

from typing import Any

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
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

Query = dict[str, Any]
MATCH_ALL: Query = {"match_all": {}}


class UnsupportedRule(ValueError):
    """The rule uses something this compiler cannot express; the message says what."""


def and_(queries: list[Query]) -> Query:
    return {"bool": {"filter": queries}}


def or_(queries: list[Query]) -> Query:
    return {"bool": {"should": queries, "minimum_should_match": 1}}


def not_(query: Query) -> Query:
    return {"bool": {"must_not": [query]}}


def _wildcard_pattern(value: SigmaString) -> str:
    out = []
    for part in value.s:
        if part is SpecialChars.WILDCARD_MULTI:
            out.append("*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            out.append("?")
        elif isinstance(part, str):
            out.append(part.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?"))
        else:
            raise UnsupportedRule(f"placeholder {part} was not resolved by a processing pipeline")
    return "".join(out)


def _string(field: str, value: SigmaString) -> Query:
    insensitive = not isinstance(value, SigmaCasedString)
    if not value.contains_special():
        return {"term": {field: {"value": str(value), "case_insensitive": insensitive}}}
    parts = value.s
    if len(parts) == 1 and parts[0] is SpecialChars.WILDCARD_MULTI:
        return {"exists": {"field": field}}
    if parts[-1] is SpecialChars.WILDCARD_MULTI and not any(isinstance(p, SpecialChars) for p in parts[:-1]):
        return {"prefix": {field: {"value": "".join(str(p) for p in parts[:-1]), "case_insensitive": insensitive}}}
    return {"wildcard": {field: {"value": _wildcard_pattern(value), "case_insensitive": insensitive}}}


def _regex(field: str, value: SigmaRegularExpression) -> Query:
    # Lucene regexps are anchored at both ends; Sigma's are searches.
    pattern = str(value.regexp)
    pattern = pattern[1:] if pattern.startswith("^") else ".*" + pattern
    pattern = pattern[:-1] if pattern.endswith("$") and not pattern.endswith("\\$") else pattern + ".*"
    query: Query = {"value": pattern, "flags": "NONE"}
    if SigmaRegularExpressionFlag.IGNORECASE in value.flags:
        query["case_insensitive"] = True
    return {"regexp": {field: query}}


def _compare(field: str, value: SigmaCompareExpression) -> Query:
    op = {CompareOperators.LT: "lt", CompareOperators.LTE: "lte", CompareOperators.GT: "gt",
          CompareOperators.GTE: "gte"}[value.op]
    return {"range": {field: {op: value.number.number}}}


def field_query(field: str, value: Any) -> Query:
    if isinstance(value, SigmaString):
        return _string(field, value)
    if isinstance(value, SigmaNull):
        return not_({"exists": {"field": field}})
    if isinstance(value, SigmaExists):
        return {"exists": {"field": field}} if value.exists else not_({"exists": {"field": field}})
    if isinstance(value, (SigmaNumber, SigmaBool)):
        raw = value.number if isinstance(value, SigmaNumber) else value.boolean
        return {"term": {field: {"value": raw}}}
    if isinstance(value, SigmaRegularExpression):
        return _regex(field, value)
    if isinstance(value, SigmaCIDRExpression):
        return {"term": {field: {"value": str(value.network)}}}
    if isinstance(value, SigmaCompareExpression):
        return _compare(field, value)
    raise UnsupportedRule(f"value type {type(value).__name__} on field {field!r} is not supported yet")


def compile_condition(node: Any) -> Query:
    if isinstance(node, ConditionAND):
        return and_([compile_condition(arg) for arg in node.args])
    if isinstance(node, ConditionOR):
        return or_([compile_condition(arg) for arg in node.args])
    if isinstance(node, ConditionNOT):
        return not_(compile_condition(node.args[0]))
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return field_query(node.field, node.value)
    if isinstance(node, ConditionValueExpression):
        raise UnsupportedRule("keyword (field-less) detections are not supported yet")
    raise UnsupportedRule(f"condition element {type(node).__name__} is not supported")
