"""Load Sigma rule files into compiled rules, collecting every error instead of stopping.

One bad rule never stops the others: `load_rules` returns the rules that
compiled and a list of problems (file:line:column, rule title, reason) for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationCondition, SigmaCorrelationRule, SigmaCorrelationType
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from secmon.config import parse_duration
from secmon.detect.rules.compile import (
    Compiled,
    FieldContext,
    Query,
    UnsupportedRule,
    and_,
    compile_conditions,
    or_,
    query_fields,
)
from secmon.detect.rules.correlate import Correlation, Leaf
from secmon.detect.rules.pipeline import (
    Logsources,
    logsources,
    processing_pipeline,
    register_modifier_aliases,
)
from secmon.model import Severity

DEFAULT_SUPPRESS = timedelta(hours=1)
KINDS = ("single", "event_count", "value_count", "temporal", "temporal_ordered", "value_sum", "value_avg")


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to run: a query plus how matches become findings."""

    id: str
    title: str
    description: str
    severity: Severity
    tags: tuple[str, ...]
    path: str
    query: Query  # selects the matching events (a superset when `refine` is set)
    group_by: tuple[str, ...]  # findings are per agency and per these fields
    threshold: int  # matches within `timespan` needed for a finding (single and event_count >= N)
    timespan: timedelta
    kind: str  # one of KINDS
    refine: Query | None = None  # exact in-process condition for hits (|fieldref), see compile.py
    refine_fields: tuple[str, ...] = ()
    condition: tuple[str, float] = ("gte", 1)  # correlation condition: operator and number
    value_field: str | None = None  # value_count / value_sum / value_avg: the field aggregated
    correlation: Correlation | None = None  # what the windowing evaluates (None: single rule or event_count >= N)
    options: Mapping[str, Any] = field(default_factory=dict)  # the rule's `secmon:` section
    # (language, title, description) beyond the English ones, from `secmon: {vi: {title, description}}`
    translations: tuple[tuple[str, str, str], ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        """Fields the windowing code reads from each hit, besides the timestamp."""
        extra = (self.value_field,) if self.value_field else ()
        return tuple(dict.fromkeys((*self.group_by, *extra, *self.refine_fields)))


@dataclass(frozen=True)
class RuleProblem:
    where: str  # file:line:column (and rule title) the problem belongs to
    reason: str


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[CompiledRule, ...]
    problems: tuple[RuleProblem, ...] = field(default=())


def _options(rule: SigmaRule | SigmaCorrelationRule) -> dict[str, Any]:
    """The rule's `secmon:` section: our metadata, which other Sigma tools ignore."""
    options = rule.custom_attributes.get("secmon") or {}
    if not isinstance(options, dict):
        raise UnsupportedRule("the 'secmon' section must be a mapping")
    return options


def _translations(options: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """`secmon: {vi: {title: ..., description: ...}}`: the rule in other languages, for alert emails."""
    found = []
    for language in ("vi",):
        text = options.get(language)
        if text is None:
            continue
        if not isinstance(text, dict) or not isinstance(text.get("title"), str) or not text["title"].strip():
            raise UnsupportedRule(f"secmon.{language} must be a mapping with a non-empty 'title' "
                                  "(and optionally 'description')")
        description = text.get("description", "")
        if not isinstance(description, str):
            raise UnsupportedRule(f"secmon.{language}.description must be text")
        found.append((language, text["title"].strip(), description.strip()))
    return tuple(found)


def _tags(rule: SigmaRule | SigmaCorrelationRule) -> tuple[str, ...]:
    return tuple(f"{t.namespace}.{t.name}" for t in rule.tags)


def _severity(rule: SigmaRule | SigmaCorrelationRule, default: Severity, options: Mapping[str, Any]) -> Severity:
    override = options.get("severity")
    if override is not None:
        try:
            return Severity(str(override))
        except ValueError:
            raise UnsupportedRule(f"secmon.severity {override!r} is not one of "
                                  f"{', '.join(s.value for s in Severity)}") from None
    return Severity(rule.level.name.lower()) if rule.level else default


def detection(rule: SigmaRule, sources: Logsources) -> Compiled:
    """The rule's condition(s) and logsource as Query DSL (pipeline already applied)."""
    context = FieldContext(alternatives=lambda f: sources.field_alternatives(rule.logsource, f),
                           keyword_fields=tuple(sources.keyword_fields(rule.logsource)))
    compiled = compile_conditions([cond.parse() for cond in rule.detection.parsed_condition], context)
    source = sources.query(rule.logsource)
    if source is None:
        return compiled
    refine = and_([source, compiled.refine]) if compiled.refine else None
    return Compiled(and_([source, compiled.query]), refine, tuple(sorted(query_fields(refine))) if refine else ())


def _default_group(rule: SigmaRule) -> tuple[str, ...]:
    # One incident per host: Windows events name it host.name (winlog.py), syslog pipelines host.hostname.
    return ("host.name",) if rule.logsource.product == "windows" else ("host.hostname",)


def _compile_single(rule: SigmaRule, path: Path, sources: Logsources) -> CompiledRule:
    options = _options(rule)
    compiled = detection(rule, sources)
    return CompiledRule(
        id=str(rule.id or rule.name or rule.title), title=rule.title, description=rule.description or "",
        severity=_severity(rule, Severity.MEDIUM, options), tags=_tags(rule), path=str(path), query=compiled.query,
        group_by=tuple(options.get("group-by", _default_group(rule))), threshold=1,
        timespan=parse_duration(options["suppress"]) if "suppress" in options else DEFAULT_SUPPRESS, kind="single",
        refine=compiled.refine, refine_fields=compiled.refine_fields, options=options,
        translations=_translations(options),
    )


def _correlation(rule: SigmaCorrelationRule, sources: Logsources, depth: int = 0) -> Correlation:
    kind = rule.type.name.lower()
    if kind not in KINDS:
        raise UnsupportedRule(f"correlation type {kind} is not supported (supported: {', '.join(KINDS[1:])})")
    if rule.aliases and rule.aliases.aliases:
        raise UnsupportedRule("correlation field aliases are not supported yet")
    if depth > 3:
        raise UnsupportedRule("correlations nested more than three deep")
    inputs: list[Leaf | Correlation] = []
    for ref in rule.rules or ():
        target = ref.rule
        if isinstance(target, SigmaCorrelationRule):
            inputs.append(_correlation(target, sources, depth + 1))
            continue
        compiled = detection(target, sources)
        name = str(target.name or target.id or ref.reference)
        inputs.append(Leaf(name, {"bool": {"filter": [compiled.query], "_name": name}}, compiled.refine))
    condition = rule.condition
    if condition is not None and not isinstance(condition, SigmaCorrelationCondition):
        raise UnsupportedRule("extended (boolean) correlation conditions are not supported yet")
    if condition is None:  # temporal correlations may omit it: all referenced rules
        op, count = "gte", float(len(inputs))
    else:
        op, count = condition.op.name.lower(), float(condition.count)
    value_field = None
    if rule.type in (SigmaCorrelationType.VALUE_COUNT, SigmaCorrelationType.VALUE_SUM, SigmaCorrelationType.VALUE_AVG):
        ref_field = condition.fieldref if condition else None
        if not isinstance(ref_field, str):
            raise UnsupportedRule(f"{kind} needs exactly one condition field")
        value_field = sources.map_field(_logsource(rule), ref_field)
    return Correlation(str(rule.name or rule.id or rule.title), kind, op, count,
                       timedelta(seconds=rule.timespan.seconds), value_field, tuple(inputs))


def _logsource(rule: SigmaCorrelationRule) -> Any:
    target = (rule.rules or [])[0].rule
    return _logsource(target) if isinstance(target, SigmaCorrelationRule) else target.logsource


def _compile_correlation(rule: SigmaCorrelationRule, path: Path, sources: Logsources) -> CompiledRule:
    correlation = _correlation(rule, sources)
    leaves = list({leaf.name: leaf for leaf in correlation.leaves()}.values())
    group_by = tuple(sources.map_field(_logsource(rule), g) for g in (rule.group_by or ()))
    options = _options(rule)
    simple = correlation.kind == "event_count" and correlation.op == "gte" and all(
        isinstance(i, Leaf) and i.refine is None for i in correlation.inputs)
    return CompiledRule(
        id=str(rule.id or rule.name or rule.title), title=rule.title, description=rule.description or "",
        severity=_severity(rule, Severity.HIGH, options), tags=_tags(rule), path=str(path),
        query=or_([leaf.query for leaf in leaves]), group_by=group_by,
        threshold=int(correlation.count) if simple else 1, timespan=correlation.timespan, kind=correlation.kind,
        condition=(correlation.op, correlation.count), value_field=correlation.value_field,
        correlation=None if simple else correlation, options=options, translations=_translations(options),
        refine_fields=tuple(sorted({f for leaf in leaves if leaf.refine for f in query_fields(leaf.refine)})),
    )


def _doc_lines(text: str) -> list[int]:
    """1-based line where each YAML document of the file starts."""
    starts, line = [1], 1
    for raw in text.splitlines():
        if raw.startswith("---") and line > 1:
            starts.append(line + 1)
        line += 1
    return starts


def _locate(text: str, start: int, reason: str) -> tuple[int, int]:
    """Best line:column for a problem: the first quoted name of the reason found in the rule."""
    lines = text.splitlines()
    for needle in re.findall(r"'([^']+)'", reason):
        leaf = needle.rsplit(".", 1)[-1]
        for n in range(start - 1, len(lines)):
            col = lines[n].find(leaf)
            if col >= 0:
                return n + 1, col + 1
    return start, 1


def load_rule_file(path: Path, sources: Logsources | None = None) -> RuleSet:
    sources = sources or logsources()
    register_modifier_aliases()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return RuleSet((), (RuleProblem(str(path), f"cannot read the file: {exc}"),))
    try:
        collection = SigmaCollection.from_yaml(text, collect_errors=True)
        collection.resolve_rule_references()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        return RuleSet((), (RuleProblem(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}"),))
    except SigmaError as exc:
        return RuleSet((), (RuleProblem(_sigma_where(path, exc, 1), str(exc)),))
    starts = _doc_lines(text)
    rules: list[CompiledRule] = []
    problems: list[RuleProblem] = []
    used = {id(ref.rule) for r in collection.rules if isinstance(r, SigmaCorrelationRule) for ref in r.rules or ()}
    # Field mapping first, on every rule: a correlation compiles the rules it references.
    broken: dict[int, str] = {}
    for rule in collection.rules:
        if not rule.errors:
            try:
                processing_pipeline().apply(rule)
            except (SigmaError, ValueError) as exc:
                broken[id(rule)] = str(exc)
    for index, rule in enumerate(collection.rules):
        start = starts[index] if index < len(starts) else 1
        title = rule.title or "(untitled)"
        if rule.errors:
            problems.extend(RuleProblem(f"{_sigma_where(path, err, start)}: {title}", str(err)) for err in rule.errors)
            continue
        if id(rule) in broken:
            line, column = _locate(text, start, broken[id(rule)])
            problems.append(RuleProblem(f"{path}:{line}:{column}: {title}", broken[id(rule)]))
            continue
        if id(rule) in used and rule.custom_attributes.get("generate") is not True and not getattr(rule, "generate", False):
            continue  # a building block of a correlation: not an alert of its own (Sigma's `generate`)
        try:
            if isinstance(rule, SigmaCorrelationRule):
                if any(id(ref.rule) in broken for ref in rule.rules or ()):
                    raise UnsupportedRule("a rule it correlates does not compile (reported above)")
                rules.append(_compile_correlation(rule, path, sources))
            else:
                rules.append(_compile_single(rule, path, sources))
        except (UnsupportedRule, SigmaError, ValueError) as exc:
            line, column = _locate(text, start, str(exc))
            problems.append(RuleProblem(f"{path}:{line}:{column}: {title}", str(exc)))
    return RuleSet(tuple(rules), tuple(problems))


def _sigma_where(path: Path, error: Exception, start: int) -> str:
    source = getattr(error, "source", None)
    line = getattr(source, "line", None)
    column = getattr(source, "char", None)
    if line:
        return f"{path}:{line}" + (f":{column}" if column else "")
    return f"{path}:{start}"


def rule_files(root: Path) -> list[Path]:
    """Sigma rule files; anomaly detectors (`anomaly/` folders) are not Sigma and load elsewhere."""
    if not root.is_dir():
        return [root]
    return sorted(p for p in [*root.rglob("*.yml"), *root.rglob("*.yaml")]
                  if "anomaly" not in p.relative_to(root).parts[:-1])


def load_rules(paths: list[Path]) -> RuleSet:
    sources = logsources()
    rules: list[CompiledRule] = []
    problems: list[RuleProblem] = []
    for root in paths:
        if not root.exists():
            problems.append(RuleProblem(str(root), "no such file or folder"))
            continue
        for path in rule_files(root):
            loaded = load_rule_file(path, sources)
            rules.extend(loaded.rules)
            problems.extend(loaded.problems)
    return RuleSet(tuple(rules), tuple(problems))
