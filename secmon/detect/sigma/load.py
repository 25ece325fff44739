"""Load Sigma rule files into compiled rules, collecting every error instead of stopping.

One bad rule never stops the others: `load_rules` returns the rules that
compiled and a list of problems (file:line:column, rule title, reason) for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationCondition, SigmaCorrelationRule, SigmaCorrelationType
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from secmon.types import parse_duration
from secmon.detect.filestamp import Signature, digest_of, signature
from secmon.detect.sigma.compile import (
    Compiled,
    FieldContext,
    Query,
    UnsupportedRule,
    and_,
    compile_conditions,
    long_values_query,
    or_,
    query_fields,
)
from secmon.detect.compiled import (  # noqa: F401 - re-exported: where they were first defined
    KINDS,
    CompiledRule,
    RuleProblem,
    RuleSet,
    UnmappedPolicy,
    gather,
    rule_files,
    unmapped_note,
)
from secmon.detect.windowing.correlate import Correlation, Leaf
from secmon.detect.fields import field_types
from secmon.detect.sigma.pipeline import (
    Logsources,
    logsources,
    processing_pipeline,
    register_modifier_aliases,
)
from secmon.errors import InputError
from secmon.model import Severity
from secmon.yamlio import Located, load_all_text, read_text

DEFAULT_SUPPRESS = timedelta(hours=1)
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


def detection(rule: SigmaRule, sources: Logsources) -> tuple[Compiled, tuple[str, ...]]:
    """The rule's condition(s) and logsource as Query DSL (pipeline already applied), and notes on
    the kinds of event it cannot run on (a Security-audit variant its values do not translate to)."""
    conditions = [cond.parse() for cond in rule.detection.parsed_condition]
    keyword_fields = tuple(sources.keyword_fields(rule.logsource))
    parts: list[tuple[Query | None, Compiled]] = []
    notes: list[str] = []
    for n, variant in enumerate(sources.variants(rule.logsource)):
        context = FieldContext(alternatives=variant.alternatives(sources, rule.logsource),
                               keyword_fields=keyword_fields, translate=variant.translate)
        try:
            parts.append((variant.query, compile_conditions(conditions, context)))
        except UnsupportedRule as exc:
            if n == 0:
                raise  # the rule's own kind of event: the rule fails
            notes.append(f"does not run on {variant.label} events: {exc}")
    unsearchable = sorted({f for _, compiled in parts for f in query_fields(compiled.query)} & field_types().not_indexed)
    if unsearchable:  # stored, never indexed: no value of them can match, short or long
        notes.append(f"reads {', '.join(unsearchable)}, stored but not searchable: those comparisons never match")
    longs = [and_([q for q in (source, long) if q is not None]) for source, long in
             ((source, long_values_query(or_([q for q in (compiled.query, compiled.refine) if q is not None])))
              for source, compiled in parts) if long is not None]
    long_query = or_(longs) if longs else None
    if len(parts) == 1 and parts[0][0] is None:
        return replace(parts[0][1], long_query=long_query), tuple(notes)
    query = or_([and_([source, compiled.query]) if source else compiled.query for source, compiled in parts])
    if not any(compiled.refine for _, compiled in parts):
        return Compiled(query, None, (), long_query), tuple(notes)
    refine = or_([and_([q for q in (source, compiled.refine or compiled.query) if q is not None])
                  for source, compiled in parts])
    return Compiled(query, refine, tuple(sorted(query_fields(refine))), long_query), tuple(notes)


def _default_group(rule: SigmaRule) -> tuple[str, ...]:
    # One incident per host: Windows events name it host.name (winlog.py), syslog pipelines host.hostname.
    return ("host.name",) if rule.logsource.product == "windows" else ("host.hostname",)


def _compile_single(rule: SigmaRule, path: Path, sources: Logsources) -> CompiledRule:
    options = _options(rule)
    compiled, notes = detection(rule, sources)
    return CompiledRule(
        id=str(rule.id or rule.name or rule.title), title=rule.title, description=rule.description or "",
        severity=_severity(rule, Severity.MEDIUM, options), tags=_tags(rule), path=str(path), query=compiled.query,
        group_by=tuple(options.get("group-by", _default_group(rule))), threshold=1,
        timespan=parse_duration(options["suppress"]) if "suppress" in options else DEFAULT_SUPPRESS, kind="single",
        refine=compiled.refine, refine_fields=compiled.refine_fields, long_query=compiled.long_query,
        options=options,
        translations=_translations(options), notes=notes, unmapped=_unmapped(rule.logsource, sources),
    )


def _unmapped(logsource: Any, sources: Logsources) -> str:
    """The logsource as written, when it is not mapped; "" when it is."""
    if sources.known(logsource):
        return ""
    keys = [f"{k}: {v}" for k, v in (("product", logsource.product), ("category", logsource.category),
                                     ("service", logsource.service)) if v]
    return "{" + ", ".join(keys) + "}"


def _correlation(rule: SigmaCorrelationRule, sources: Logsources, notes: list[str], depth: int = 0) -> Correlation:
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
            inputs.append(_correlation(target, sources, notes, depth + 1))
            continue
        compiled, leaf_notes = detection(target, sources)
        name = str(target.name or target.id or ref.reference)
        notes += [f"{name}: {note}" for note in leaf_notes]
        inputs.append(Leaf(name, {"bool": {"filter": [compiled.query], "_name": name}}, compiled.refine,
                           compiled.long_query))
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


def _logsources(rule: SigmaCorrelationRule) -> list[Any]:
    """The logsources of every rule a correlation (and the correlations it uses) refers to."""
    found: list[Any] = []
    for ref in rule.rules or ():
        target = ref.rule
        found += _logsources(target) if isinstance(target, SigmaCorrelationRule) else [target.logsource]
    return found


def _logsource(rule: SigmaCorrelationRule) -> Any:
    target = (rule.rules or [])[0].rule
    return _logsource(target) if isinstance(target, SigmaCorrelationRule) else target.logsource


def _compile_correlation(rule: SigmaCorrelationRule, path: Path, sources: Logsources) -> CompiledRule:
    notes: list[str] = []
    correlation = _correlation(rule, sources, notes)
    leaves = list({leaf.name: leaf for leaf in correlation.leaves()}.values())
    group_by = tuple(sources.map_field(_logsource(rule), g) for g in (rule.group_by or ()))
    options = _options(rule)
    notes += _long_group_note(group_by, correlation.value_field)
    simple = correlation.kind == "event_count" and correlation.op == "gte" and all(
        isinstance(i, Leaf) and i.refine is None for i in correlation.inputs)
    return CompiledRule(
        id=str(rule.id or rule.name or rule.title), title=rule.title, description=rule.description or "",
        severity=_severity(rule, Severity.HIGH, options), tags=_tags(rule), path=str(path),
        query=or_([leaf.query for leaf in leaves]), group_by=group_by,
        threshold=int(correlation.count) if simple else 1, timespan=correlation.timespan, kind=correlation.kind,
        condition=(correlation.op, correlation.count), value_field=correlation.value_field,
        correlation=None if simple else correlation, options=options, translations=_translations(options),
        notes=tuple(notes), unmapped=next((u for u in (_unmapped(s, sources) for s in _logsources(rule)) if u), ""),
        refine_fields=tuple(sorted({f for leaf in leaves if leaf.refine for f in query_fields(leaf.refine)})),
        long_query=or_(longs) if (longs := [leaf.long_query for leaf in leaves if leaf.long_query]) else None,
    )


def _long_group_note(group_by: tuple[str, ...], value_field: str | None) -> list[str]:
    """What long values still cannot do (compile.py, "Long values"): a correlation groups and
    counts by doc values, which a keyword value longer than ignore_above does not have."""
    types = field_types()
    fields = [f for f in (*group_by, *((value_field,) if value_field else ())) if types.type_of(f) is None]
    if not fields:
        return []
    limits = ", ".join(f"{f} over {types.limit(f)}" for f in fields)
    return [f"events whose values are too long to index ({limits} characters) are not grouped or counted"]


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


def _documents(path: Path) -> tuple[str, list[Located], list[RuleProblem]]:
    """The file's text and rule documents, each a mapping; anything else is a problem of this file."""
    try:  # our loader, not pySigma's safe_load: alias bombs are refused with their line
        text = read_text(path)
        docs = list(load_all_text(text, str(path)))
    except InputError as exc:
        return "", [], [RuleProblem(str(exc.location or path), exc.message)]
    kept: list[Located] = []
    problems: list[RuleProblem] = []
    for doc in docs:
        if doc.data is None:  # an empty document, e.g. after a trailing '---'
            continue
        if isinstance(doc.data, dict):
            kept.append(doc)
            continue
        found = "a list" if isinstance(doc.data, list) else f"{type(doc.data).__name__} {str(doc.data)[:40]!r}"
        problems.append(RuleProblem(str(doc.loc()), f"a Sigma rule is a YAML mapping (title, logsource, "
                                                     f"detection, ...); this document is {found}"))
    if not kept and not problems:
        problems.append(RuleProblem(str(path), "empty: the file holds no YAML document, so no rule"))
    return text, kept, problems


def _makes_rule(data: dict[Any, Any]) -> bool:
    """Whether pySigma turns this document into a rule (not a filter, nor a global/reset action)."""
    action = data.get("action")  # the same tests, in the same order, as SigmaCollection.from_dicts
    return action == "repeat" or (action is None and ("correlation" in data or "filter" not in data))


def _collection(docs: list[Located]) -> tuple[SigmaCollection, dict[int, int]]:
    """pySigma's collection of the documents, and the line each rule starts at (by id of the rule)."""
    # References are resolved after the lines are recorded: resolving reorders the rules.
    collection = SigmaCollection.from_dicts([d.data for d in docs], collect_errors=True, resolve_references=False)
    starts = [d.loc().line or 1 for d in docs if _makes_rule(d.data)]
    lines = {id(rule): line for rule, line in zip(collection.rules, starts)} if len(starts) == len(
        collection.rules) else {}
    collection.resolve_rule_references()
    return collection, lines


def load_rule_file(path: Path, sources: Logsources | None = None) -> RuleSet:
    """The rules of one file; whatever is wrong with the file or a rule in it is a problem, never an exception."""
    sources = sources or logsources()
    register_modifier_aliases()
    text, docs, problems = _documents(path)
    if not docs:
        return RuleSet((), tuple(problems))
    try:
        collection, lines = _collection(docs)
    except SigmaError as exc:
        return RuleSet((), (*problems, RuleProblem(_sigma_where(path, exc, None), str(exc))))
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as exc:
        # pySigma assumes well-formed fields (a text `id`, text detection keys) and fails with Python
        # errors on other shapes; hostile community files must not stop the other files.
        return RuleSet((), (*problems, RuleProblem(str(path), f"pySigma cannot read this file "
                                                              f"({type(exc).__name__}: {exc})")))
    attached = {id(err) for rule in collection.rules for err in rule.errors}
    problems += [RuleProblem(_sigma_where(path, err, None), str(err))
                 for err in collection.errors if id(err) not in attached]  # e.g. an unknown `action`
    rules: list[CompiledRule] = []
    used = {id(ref.rule) for r in collection.rules if isinstance(r, SigmaCorrelationRule) for ref in r.rules or ()}
    # Field mapping first, on every rule: a correlation compiles the rules it references.
    broken: dict[int, str] = {}
    for rule in collection.rules:
        if not rule.errors:
            try:
                processing_pipeline().apply(rule)
            except (SigmaError, ValueError) as exc:
                broken[id(rule)] = str(exc)
    for rule in collection.rules:
        start = lines.get(id(rule), 1)
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
    if not rules and not problems:  # never "0 rules, 0 problems" for a file that was read
        problems.append(RuleProblem(str(path), "no rule to run: the file holds only Sigma filters or "
                                               "collection actions, which apply to rules of their own file"))
    return RuleSet(tuple(rules), tuple(problems))


def _sigma_where(path: Path, error: Exception, start: int | None) -> str:
    source = getattr(error, "source", None)
    line = getattr(source, "line", None)
    column = getattr(source, "char", None)
    if line:
        return f"{path}:{line}" + (f":{column}" if column else "")
    return f"{path}:{start}" if start else str(path)


# What each rule file compiled to in this process: path as given -> (its stat signature, the SHA-256
# of its bytes, the logsources it was compiled with, its rules and problems); one entry per path, the
# latest. Every scan loads the whole library again (the scheduler at each scan interval, each CLI
# command, a test session dozens of times) and pySigma needs seconds for 231 rules; a file's result
# depends only on its bytes and on code and tables that do not change inside a running process. A file
# whose size, mtime, ctime and inode are those of the entry is not read again (as git's index and make
# decide); one whose signature moved is read and hashed once, and compiled again only if its bytes did
# change. Sharing the result is safe: rules and problems are frozen, and no caller modifies a query in
# place (queries are combined into new dicts: compile.and_/or_).
_COMPILED: dict[str, tuple[Signature, str, Logsources, RuleSet]] = {}


def load_rule_file_once(path: Path, sources: Logsources, digest: str | None = None) -> RuleSet:
    """load_rule_file, or what it answered in this process for the same file (see _COMPILED);
    `digest`, the SHA-256 of its bytes when the caller has it (hashed once)."""
    before = signature(path)
    known = _COMPILED.get(str(path))
    if before is not None and known is not None and known[2] is sources:
        if known[0] == before:
            return known[3]
        digest = digest or digest_of(path)
        if digest == known[1]:  # touched, not changed
            _COMPILED[str(path)] = (before, known[1], known[2], known[3])
            return known[3]
    digest = digest or digest_of(path)
    loaded = load_rule_file(path, sources)
    if digest is not None and before is not None and signature(path) == before:  # unchanged while it compiled
        _COMPILED[str(path)] = (before, digest, sources, loaded)
    return loaded


def load_rules(paths: list[Path], unmapped: UnmappedPolicy = "skip") -> RuleSet:
    """Every rule under `paths`; those with an unmapped logsource run only with `unmapped="run"`
    (they are in `skipped` otherwise, for the caller to report). A file already compiled in this
    process with the same bytes is not compiled again (see _COMPILED)."""
    sources = logsources()
    return gather(paths, unmapped, lambda path: load_rule_file_once(path, sources))
