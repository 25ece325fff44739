"""Compiled rules as the rest of secmon sees them, without pySigma: what a scan runs.

`load.py` makes them from Sigma files (importing pySigma, which takes a while);
`cache.py` gives them back from an earlier run without it. Both gather the rules
of many files the same way (`gather`): one rule id, one rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from secmon.model import Severity

if TYPE_CHECKING:
    from secmon.detect.sigma.compile import Query
    from secmon.detect.windowing.correlate import Correlation

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
    # events with a keyword value too long to index that `query` may therefore miss (compile.py,
    # "Long values"): the cluster also fetches these and findings.py checks them exactly
    long_query: Query | None = None
    condition: tuple[str, float] = ("gte", 1)  # correlation condition: operator and number
    value_field: str | None = None  # value_count / value_sum / value_avg: the field aggregated
    correlation: Correlation | None = None  # what the windowing evaluates (None: single rule or event_count >= N)
    options: Mapping[str, Any] = field(default_factory=dict)  # the rule's `secmon:` section
    # (language, title, description) beyond the English ones, from `secmon: {vi: {title, description}}`
    translations: tuple[tuple[str, str, str], ...] = ()
    notes: tuple[str, ...] = ()  # what `rules validate` says besides "ok" (kinds of event it skips, ...)
    unmapped: str = ""  # the logsource, when secmon does not map it (Logsources.known): not run by default

    @property
    def fields(self) -> tuple[str, ...]:
        """Fields the windowing code reads from each hit, besides the timestamp."""
        extra = (self.value_field,) if self.value_field else ()
        return tuple(dict.fromkeys((*self.group_by, *extra, *self.refine_fields)))


@dataclass(frozen=True)
class RuleProblem:
    where: str  # file:line:column (and rule title) the problem belongs to
    reason: str


UnmappedPolicy = Literal["skip", "run"]


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[CompiledRule, ...]  # the rules to run
    problems: tuple[RuleProblem, ...] = field(default=())
    # Compiled, but not run: their logsource is not mapped, so their query would select more than
    # the events they are about (a `category: database` rule would run on every event).
    skipped: tuple[CompiledRule, ...] = field(default=())

    @property
    def unmapped(self) -> tuple[CompiledRule, ...]:
        """Every rule with an unmapped logsource, whether skipped or run."""
        return self.skipped + tuple(r for r in self.rules if r.unmapped)


def unmapped_note(ruleset: RuleSet) -> list[str]:
    """What a scan says about the rules with an unmapped logsource: how many, which logsources, why."""
    if not ruleset.unmapped:
        return []
    kinds: dict[str, int] = {}
    for rule in ruleset.unmapped:
        kinds[rule.unmapped] = kinds.get(rule.unmapped, 0) + 1
    listed = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:5])
    listed += ", ..." if len(kinds) > 5 else ""
    if ruleset.skipped:
        return [f"{len(ruleset.skipped)} rules not run: their logsource is not mapped, so they would select more "
                f"than their events ({listed}); `secmon rules validate` lists them, "
                "`--unmapped-logsources run` runs them"]
    return [f"{len(ruleset.unmapped)} rules with an unmapped logsource run on more than their events "
            f"(--unmapped-logsources run): {listed}"]


def rule_files(root: Path) -> list[Path]:
    """Sigma rule files; anomaly detectors (`anomaly/` folders) are not Sigma and load elsewhere."""
    if not root.is_dir():
        return [root]
    return sorted(p for p in [*root.rglob("*.yml"), *root.rglob("*.yaml")]
                  if "anomaly" not in p.relative_to(root).parts[:-1])


def gather(paths: list[Path], unmapped: UnmappedPolicy, load_file: Callable[[Path], RuleSet]) -> RuleSet:
    """The rules of every file under `paths`, each file read by `load_file`; a rule id seen before is
    a problem, not a second rule; rules with an unmapped logsource run only with `unmapped="run"`."""
    rules: list[CompiledRule] = []
    problems: list[RuleProblem] = []
    seen: dict[str, str] = {}  # rule id -> the file that defined it first
    for root in paths:
        if not root.exists():
            problems.append(RuleProblem(str(root), "no such file or folder"))
            continue
        for path in rule_files(root):
            loaded = load_file(path)
            problems.extend(loaded.problems)
            for rule in loaded.rules:
                if rule.id in seen:  # the same rule twice would raise the same incidents twice
                    problems.append(RuleProblem(f"{path}: {rule.title}", f"rule id {rule.id} is already defined in "
                                                                         f"{seen[rule.id]}; this copy is not run"))
                    continue
                seen[rule.id] = rule.path
                rules.append(rule)
    run = [r for r in rules if unmapped == "run" or not r.unmapped]
    return RuleSet(tuple(run), tuple(problems), tuple(r for r in rules if r.unmapped and unmapped != "run"))
