"""`secmon scan --input`: the offline scan's command-line edge (inputs, settings, output, exit code)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

import secmon
from secmon.cli.context import Exit, settings_of
from secmon.cli.output import safe, scan_text, to_json
from secmon.errors import ExitCode
from secmon.model import InputReport
from secmon.normalize.urls import URL_PROBLEM_TAG
from secmon.types import AGENCY_ID, DEFAULT_TIMEZONE, utcnow

if TYPE_CHECKING:
    from secmon.config import Settings


def _pipeline_folders(settings: Settings | None) -> tuple[Path, ...]:
    """The config's pipelines; without a config, ./pipelines, else the ones beside secmon's package."""
    if settings is not None:
        return tuple(settings.resolve(p) for p in settings.pipelines)
    here = Path("pipelines")
    return (here,) if here.is_dir() else (Path(secmon.__file__).resolve().parent.parent / "pipelines",)


def _bundled_rules() -> tuple[Path, ...]:
    """Without --rules and without a config: the rule library beside secmon's package."""
    folder = Path(secmon.__file__).resolve().parent.parent / "rules"
    if not folder.is_dir():
        raise click.UsageError("no config file and no bundled rules: give --rules")
    return (folder,)


# Below this, forking workers (each compiling the rule checks it meets, ~1.2 CPU s with the community
# corpus) does not pay. Measured on 2 idle cores (bench/results/offline.json, 2026-11-30): the 24 MB of
# EVTX-ATTACK-SAMPLES (8,255 events) took 4.54 s with one process and 3.12 s with two.
PARALLEL_BYTES = 16 << 20


def _workers(files: tuple[Path, ...]) -> int:
    if sum(p.stat().st_size for p in files) < PARALLEL_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, 4, len(files)))


def inputs_text(reports: tuple[InputReport, ...]) -> str:
    lines = []
    for report in reports:
        lines.append(f"input {safe(report.path)}: {report.events} events, {report.dead_letters} dead-lettered"
                     + (f", {report.skipped} skipped" if report.skipped else "")
                     + (f", {report.url_undecodable} with a URL not decoded exactly (tagged {URL_PROBLEM_TAG})"
                        if report.url_undecodable else "") + f" ({safe(report.reader)})")
        if report.dead_letters:
            reasons = "; ".join(f"{n} x {safe(reason, 160)}" for reason, n in report.reasons[:3])
            more = f"; {len(report.reasons) - 3} other reasons" if len(report.reasons) > 3 else ""
            lines.append(f"  dead letters: {reasons}{more}; first at {safe(report.first)}"
                         + (f"; {report.lost} EVTX events lost" if report.lost else ""))
    return "\n".join(lines)


def offline(ctx: click.Context, default_agency: str, specs: tuple[str, ...], rule_paths: tuple[Path, ...],
            agency: str, source: str | None, as_json: bool, fail_on_findings: bool, unmapped: str,
            dead_letters_fail: bool, rule_cache: Path | None, no_rule_cache: bool, jobs: int | None = None,
            models: tuple[Path, ...] = (), rule_failures_fail: bool = True) -> None:
    from secmon.collect.inputs import expand
    from secmon.detect.cache import default_folder
    from secmon.service.offline import OfflineJob, scan_files

    config_path = ctx.ensure_object(dict).get("config_path")
    # Offline triage needs no config: without one (none named by -c or $SECMON_CONFIG, no ./secmon.yml) it
    # runs on the embedded defaults (the bundled rules and pipelines, Asia/Ho_Chi_Minh). A named config
    # that is missing is still an error (a typo must not silently switch to the defaults).
    named = (ctx.find_root().get_parameter_source("config_path") != click.core.ParameterSource.DEFAULT
             or "SECMON_CONFIG" in os.environ)
    has_config = config_path is not None and (named or Path(config_path).is_file())
    needs_settings = source is not None or not rule_paths or agency != default_agency
    settings = settings_of(ctx) if needs_settings and has_config else None
    known = [a.id for a in settings.agencies] if settings is not None else []
    if not AGENCY_ID.match(agency) or (settings is not None and agency != default_agency and agency not in known):
        raise click.BadParameter(f"{agency!r} is not an agency id" + (
            f" of the config (agencies: {', '.join(known) or 'none configured'}; or {default_agency!r})"
            if settings is not None else " (lower-case letters, digits, '-' and '_')"), param_hint="--agency")
    timezone = settings.agency(agency).timezone if settings is not None and agency in known else DEFAULT_TIMEZONE
    found = expand(list(specs), any_file=source is not None)
    if not found.files:
        raise click.UsageError(f"--input: none of the files found is EVTX or JSON (first: {found.passed_over[0][0]}); "
                               "give --source for other logs")
    paths = rule_paths or (tuple(settings.resolve(p) for p in settings.rules) if settings is not None
                           else _bundled_rules())
    job = OfflineJob(found.files, tuple(paths), agency, timezone, _pipeline_folders(settings), source, unmapped,
                     None if no_rule_cache else (rule_cache or default_folder()), found.passed_over,
                     jobs or _workers(found.files), models)
    result = scan_files(job, utcnow())
    click.echo(to_json(result) if as_json else scan_text(result, timezone) + "\n" + inputs_text(result.inputs))
    dead = [r for r in result.inputs if r.dead_letters]
    for report in dead:
        click.echo(f"secmon: warning: {safe(report.path)}: {report.dead_letters} records could not be read or "
                   f"parsed and were not matched; first at {safe(report.first)}: {safe(report.reasons[0][0], 200)}",
                   err=True)
    for path, why in found.passed_over:
        click.echo(f"secmon: warning: not read: {safe(path)}: {why}", err=True)
    failed = bool(result.rules_failed) and rule_failures_fail  # as the cluster scan: failed rules fail it
    if failed:
        click.echo(f"secmon: error: {len(result.rules_failed)} rules failed to load or run "
                   "(--rule-failures warn to go on)", err=True)
    if dead and dead_letters_fail:
        click.echo(f"secmon: error: {sum(r.dead_letters for r in dead)} records of {len(dead)} "
                   f"file{'s' if len(dead) != 1 else ''} were not matched (--dead-letters warn to go on)", err=True)
        failed = True
    if failed:
        raise Exit(ExitCode.INPUT)
    if fail_on_findings and result.incidents:
        raise Exit(ExitCode.FINDINGS)
