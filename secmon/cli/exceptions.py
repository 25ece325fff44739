"""`secmon exceptions list | add | remove`: what scans must not raise, with an expiry and a reason."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from secmon.cli.context import Duration, When, es_of, settings_of
from secmon.cli.output import safe, table, to_json
from secmon.service.triage import add_exclusion, list_exclusions, remove_exclusion
from secmon.types import iso, utcnow


def _pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        field, sep, text = value.partition("=")
        if not sep or not field.strip():
            raise click.BadParameter(f"{value!r} is not FIELD=VALUE", param_hint="--where")
        pairs.append((field.strip(), text))
    return pairs


@click.group()
def exceptions() -> None:
    """Exceptions (events that are not incidents) and suppressions (findings not raised for a while)."""


@exceptions.command("list")
@click.option("--all", "include_expired", is_flag=True, help="Expired ones too.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_command(ctx: click.Context, include_expired: bool, as_json: bool) -> None:
    """Exceptions and suppressions in force (with --all, expired ones too)."""
    now = utcnow()
    items = list_exclusions(es_of(ctx), settings_of(ctx), now, include_expired)
    if as_json:
        click.echo(to_json(items))
        return
    rows = [[item.id[:12], item.kind, safe(item.rule, 40), item.agency,
             safe(" and ".join(f"{f}={v}" for f, v in item.conditions), 60),
             iso(item.expires) + (" (expired)" if item.expires <= now else ""), safe(item.author, 20),
             safe(item.reason, 50)] for item in items]
    click.echo(table(["id", "kind", "rule", "agency", "where", "expires", "by", "reason"], rows))
    click.echo(f"{len(items)} {'in all' if include_expired else 'in force'}")


@exceptions.command()
@click.option("--kind", type=click.Choice(["exception", "suppression"]), default="exception", show_default=True,
              help="exception: matching events are not incidents; suppression: the rule's findings for this group "
                   "are dropped.")
@click.option("--rule", default="*", show_default=True, help="The rule id ('*': every rule; exceptions only).")
@click.option("--agency", "-a", default="*", show_default=True, help="The agency ('*': every agency).")
@click.option("--where", "conditions", multiple=True, metavar="FIELD=VALUE",
              help="Exception: event field values (all must hold). Suppression: the group (e.g. source.ip=1.2.3.4).")
@click.option("--for", "duration", type=Duration(), help="How long it holds (e.g. 30d).")
@click.option("--until", type=When(), help="When it expires (instead of --for).")
@click.option("--reason", required=True, help="Why, for the audit trail.")
@click.pass_context
def add(ctx: click.Context, kind: str, rule: str, agency: str, conditions: tuple[str, ...],
        duration: timedelta | None, until: datetime | None, reason: str) -> None:
    """Add an exception or a suppression; it stops applying by itself when it expires."""
    if (duration is None) == (until is None):
        raise click.UsageError("give exactly one of --for or --until")
    now = utcnow()
    expires = until or now + (duration or timedelta())
    item = add_exclusion(es_of(ctx), settings_of(ctx), kind, rule, agency, _pairs(conditions),  # type: ignore[arg-type]
                         expires, reason, now)
    click.echo(f"{item.kind} {item.id[:12]} added, in force until {iso(item.expires)}")


@exceptions.command()
@click.argument("ident")
@click.option("--reason", required=True, help="Why, for the audit trail.")
@click.pass_context
def remove(ctx: click.Context, ident: str, reason: str) -> None:
    """Remove an exception or suppression by id (or a unique prefix of at least 6 characters)."""
    item = remove_exclusion(es_of(ctx), settings_of(ctx), ident, reason, utcnow())
    click.echo(f"{item.kind} {item.id[:12]} removed")
