"""`secmon deliver` and `secmon alerts outbox | retry | test-email`: the alert outbox from the command line.

Exit 6 (ExitCode.DELIVERY) whenever an alert is still waiting or was given up, so a cron job or a
health check sees it; every count is printed, in text and with --json.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.headerregistry import Address
from zoneinfo import ZoneInfo

import click

from secmon.alert.safe import one_line
from secmon.cli.context import Exit, es_of, settings_of
from secmon.cli.output import table, to_json
from secmon.errors import ExitCode
from secmon.types import DEFAULT_TIMEZONE, utcnow


@click.command()
@click.option("--retry-now", is_flag=True, help="Also the alerts waiting for their next retry (SMTP was just fixed).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def deliver(ctx: click.Context, retry_now: bool, as_json: bool) -> None:
    """Send the queued alerts that are due (the scheduler does this every minute)."""
    from secmon.service.deliver import deliver as deliver_flow

    report = deliver_flow(es_of(ctx), settings_of(ctx), utcnow(), retry_now=retry_now)
    if as_json:
        click.echo(to_json(report))
    else:
        click.echo(f"alerts sent: {report.sent}, retrying: {report.pending}, failed (given up): {report.failed}, "
                   f"folded into an overflow digest: {report.folded}, held for the next hour: {report.held}, "
                   f"taken by another deliverer: {report.skipped}")
        click.echo(f"outbox now: {report.outbox_pending} pending, {report.outbox_failed} failed"
                   + (" (secmon alerts retry --all-failed re-queues them)" if report.outbox_failed else ""))
        for error in report.errors:
            click.echo(f"delivery error: {error}", err=True)
    if report.pending or report.failed or report.outbox_pending or report.outbox_failed:
        raise Exit(ExitCode.DELIVERY)


@click.group()
def alerts() -> None:
    """The alert outbox: list it, re-queue failed alerts, send a test email."""


@alerts.command("outbox")
@click.option("--status", type=click.Choice(["pending", "sending", "sent", "failed"]), help="Only this status.")
@click.option("--agency", "-a", help="Only alerts about this agency.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def outbox(ctx: click.Context, status: str | None, agency: str | None, limit: int, as_json: bool) -> None:
    """List outbox documents, newest first."""
    from secmon.service.deliver import outbox as outbox_flow

    page = outbox_flow(es_of(ctx), settings_of(ctx), status=status, agency=agency, limit=limit)
    more = page.total - len(page.deliveries)
    if as_json:
        click.echo(to_json({"deliveries": page.deliveries, "total": page.total, "more": more}))
        return
    zone = ZoneInfo(DEFAULT_TIMEZONE)

    def when(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"

    rows = [[d.id, d.status, d.kind, ",".join(d.agencies), d.recipient, str(d.attempts), when(d.queued),
             when(d.sent_at if d.status == "sent" else d.next_attempt), one_line(d.subject, 60),
             one_line(d.last_error, 60) or "-"] for d in page.deliveries]
    click.echo(table(["id", "status", "kind", "agency", "recipient", "attempts", f"queued ({DEFAULT_TIMEZONE})",
                      "sent / next try", "subject", "last error"], rows))
    click.echo(f"{len(page.deliveries)} of {page.total} shown" + (f"; {more} more: raise --limit" if more > 0 else ""))


@alerts.command("retry")
@click.option("--id", "ids", multiple=True, help="The outbox id of a failed alert (repeatable).")
@click.option("--all-failed", is_flag=True, help="Every failed alert.")
@click.pass_context
def retry(ctx: click.Context, ids: tuple[str, ...], all_failed: bool) -> None:
    """Re-queue failed alerts: attempts reset, sent by the next delivery; audited."""
    from secmon.service.deliver import retry as retry_flow

    if bool(ids) == all_failed:
        raise click.UsageError("give --id ID (one or more) or --all-failed")
    report = retry_flow(es_of(ctx), settings_of(ctx), utcnow(), ids)
    click.echo(f"re-queued {len(report.requeued)} failed alerts")
    for doc_id, status in report.not_failed:
        click.echo(f"{doc_id}: {status}, not failed: nothing to retry")
    for doc_id in report.changed:
        click.echo(f"secmon: error: {doc_id}: changed while being re-queued: run retry again", err=True)
    for doc_id in report.missing:
        click.echo(f"secmon: error: {doc_id}: no such alert in the outbox (secmon alerts outbox lists them)", err=True)
    if report.missing:
        raise Exit(ExitCode.USAGE)
    if report.changed:
        raise Exit(ExitCode.DELIVERY)


_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")


@alerts.command("test-email")
@click.option("--to", "to", required=True, help="Send the sample to this address.")
@click.option("--agency", "-a", help="Render it as this agency's alerts are (language, time zone).")
@click.pass_context
def test_email(ctx: click.Context, to: str, agency: str | None) -> None:
    """Send a sample alert through the real SMTP path (exit 6 when it fails)."""
    from secmon.service.deliver import test_email as test_flow

    try:
        if not _ADDRESS.match(to):
            raise ValueError(to)
        Address(addr_spec=to)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{to!r} is not an email address", param_hint="--to") from None
    reply = test_flow(es_of(ctx), settings_of(ctx), to, agency, utcnow())
    click.echo(f"test email sent to {to}: {reply}")
