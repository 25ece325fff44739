"""`secmon run` (alias `schedule`) and `secmon status`: unattended monitoring and its health check."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import click

from secmon.cli.context import Exit, es_of, settings_of
from secmon.cli.output import table, to_json
from secmon.errors import ExitCode
from secmon.types import DEFAULT_TIMEZONE, utcnow

if TYPE_CHECKING:  # the flows are imported when a command runs: `secmon --help` stays quick
    from secmon.service.status import Status


@click.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run unattended until SIGTERM/Ctrl-C: scans, alert delivery, digests, retention, model retraining.

    Start it on as many hosts as you like: one is active (it holds the lease in
    Elasticsearch), the others stand by and take over when it stops answering.
    Use -v to log each job's runs.
    """
    from secmon.scheduler import run as run_scheduler

    if logging.getLogger().level > logging.DEBUG:
        # A line per job run, and a warning whenever a catch-up scan outlasts its interval (expected);
        # our own lines say more, and crashes and missed runs are logged by the scheduler.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
    stop = threading.Event()

    def asked_to_stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("secmon.scheduler").info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, asked_to_stop)
    signal.signal(signal.SIGINT, asked_to_stop)
    stopped = run_scheduler(es_of(ctx), settings_of(ctx), stop)
    if stopped.abandoned:
        # A job stuck past the grace period (Elasticsearch not answering) would keep the process
        # alive; its work is redone by the next holder (deterministic ids), so leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(ExitCode.OK))


def _safe(text: object) -> str:
    """One line for a terminal: control characters (from log content or error text) shown escaped."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(text))


def _when(moment: datetime | None, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Health of unattended monitoring; exit 7 when unhealthy (a container health check).

    Shows the lease holder, each job's watermark, lag and last run, the alerts by
    status and the rules that failed in the last scheduled scan.
    """
    from secmon.service.status import status as status_flow

    report = status_flow(es_of(ctx), settings_of(ctx), utcnow())
    if as_json:
        click.echo(to_json({**report.__dict__, "healthy": report.healthy}))
    else:
        click.echo(_text(report))
    if not report.healthy:
        raise Exit(ExitCode.UNHEALTHY)


def _text(report: Status) -> str:
    zone = ZoneInfo(DEFAULT_TIMEZONE)
    lease = report.lease
    if lease is None:
        lines = ["lease: nobody has held it yet"]
    else:
        state = "held" if report.active else "expired"
        lines = [f"lease: {state}, holder {_safe(lease.holder)}, token {lease.token}, "
                 f"expires {_when(lease.expires, zone)} ({DEFAULT_TIMEZONE})"]
    rows = []
    for job in report.jobs:
        s = job.state
        rows.append([job.job, _when(s.value, zone) if s else "-",
                     f"{job.lag_seconds:.0f}s" if job.lag_seconds is not None else "-",
                     _when(s.ran_at, zone) if s else "-", (s.outcome or "-") if s else "never ran",
                     _safe(s.error)[:120] if s else ""])
    lines += ["", table(["job", "watermark", "lag", "last run", "outcome", "note"], rows), ""]
    alerts = report.alerts
    lines.append("alerts: " + ", ".join(f"{name} {alerts.get(name, 0)}"
                                        for name in ("pending", "sending", "sent", "failed")))
    scan = report.last_scan
    if scan is None:
        lines.append("last scheduled scan: none yet")
    else:
        lines.append(f"last scheduled scan: {_when(scan.at, zone)}, rules run {scan.rules_run}, "
                     f"rules failed {len(scan.failures)}")
        lines += [f"  rule failed: {_safe(rule)}: {_safe(why)[:200]}" for rule, why in scan.failures[:20]]
        if len(scan.failures) > 20:
            lines.append(f"  ... and {len(scan.failures) - 20} more")
    lines.append("")
    if report.healthy:
        lines.append("healthy")
    else:
        lines.append("unhealthy:")
        lines += [f"  - {_safe(problem)}" for problem in report.problems]
    return "\n".join(lines)
