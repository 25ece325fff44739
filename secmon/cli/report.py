"""`secmon report --month 2026-10`: the monthly report for the province (or one agency), as HTML or PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from secmon.cli.context import es_of, settings_of
from secmon.report.month import Month
from secmon.types import utcnow


class MonthType(click.ParamType):
    name = "YYYY-MM"

    def convert(self, value: Any, param: Any, ctx: Any) -> Month:
        if isinstance(value, Month):
            return value
        try:
            return Month.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command()
@click.option("--month", required=True, type=MonthType(), help="The month, e.g. 2026-10 (local time).")
@click.option("--agency", help="One agency's report (default: every agency, the centre's report).")
@click.option("--lang", type=click.Choice(["vi", "en"]), help="Language (default: the agency's, else vi).")
@click.option("--format", "fmt", type=click.Choice(["html", "pdf"]), default="html", show_default=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (default: report-<month>[-<agency>]-<lang>.<format> in the current folder).")
@click.pass_context
def report(ctx: click.Context, month: Month, agency: str | None, lang: str | None, fmt: str, out: Path | None) -> None:
    """The monthly report: incidents, response times, alerts, scan coverage, anomalies, month-over-month."""
    from secmon.service.report import monthly_report

    made = monthly_report(es_of(ctx), settings_of(ctx), month, agency, lang, utcnow())
    out = out or Path(f"report-{month}{'-' + agency if agency else ''}-{made.language}.{fmt}")
    if fmt == "pdf":
        out.write_bytes(made.pdf())
    else:
        out.write_text(made.html, encoding="utf-8")
    incidents = made.facts.incidents
    click.echo(f"{out}: {made.title} ({incidents.total} incidents, {made.facts.alerts.count('sent')} alerts sent, "
               f"scan coverage {made.facts.coverage.percent:.1f}%)")
    for note in made.notes:
        click.echo(f"note: {note}", err=True)
