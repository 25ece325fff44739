"""`secmon model train | score | show | list | explain`: the anomaly detectors' models."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import click

from secmon.cli.context import Duration, Exit, When, es_of, settings_of
from secmon.cli.output import safe, table, to_json
from secmon.errors import ExitCode
from secmon.types import iso, utcnow

DETECTORS = click.option("--detectors", "paths", multiple=True, type=click.Path(path_type=Path, exists=True),
                         help="Detector files or folders (default: the anomaly/ folders of the config's rules).")


@click.group()
def model() -> None:
    """Anomaly models: train them, score a period, explain a window, look at what is stored."""


@model.command()
@click.argument("detector_ids", nargs=-1)
@click.option("--agency", "-a", help="Only this agency (and the centre-wide model).")
@click.option("--from", "start", type=When(), help="Baseline start (default: the detector's `baseline` before --to).")
@click.option("--to", "end", type=When(), help="Baseline end, exclusive (default: now).")
@DETECTORS
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def train(ctx: click.Context, detector_ids: tuple[str, ...], agency: str | None, start: datetime | None,
          end: datetime | None, paths: tuple[Path, ...], as_json: bool) -> None:
    """Train the detectors' models (all, or the DETECTOR_IDS given) over their baseline period."""
    from secmon.service.train import train as train_flow

    report = train_flow(es_of(ctx), settings_of(ctx), utcnow(), detector_ids, agency, start, end, paths)
    if as_json:
        click.echo(to_json(report))
    else:
        rows = [[safe(r.detector), r.agency, r.outcome, str(r.windows), str(r.entities), str(r.excluded),
                 f"{r.threshold:.3f}" if r.outcome == "trained" else "-", safe(r.reason, 90)] for r in report.results]
        click.echo(table(["detector", "agency", "outcome", "windows", "entities", "excluded", "threshold", "note"],
                         rows))
        for where, reason in report.problems:
            click.echo(f"detector problem: {safe(where)}: {safe(reason)}")
    if report.failed:
        click.echo("secmon: error: some detectors did not load or train (see above)", err=True)
        raise Exit(ExitCode.INPUT)


def _window(start: datetime | None, end: datetime | None, last: timedelta | None) -> tuple[datetime, datetime]:
    end = end or utcnow()
    if (start is None) == (last is None):
        raise click.UsageError("give exactly one of --from or --last")
    start = start or end - (last or timedelta())
    if start >= end:
        raise click.UsageError("--from must be before --to")
    return start, end


@model.command()
@click.argument("detector_id")
@click.option("--agency", "-a", required=True)
@click.option("--from", "start", type=When())
@click.option("--to", "end", type=When())
@click.option("--last", type=Duration())
@click.option("--top", default=20, show_default=True, type=click.IntRange(1, 10000), help="Windows shown.")
@DETECTORS
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def score(ctx: click.Context, detector_id: str, agency: str, start: datetime | None, end: datetime | None,
          last: timedelta | None, top: int, paths: tuple[Path, ...], as_json: bool) -> None:
    """Score every entity-window of a period, most anomalous first (raises no incident)."""
    from secmon.service.train import score_period

    begin, stop = _window(start, end, last)
    ranked = score_period(es_of(ctx), settings_of(ctx), detector_id, agency, begin, stop, paths)
    shown = ranked.windows[:top]
    above = sum(1 for w in ranked.windows if w.anomalous(ranked.model.threshold))
    if as_json:
        click.echo(to_json({"model": ranked.model.id, "threshold": ranked.model.threshold,
                            "windows": len(ranked.windows), "anomalous": above,
                            "top": [{"entity": w.row.entity, "start": iso(w.row.start), "events": w.row.count,
                                     "score": w.score, "anomalous": w.anomalous(ranked.model.threshold)}
                                    for w in shown]}))
        return
    rows = [[safe(w.row.entity, 60), iso(w.row.start), str(w.row.count), f"{w.score:.3f}",
             "yes" if w.anomalous(ranked.model.threshold) else ""] for w in shown]
    click.echo(table(["entity", "window start (UTC)", "events", "score", "anomalous"], rows))
    click.echo(f"{len(ranked.windows)} windows scored by model {ranked.model.id} (threshold "
               f"{ranked.model.threshold:.3f}): {above} anomalous")


@model.command()
@click.argument("detector_id")
@click.option("--agency", "-a", required=True)
@click.option("--entity", "-e", required=True, help="The entity value (e.g. the source address).")
@click.option("--at", "at", type=When(), required=True, help="A time inside the window.")
@DETECTORS
@click.option("--language", type=click.Choice(["en", "vi"]), default="en", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def explain(ctx: click.Context, detector_id: str, agency: str, entity: str, at: datetime, paths: tuple[Path, ...],
            language: str, as_json: bool) -> None:
    """Explain one entity-window, anomalous or not: which features set it apart, and how far."""
    from secmon.detect.anomaly.explain import lines
    from secmon.service.train import explain as explain_flow

    _, explanation = explain_flow(es_of(ctx), settings_of(ctx), detector_id, agency, entity, at, paths)
    if as_json:
        click.echo(to_json(explanation))
        return
    click.echo("\n".join(safe(line) for line in lines(explanation, language)))


@model.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """The stored models: detector, agency, baseline, windows, threshold."""
    from secmon.service.train import model_list

    found = model_list(es_of(ctx), settings_of(ctx))
    if as_json:
        click.echo(to_json(found))
        return
    rows = [[safe(m["id"]), str(m.get("trained_from", ""))[:19], str(m.get("trained_to", ""))[:19],
             str(m.get("windows", "")), str(m.get("excluded", "")), f"{m.get('threshold', 0):.3f}",
             str(m.get("@timestamp", ""))[:19], str(m.get("sha256", ""))[:12]] for m in found]
    click.echo(table(["model", "baseline from", "to", "windows", "excluded", "threshold", "trained", "sha256"], rows))
    click.echo(f"{len(found)} models")


@model.command()
@click.argument("model_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, model_id: str, as_json: bool) -> None:
    """One model (DETECTOR:AGENCY, '*' for centre-wide), checked: features, vocabularies, threshold."""
    from secmon.service.train import model_show

    m = model_show(es_of(ctx), settings_of(ctx), model_id)
    summary = {"id": m.id, "detector": m.detector, "agency": m.agency, "columns": list(m.columns),
               "threshold": m.threshold, "baseline": [iso(m.trained_from), iso(m.trained_to)],
               "windows": m.windows, "entities": m.entities, "excluded": m.excluded, "trained": iso(m.created),
               "trees": len(m.forest.trees), "max_samples": m.forest.max_samples, "versions": dict(m.versions),
               "vocabularies": {k: list(v) for k, v in m.vocabulary.by.items()},
               "remembered_values": {k: len(v) for k, v in m.vocabulary.seen.items()}}
    if as_json:
        click.echo(to_json(summary))
        return
    for key, value in summary.items():
        click.echo(f"{key + ':':<18} {safe(value if isinstance(value, str) else to_json(value).replace(chr(10), ' '))}")


@model.command()
@click.argument("model_id")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def export(ctx: click.Context, model_id: str, path: Path) -> None:
    """Write a stored model (checked first) to PATH, for offline scans: scan --input FILES --models PATH."""
    from secmon.service.train import model_export

    doc = model_export(es_of(ctx), settings_of(ctx), model_id)
    path.write_text(to_json(doc), encoding="utf-8")
    click.echo(f"model {model_id} written to {path}")
