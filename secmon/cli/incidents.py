"""`secmon incidents list | show | ack | close | reopen`: the analyst's incident workflow."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from secmon.cli.context import When, agency_option, es_of, settings_of
from secmon.cli.output import entity, incidents_table, safe, table, to_json
from secmon.incidents import records
from secmon.incidents.lifecycle import RESOLUTIONS
from secmon.service.common import indices_of
from secmon.service.triage import show as show_incident
from secmon.service.triage import transition
from secmon.types import DEFAULT_TIMEZONE, utcnow

STATUSES = ("open", "acknowledged", "closed")
NOTE = click.option("--note", default="", help="Why (kept in the incident's timeline and the audit trail).")


def _list(ctx: click.Context, agency: str | None, status: str | None, since: datetime | None, limit: int, page: int,
          as_json: bool) -> None:
    settings = settings_of(ctx)
    if agency is not None:
        settings.agency(agency)  # an unknown (or empty) agency is an error, never "every agency"
    found = records.search(es_of(ctx), indices_of(settings), agency=agency, status=status, since=since,
                           limit=limit, offset=(page - 1) * limit)
    shown_to = (page - 1) * limit + len(found.incidents)
    if as_json:
        click.echo(to_json({"total": found.total, "page": page, "incidents": found.incidents}))
        return
    click.echo(incidents_table(found.incidents, DEFAULT_TIMEZONE))
    more = found.total - shown_to
    click.echo(f"{len(found.incidents)} of {found.total} incidents, newest activity first"
               + (f"; {more} more: --page {page + 1}" if more > 0 else ""))


@click.group(invoke_without_command=True)
@agency_option(help="Only this agency.")
@click.option("--since", type=When(), help="Incidents active since this time.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def incidents(ctx: click.Context, agency: str | None, since: datetime | None, limit: int, as_json: bool) -> None:
    """Incidents: list them (the default), show one, and work them (ack, close, reopen)."""
    if ctx.invoked_subcommand is None:
        _list(ctx, agency, None, since, limit, 1, as_json)


@incidents.command("list")
@agency_option(help="Only this agency.")
@click.option("--status", type=click.Choice(STATUSES), help="Only incidents in this state.")
@click.option("--since", type=When(), help="Incidents active since this time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000), help="Incidents per page.")
@click.option("--page", default=1, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_command(ctx: click.Context, agency: str | None, status: str | None, since: datetime | None, limit: int,
                 page: int, as_json: bool) -> None:
    """List incidents, newest activity first, a page at a time."""
    _list(ctx, agency, status, since, limit, page, as_json)


@incidents.command()
@click.argument("incident_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--language", type=click.Choice(["en", "vi"]), default="en", show_default=True,
              help="Language of an anomaly incident's explanation.")
@click.pass_context
def show(ctx: click.Context, incident_id: str, as_json: bool, language: str) -> None:
    """One incident: what, who, when, its timeline and its raw events."""
    shown = show_incident(es_of(ctx), settings_of(ctx), incident_id)
    incident = shown.state.incident
    if as_json:
        click.echo(to_json({"incident": incident, "events": [
            {"id": e["_id"], "index": e["_index"], "event": e["_source"]} for e in shown.events],
            "more_events": shown.more_events}))
        return
    zone = ZoneInfo(DEFAULT_TIMEZONE)
    f = incident.finding

    def when(moment: datetime) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z")

    lines = [f"incident {incident.id}",
             f"  rule:        {safe(f.rule_title)} ({safe(f.rule_id)}), detector {f.detector}",
             f"  severity:    {f.severity.value}",
             f"  status:      {incident.status}" + (f" ({incident.resolution})" if incident.resolution else ""),
             f"  agency:      {safe(f.agency)}",
             f"  entity:      {safe(entity(incident))}",
             f"  activity:    {when(f.first_seen)} .. {when(f.last_seen)} ({DEFAULT_TIMEZONE})",
             f"  events:      {f.count} in {incident.occurrences} burst(s)"]
    if f.tags:
        lines.append(f"  tags:        {safe(', '.join(f.tags))}")
    if f.description:
        lines.append(f"  description: {safe(f.description.strip())}")
    if f.explanation is not None:
        # Here, not at the top: it pulls in numpy, which every `secmon` process would then load at start-up.
        from secmon.detect.anomaly.explain import lines as explanation_lines

        lines += ["", *(safe(line) for line in explanation_lines(f.explanation, language))]
    lines += ["", "timeline:"]
    lines += [f"  {when(c.at)}  {c.action:<12} by {safe(c.user, 40)}" + (f": {safe(c.note)}" if c.note else "")
              for c in incident.history]
    lines += ["", f"events ({len(shown.events)} shown):"]
    rows = [[when(datetime.fromisoformat(str(e["_source"].get("@timestamp", "")).replace("Z", "+00:00")))
             if e["_source"].get("@timestamp") else "-",
             safe(_text(e["_source"]), 160)] for e in shown.events]
    lines.append(table(["time", "event"], rows))
    if shown.more_events:
        lines.append(f"... and {shown.more_events} more sample events not shown")
    click.echo("\n".join(lines))


def _text(doc: dict[str, Any]) -> str:
    event = doc.get("event") or {}
    return str(event.get("original") or doc.get("message") or to_json(doc))


@incidents.command()
@click.argument("incident_id")
@NOTE
@click.pass_context
def ack(ctx: click.Context, incident_id: str, note: str) -> None:
    """Acknowledge an open incident: someone is on it."""
    state = transition(es_of(ctx), settings_of(ctx), incident_id, "ack", note, utcnow())
    click.echo(f"incident {state.incident.id[:12]}: acknowledged")


@incidents.command()
@click.argument("incident_id")
@click.option("--as", "resolution", required=True, type=click.Choice(RESOLUTIONS),
              help="What it was: true_positive, benign or false_positive (the last two are left out of model "
                   "training).")
@NOTE
@click.pass_context
def close(ctx: click.Context, incident_id: str, resolution: str, note: str) -> None:
    """Close an incident with its resolution."""
    state = transition(es_of(ctx), settings_of(ctx), incident_id, "close", note, utcnow(), resolution)
    click.echo(f"incident {state.incident.id[:12]}: closed as {resolution}")


@incidents.command()
@click.argument("incident_id")
@NOTE
@click.pass_context
def reopen(ctx: click.Context, incident_id: str, note: str) -> None:
    """Reopen a closed incident."""
    state = transition(es_of(ctx), settings_of(ctx), incident_id, "reopen", note, utcnow())
    click.echo(f"incident {state.incident.id[:12]}: open again")
