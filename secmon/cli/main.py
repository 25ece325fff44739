"""`secmon` commands. Exit codes: see secmon.errors.ExitCode and the README.

This is the only module that prints or exits. Everything below it raises
SecmonError subclasses; `main` maps them to one line on stderr and an exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from importlib import import_module
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from click.utils import make_default_short_help

from secmon import __version__
from secmon.cli.context import Duration, Exit, When, es_of, settings_of
from secmon.errors import ExitCode, SecmonError
from secmon.types import DEFAULT_TIMEZONE, utcnow

OFFLINE_AGENCY = "offline"  # `scan --input` without --agency: a tag, not an agency of the config

# The other commands, imported when named: their modules pull in the Elasticsearch client, numpy,
# SMTP and the scheduler, which `scan --input` (offline triage, where start-up is most of a small run)
# and `--help` never need. Name -> ("module:attribute", the command's short help). `secmon --help`
# lists the short help from here, so listing the commands imports none of them; a unit test
# (tests/unit/test_startup.py) keeps these texts equal to the commands' own.
LAZY = {"alerts": ("secmon.cli.alerts:alerts", "The alert outbox: list it, re-queue failed alerts, send a test email."),
        "collect": ("secmon.cli.collect:collect",
                    "Parse log FILES into ECS events and ship them to Elasticsearch (`-` reads stdin)."),
        "deliver": ("secmon.cli.alerts:deliver",
                    "Send the queued alerts that are due (the scheduler does this every minute)."),
        "exceptions": ("secmon.cli.exceptions:exceptions", "Exceptions (events that are not incidents) and "
                       "suppressions (findings not raised for a while)."),
        "incidents": ("secmon.cli.incidents:incidents",
                      "Incidents: list them (the default), show one, and work them (ack, close, reopen)."),
        "kibana": ("secmon.cli.kibana:kibana",
                   "Kibana saved objects (data views, dashboards), roles per agency, and import into spaces."),
        "model": ("secmon.cli.model:model",
                  "Anomaly models: train them, score a period, explain a window, look at what is stored."),
        "pipelines": ("secmon.cli.pipelines:pipelines", "Work with the parsing pipelines (pipelines/*.yml)."),
        "report": ("secmon.cli.report:report", "The monthly report: incidents, response times, alerts, scan "
                   "coverage, anomalies, month-over-month."),
        "rules": ("secmon.cli.rules:rules", "Work with detection rules (Sigma files)."),
        "run": ("secmon.cli.run:run", "Run unattended until SIGTERM/Ctrl-C: scans, alert delivery, digests, "
                "retention, model retraining."),
        "schedule": ("secmon.cli.run:run", "Run unattended until SIGTERM/Ctrl-C: scans, alert delivery, digests, "
                     "retention, model retraining."),  # its old name
        "status": ("secmon.cli.run:status",
                   "Health of unattended monitoring; exit 7 when unhealthy (a container health check).")}


class LazyGroup(click.Group):
    """A group whose commands of LAZY are imported the first time they are looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            module, attribute = LAZY[cmd_name][0].split(":")
            self.add_command(getattr(import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the short help of commands not imported yet taken from LAZY."""
        names = [name for name in self.list_commands(ctx)
                 if name not in self.commands or not self.commands[name].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(name, self.commands[name].get_short_help_str(limit) if name in self.commands
                 else make_default_short_help(LAZY[name][1], limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def load_all(self) -> dict[str, click.Command]:
        """Every command, imported (what `commands` holds after): for code that walks the tree."""
        ctx = click.Context(self)
        return {name: command for name in self.list_commands(ctx) if (command := self.get_command(ctx, name))}


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="secmon")
@click.option("--config", "-c", "config_path", type=click.Path(path_type=Path),
              default=lambda: os.environ.get("SECMON_CONFIG", "secmon.yml"), show_default="$SECMON_CONFIG or secmon.yml",
              help="Configuration file.")
@click.option("--verbose", "-v", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, verbose: int) -> None:
    """secmon: security monitoring log analyser for a provincial monitoring centre."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    ctx.ensure_object(dict)["config_path"] = config_path


@cli.command()
@click.pass_context
def setup(ctx: click.Context) -> None:
    """Install index templates (idempotent)."""
    from secmon.service.common import setup as setup_flow

    version, changes = setup_flow(es_of(ctx), settings_of(ctx), utcnow())
    click.echo(f"Elasticsearch {version}")
    for change in changes:
        state = "unchanged" if not change.changed else f"installed v{change.new_version}" + (
            f" (was v{change.old_version})" if change.old_version else "")
        click.echo(f"  template {change.name}: {state}")


@cli.command()
@click.option("--from", "start", type=When(), help="Window start (ISO 8601; local time if no offset).")
@click.option("--to", "end", type=When(), help="Window end, exclusive (default: now).")
@click.option("--last", type=Duration(), help="Window = the last DURATION (e.g. 15m); instead of --from.")
@click.option("--rules", "rule_paths", multiple=True, type=click.Path(path_type=Path, exists=True),
              help="Rule files or folders (default: the config's `rules`).")
@click.option("--no-deliver", is_flag=True, help="Queue alerts but do not send them now.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--fail-on-findings", is_flag=True, help=f"Exit {int(ExitCode.FINDINGS)} when new incidents were found.")
@click.option("--rule-failures", type=click.Choice(["error", "warn"]), default="error", show_default=True,
              help=f"error: exit {int(ExitCode.INPUT)} when any rule failed to load or run; warn: say so and go on.")
@click.option("--input", "inputs", multiple=True, metavar="PATH",
              help="Offline: scan files, folders (recursively) or glob patterns ('logs/**/*.evtx') in-process "
                   "(EVTX, JSON; with --source any log), no Elasticsearch. Repeatable.")
@click.option("--agency", default=OFFLINE_AGENCY, show_default=True,
              help="With --input: the agency the events belong to (it replaces the inputs' own organization.id).")
@click.option("--source", help="With --input: pipeline id that parses the files (default: EVTX/JSON).")
@click.option("--unmapped-logsources", "unmapped", type=click.Choice(["skip", "run"]), default="skip",
              show_default=True, help="Rules whose logsource secmon does not map (`rules validate` lists them) "
                                      "select more than their events: skipped and counted, or run anyway.")
@click.option("--dead-letters", type=click.Choice(["error", "warn"]), default="error", show_default=True,
              help=f"With --input: error: exit {int(ExitCode.INPUT)} when a record could not be read or parsed "
                   "(each file's count and reasons are printed either way); warn: say so and go on.")
@click.option("--rule-cache", "rule_cache", type=click.Path(path_type=Path, file_okay=False),
              help="With --input: folder of the compiled-rule cache (default: $SECMON_CACHE_DIR, "
                   "$XDG_CACHE_HOME/secmon or ~/.cache/secmon).")
@click.option("--no-rule-cache", is_flag=True, help="With --input: compile every rule, read and write no cache.")
@click.option("--jobs", type=click.IntRange(1, 64), help="With --input: processes reading and matching the files "
                                                         "(default: one per CPU, up to 4, for inputs of 16 MB or more; else 1).")
@click.option("--models", "model_files", multiple=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="With --input: anomaly models exported by `secmon model export`, scored in-process too.")
@click.pass_context
def scan(ctx: click.Context, start: datetime | None, end: datetime | None, last: timedelta | None,
         rule_paths: tuple[Path, ...], no_deliver: bool, as_json: bool, fail_on_findings: bool, rule_failures: str,
         inputs: tuple[str, ...], agency: str, source: str | None, unmapped: str, dead_letters: str,
         rule_cache: Path | None, no_rule_cache: bool, jobs: int | None, model_files: tuple[Path, ...]) -> None:
    """Run the rules over a time window, store incidents and alert agencies (or over files: --input)."""
    if inputs:
        from secmon.cli.offline import offline

        offline(ctx, OFFLINE_AGENCY, inputs, rule_paths, agency, source, as_json, fail_on_findings, unmapped,
                dead_letters == "error", rule_cache, no_rule_cache, jobs, model_files, rule_failures == "error")
        return
    from secmon.cli.output import scan_text, to_json
    from secmon.service.scan import ScanOptions, scan as scan_flow
    from secmon.store.client import check

    now = utcnow()
    end = end or now
    if (start is None) == (last is None):
        raise click.UsageError("give exactly one of --from or --last")
    start = start or end - (last or timedelta())
    if start >= end:
        raise click.UsageError(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")
    es, settings = es_of(ctx), settings_of(ctx)
    check(es)  # one clear line when the node is away, before anything is loaded (the scan flow does not check)
    summary = scan_flow(es, settings, ScanOptions(start, end, rule_paths, unmapped=unmapped), now)  # type: ignore[arg-type]
    if not no_deliver:  # the scan only queues; sending is the deliver flow's job, here run at once
        from secmon.service.deliver import deliver as deliver_flow

        report = deliver_flow(es, settings, utcnow())
        summary = replace(summary, deliveries_sent=report.sent, deliveries_pending=report.pending + report.failed,
                          notes=summary.notes + tuple(f"alert delivery failed: {e}" for e in report.errors))
    since = summary.window_from.astimezone(ZoneInfo(DEFAULT_TIMEZONE)).isoformat()
    more = f"secmon incidents list --since {since} (with any others active since), or scan --json"
    click.echo(to_json(summary) if as_json else scan_text(summary, DEFAULT_TIMEZONE, more))
    if not summary.rules_run:
        click.echo("secmon: error: no rule ran (check `rules` in the config and `secmon rules validate`)", err=True)
        raise Exit(ExitCode.INPUT)
    if summary.rules_failed and rule_failures == "error":
        click.echo(f"secmon: error: {len(summary.rules_failed)} rules failed to load or run "
                   "(--rule-failures warn to go on)", err=True)
        raise Exit(ExitCode.INPUT)
    if summary.deliveries_pending:
        raise Exit(ExitCode.DELIVERY)
    if fail_on_findings and summary.new_incident_ids:
        raise Exit(ExitCode.FINDINGS)




def main(argv: list[str] | None = None) -> None:
    """Entry point: the single error boundary."""
    try:
        cli.main(args=argv, prog_name="secmon", standalone_mode=False)
    except Exit as done:
        sys.exit(int(done.code))
    except SecmonError as exc:
        click.echo(f"secmon: error: {exc}", err=True)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Abort:
        click.echo("secmon: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(int(ExitCode.USAGE))
    sys.exit(int(ExitCode.OK))
