"""`secmon rules list | validate | test | show`: work with Sigma rule files without a cluster.

Every command takes files or folders (default: the config's `rules`), reports every
problem as `file:line:column: rule: reason` on stderr, never stops at the first,
and exits 4 (ExitCode.INPUT) when there was any. `validate` also names the rules whose
logsource is not mapped (scans skip them unless told to run them) and the rules with notes
(kinds of event they cannot run on, regexes outside RE2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from secmon.cli.context import Exit, settings_of
from secmon.cli.output import table
from secmon.errors import ExitCode, InputError

if TYPE_CHECKING:  # commands import detect (pySigma) when they run: other commands start faster
    from secmon.detect.sigma.load import RuleSet


def _targets(ctx: click.Context, paths: tuple[Path, ...]) -> list[Path]:
    return list(paths) or [settings_of(ctx).resolve(p) for p in settings_of(ctx).rules]


def _report(problems: list[tuple[str, str]]) -> None:
    for where, reason in problems:
        click.echo(f"{where}: {reason}", err=True)


def _report_and_exit(ruleset: RuleSet) -> None:
    """Every problem on stderr; exit 4 when there were any (after the good rules were shown)."""
    _report([(p.where, p.reason) for p in ruleset.problems])
    if ruleset.problems:
        raise Exit(ExitCode.INPUT)


PATHS = click.argument("paths", nargs=-1, type=click.Path(path_type=Path, exists=True))


@click.group()
def rules() -> None:
    """Work with detection rules (Sigma files)."""


@rules.command("validate")
@PATHS
@click.option("--quiet", "-q", is_flag=True, help="Only problems, notes, unmapped logsources and totals.")
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...], quiet: bool) -> None:
    """Load and compile rules; report a result per rule, every problem, and what will not run."""
    from secmon.detect.sigma.load import load_rules
    from secmon.detect.inprocess.match import regex_fallbacks

    ruleset = load_rules(_targets(ctx, paths))
    noted = 0
    for rule in ruleset.rules:
        notes = [*rule.notes, *(f"runs a regex outside RE2, bounded in time: {why}"
                                for why in regex_fallbacks(rule.refine or rule.query))]
        noted += bool(notes)
        if not quiet:
            click.echo(f"ok      {rule.path}: {rule.title} [{rule.kind}]")
        for note in notes:
            click.echo(f"NOTE    {rule.path}: {rule.title}: {note}")
    for rule in ruleset.skipped:
        click.echo(f"UNMAPPED {rule.path}: {rule.title}: logsource {rule.unmapped} is not mapped "
                   "(it would select more than its events): not run")
    if not quiet:
        for problem in ruleset.problems:
            click.echo(f"FAILED  {problem.where}: {problem.reason}")
    else:
        _report([(p.where, p.reason) for p in ruleset.problems])
    compiled = len(ruleset.rules) + len(ruleset.skipped)
    total = compiled + len(ruleset.problems)
    share = 100.0 * compiled / total if total else 100.0
    click.echo(f"{total} rules: {compiled} compiled ({share:.1f}%), {len(ruleset.problems)} problems, "
               f"{len(ruleset.skipped)} with an unmapped logsource (not run; `scan --unmapped-logsources run` "
               f"runs them), {noted} with notes")
    if ruleset.problems:
        raise Exit(ExitCode.INPUT)


@rules.command("list")
@PATHS
@click.pass_context
def list_rules(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """List the rules that compile: id, kind, severity, title."""
    from secmon.detect.sigma.load import load_rules

    ruleset = load_rules(_targets(ctx, paths), unmapped="run")
    click.echo(table(["rule", "kind", "severity", "title"],
                     [[r.id, r.kind + (" (unmapped logsource: not run)" if r.unmapped else ""), r.severity.value,
                       r.title] for r in ruleset.rules]))
    _report_and_exit(ruleset)


@rules.command("show")
@PATHS
@click.pass_context
def show(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Print each rule's compiled Query DSL as JSON (and its in-process refinement, if any)."""
    from secmon.detect.sigma.load import load_rules

    ruleset = load_rules(_targets(ctx, paths), unmapped="run")
    for rule in ruleset.rules:
        shown: dict[str, object] = {"id": rule.id, "title": rule.title, "path": rule.path, "kind": rule.kind, "query": rule.query}
        if rule.unmapped:
            shown["unmapped_logsource"] = rule.unmapped  # not run by scans unless asked
        if rule.notes:
            shown["notes"] = list(rule.notes)
        if rule.refine is not None:
            shown["refine_in_process"] = rule.refine
        if rule.group_by:
            shown["group_by"] = list(rule.group_by)
        if rule.kind != "single":
            shown["timespan_seconds"] = rule.timespan.total_seconds()
            shown["condition"] = list(rule.condition)
        click.echo(json.dumps(shown, ensure_ascii=False, indent=2))
    _report_and_exit(ruleset)


@rules.command("test")
@PATHS
@click.pass_context
def test(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Run every rule file's `secmon: examples` in-process (no Elasticsearch)."""
    from secmon.detect.inprocess.examples import examples_of, run_examples
    from secmon.detect.sigma.load import load_rule_file, rule_files

    problems: list[tuple[str, str]] = []
    passed = files = 0
    for root in _targets(ctx, paths):
        for path in rule_files(root):
            files += 1
            ruleset = load_rule_file(path)
            problems += [(p.where, p.reason) for p in ruleset.problems]
            try:
                examples = examples_of(path)
            except InputError:
                continue  # the same problem is already in ruleset.problems
            if examples is None:
                problems.append((str(path), "no secmon.examples in the first document"))
                continue
            for rule in ruleset.rules:
                result = run_examples(rule, examples)
                passed += result.passed
                problems += [(f"{path}: {rule.title}", failure) for failure in result.failures]
    _report(problems)
    click.echo(f"{files} files: {passed} examples passed, {len(problems)} problems")
    if problems:
        raise Exit(ExitCode.INPUT)
