"""Load Sigma rule files into compiled rules, collecting every error instead of stopping.

One bad rule never stops the others: `load_rules` returns the rules that
compiled and a list of (location, reason) for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationConditionOperator, SigmaCorrelationRule, SigmaCorrelationType
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from secmon.config import parse_duration
from secmon.detect.rules.compile import Query, UnsupportedRule, and_, compile_condition, or_
from secmon.model import Severity

DEFAULT_SUPPRESS = timedelta(hours=1)


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to run: a query plus how matches become findings."""

    id: str
    title: str
    description: str
    severity: Severity
    tags: tuple[str, ...]
    path: str
    query: Query  # selects the matching events
    group_by: tuple[str, ...]  # findings are per agency and per these fields
    threshold: int  # matches within `timespan` needed for a finding
    timespan: timedelta
    kind: str  # "single" or "event_count"


@dataclass(frozen=True)
class RuleProblem:
    where: str  # file (and rule title) the problem belongs to
    reason: str


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[CompiledRule, ...]
    problems: tuple[RuleProblem, ...] = field(default=())


def _logsource_table() -> list[dict[str, Any]]:
    text = resources.files("secmon.detect.rules").joinpath("logsources.yml").read_text(encoding="utf-8")
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def logsource_query(rule: SigmaRule, table: list[dict[str, Any]]) -> Query | None:
    wanted = {k: v for k, v in (("category", rule.logsource.category), ("product", rule.logsource.product),
                                ("service", rule.logsource.service)) if v}
    best: dict[str, Any] | None = None
    for entry in table:
        keys = entry["logsource"]
        if all(wanted.get(k) == v for k, v in keys.items()) and (best is None or len(keys) > len(best["logsource"])):
            best = entry
    if best is None:
        return None
    return and_([{"term": {k: {"value": v}}} for k, v in best["conditions"].items()])


def _options(rule: SigmaRule | SigmaCorrelationRule) -> dict[str, Any]:
    """The rule's `secmon:` section: our metadata, which other Sigma tools ignore."""
    options = rule.custom_attributes.get("secmon") or {}
    if not isinstance(options, dict):
        raise UnsupportedRule("the 'secmon' section must be a mapping")
    return options


def _tags(rule: SigmaRule | SigmaCorrelationRule) -> tuple[str, ...]:
    return tuple(f"{t.namespace}.{t.name}" for t in rule.tags)


def _detection_query(rule: SigmaRule, table: list[dict[str, Any]]) -> Query:
    parts = [compile_condition(cond.parse()) for cond in rule.detection.parsed_condition]
    query = parts[0] if len(parts) == 1 else or_(parts)
    source = logsource_query(rule, table)
    return and_([source, query]) if source else query


def _compile_single(rule: SigmaRule, path: Path, table: list[dict[str, Any]]) -> CompiledRule:
    options = _options(rule)
    return CompiledRule(
        id=str(rule.id or rule.name or rule.title), title=rule.title, description=rule.description or "",
        severity=Severity(rule.level.name.lower()) if rule.level else Severity.MEDIUM, tags=_tags(rule),
        path=str(path), query=_detection_query(rule, table),
        group_by=tuple(options.get("group-by", ("host.hostname",))), threshold=1,
        timespan=parse_duration(options["suppress"]) if "suppress" in options else DEFAULT_SUPPRESS, kind="single",
    )


def _compile_correlation(rule: SigmaCorrelationRule, path: Path, table: list[dict[str, Any]]) -> CompiledRule:
    if rule.type is not SigmaCorrelationType.EVENT_COUNT:
        raise UnsupportedRule(f"correlation type {rule.type.name.lower()} is not supported yet")
    if rule.condition.op is not SigmaCorrelationConditionOperator.GTE:
        raise UnsupportedRule("event_count correlations support only a 'gte' condition so far")
    referenced = [ref.rule for ref in rule.rules]
    if not all(isinstance(r, SigmaRule) for r in referenced):
        raise UnsupportedRule("correlations of correlations are not supported yet")
    queries = [_detection_query(r, table) for r in referenced if isinstance(r, SigmaRule)]
    return CompiledRule(
        id=str(rule.id or rule.name or rule.title), title=rule.title, description=rule.description or "",
        severity=Severity(rule.level.name.lower()) if rule.level else Severity.HIGH, tags=_tags(rule),
        path=str(path), query=queries[0] if len(queries) == 1 else or_(queries),
        group_by=tuple(rule.group_by or ()), threshold=int(rule.condition.count),
        timespan=timedelta(seconds=rule.timespan.seconds), kind="event_count",
    )


def load_rule_file(path: Path, table: list[dict[str, Any]] | None = None) -> RuleSet:
    table = table if table is not None else _logsource_table()
    try:
        collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"), collect_errors=True)
        collection.resolve_rule_references()
    except (OSError, UnicodeDecodeError, SigmaError, yaml.YAMLError) as exc:
        return RuleSet((), (RuleProblem(str(path), str(exc)),))
    rules, problems = [], []
    used = {id(ref.rule) for r in collection.rules if isinstance(r, SigmaCorrelationRule) for ref in r.rules}
    for rule in collection.rules:
        where = f"{path}: {rule.title or '(untitled)'}"
        if rule.errors:
            problems.extend(RuleProblem(where, str(err)) for err in rule.errors)
            continue
        if id(rule) in used and rule.custom_attributes.get("generate") is not True:
            continue  # a building block of a correlation: not an alert of its own (Sigma's `generate`)
        try:
            if isinstance(rule, SigmaCorrelationRule):
                rules.append(_compile_correlation(rule, path, table))
            else:
                rules.append(_compile_single(rule, path, table))
        except (UnsupportedRule, SigmaError, ValueError) as exc:
            problems.append(RuleProblem(where, str(exc)))
    return RuleSet(tuple(rules), tuple(problems))


def load_rules(paths: list[Path]) -> RuleSet:
    table = _logsource_table()
    rules: list[CompiledRule] = []
    problems: list[RuleProblem] = []
    for root in paths:
        files = sorted(root.rglob("*.yml")) if root.is_dir() else [root]
        if not root.exists():
            problems.append(RuleProblem(str(root), "no such file or folder"))
            continue
        for path in files:
            loaded = load_rule_file(path, table)
            rules.extend(loaded.rules)
            problems.extend(loaded.problems)
    return RuleSet(tuple(rules), tuple(problems))
