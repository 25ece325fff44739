"""`secmon kibana export | roles | import`: dashboards for auditors, and each agency's space and role."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from secmon.cli.context import Exit, es_of, settings_of
from secmon.errors import ExitCode
from secmon.kibana.client import KibanaClient
from secmon.service import kibana as flow
from secmon.types import utcnow


@click.group()
def kibana() -> None:
    """Kibana saved objects (data views, dashboards), roles per agency, and import into spaces."""


@kibana.command()
@click.option("--space", "agency", metavar="AGENCY", help="That agency's space: its own dashboard and data views.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: stdout).")
@click.pass_context
def export(ctx: click.Context, agency: str | None, out: Path | None) -> None:
    """The saved objects as NDJSON (kibana/secmon-saved-objects.ndjson is this, for the prefix `secmon`)."""
    text = flow.export(settings_of(ctx), agency)
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    click.echo(f"{text.count(chr(10))} saved objects written to {out}", err=True)


@kibana.command()
@click.option("--apply", is_flag=True, help="Create or update them through the Elasticsearch security API.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Write one <role>.json per role into this folder (the body PUT /_security/role/<role> takes).")
@click.pass_context
def roles(ctx: click.Context, apply: bool, out: Path | None) -> None:
    """Roles: secmon-analyst, secmon-service, and secmon-auditor-<agency> for every configured agency."""
    settings = settings_of(ctx)
    if apply:
        defined = flow.apply_roles(es_of(ctx), settings, utcnow())
        for role in defined:
            click.echo(f"role {role.name}: created or updated")
        return
    defined = flow.role_definitions(settings)
    if out is None:
        click.echo(json.dumps({r.name: r.body for r in defined}, indent=2, ensure_ascii=False))
        return
    out.mkdir(parents=True, exist_ok=True)
    for role in defined:
        (out / f"{role.name}.json").write_text(json.dumps(role.body, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    click.echo(f"{len(defined)} roles written to {out}")


@kibana.command("import")
@click.option("--space", "spaces", metavar="AGENCY", multiple=True,
              help="Import that agency's space (created if missing); repeat for more. Default: the centre's space.")
@click.option("--every-agency", is_flag=True, help="The centre's space and every configured agency's.")
@click.option("--kibana-url", default=lambda: os.environ.get("SECMON_KIBANA_URL", ""),
              show_default="$SECMON_KIBANA_URL, else alerts.kibana_url", help="Kibana's base URL.")
@click.pass_context
def import_command(ctx: click.Context, spaces: tuple[str, ...], every_agency: bool, kibana_url: str) -> None:
    """Import the saved objects through Kibana's API (with the Elasticsearch credentials of the config)."""
    settings = settings_of(ctx)
    url = kibana_url or settings.alerts.kibana_url
    if not url:
        raise click.UsageError("no Kibana URL: give --kibana-url, set $SECMON_KIBANA_URL or alerts.kibana_url")
    agencies = [a.id for a in settings.agencies] if every_agency else list(spaces)
    for agency in agencies:
        settings.agency(agency)  # an unknown one fails before anything is imported
    client = KibanaClient(url, KibanaClient.authorization_for(settings.elasticsearch.credentials()),
                          settings.elasticsearch.ca_certs)
    results = flow.import_spaces(es_of(ctx), settings, client, agencies, centre=every_agency or not spaces,
                                 now=utcnow())
    refused = 0
    for done in results:
        made = " (space created)" if done.created else ""
        click.echo(f"space {done.result.space}{made}: {done.result.imported} objects imported, "
                   f"{len(done.result.errors)} refused")
        for error in done.result.errors:
            click.echo(f"  refused: {error}", err=True)
        refused += len(done.result.errors)
    if refused:
        click.echo(f"secmon: error: Kibana refused {refused} saved objects", err=True)
        raise Exit(ExitCode.ELASTICSEARCH)
