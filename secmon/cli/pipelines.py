"""`secmon pipelines`: list the pipelines and try one on a file without Elasticsearch.

`pipelines test` is what an operator runs before collecting a new source: it shows the
ECS document each line becomes, or the reason it would be dead-lettered.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click

from secmon.cli.context import Exit, settings_of
from secmon.cli.output import table
from secmon.collect.evtxfiles import is_evtx, read_evtx
from secmon.collect.files import read_records
from secmon.config import DEFAULT_TIMEZONE
from secmon.errors import ExitCode, InputError
from secmon.model import DeadLetter, Event
from secmon.normalize.engine import Normalizer, Skipped
from secmon.normalize.examples import check_examples
from secmon.normalize.pipeline import Pipeline, load_pipelines, pipeline_named


def _folders(ctx: click.Context, given: tuple[Path, ...]) -> list[Path]:
    """--pipelines, else the config's `pipelines`, else ./pipelines when there is no config file."""
    if given:
        return list(given)
    config_path = ctx.ensure_object(dict).get("config_path")
    if config_path is not None and Path(config_path).is_file():
        settings = settings_of(ctx)
        return [settings.resolve(p) for p in settings.pipelines]
    return [Path("pipelines")]


def _load(ctx: click.Context, given: tuple[Path, ...]) -> dict[str, Pipeline]:
    folders = _folders(ctx, given)
    for folder in folders:
        if not folder.is_dir():
            raise InputError(f"pipeline folder not found: {folder}", hint="pass --pipelines DIR")
    return load_pipelines(folders)


def _dataset(pipeline: Pipeline) -> str:
    found = {".".join(path): value for path, value in pipeline.set}
    return str(found.get("event.dataset", "(by channel)" if pipeline.format in ("evtx", "winlog", "xml") else "-"))


_FOLDERS = click.option("--pipelines", "-p", "folders", multiple=True,
                        type=click.Path(path_type=Path, file_okay=False),
                        help="Pipeline folder (default: the config's `pipelines`, or ./pipelines).")


@click.group("pipelines")
def pipelines() -> None:
    """Work with the parsing pipelines (pipelines/*.yml)."""


@pipelines.command("list")
@_FOLDERS
@click.pass_context
def list_pipelines(ctx: click.Context, folders: tuple[Path, ...]) -> None:
    """Load every pipeline, run its examples, and list them."""
    found = _load(ctx, folders)
    rows, failures = [], []
    for pipeline in found.values():
        failed = check_examples(pipeline)
        failures += failed
        state = f"{len(pipeline.examples) - len(failed)}/{len(pipeline.examples)} ok"
        rows.append([pipeline.id, pipeline.format, _dataset(pipeline), state, pipeline.description])
    click.echo(table(["source", "format", "dataset", "examples", "description"], rows))
    for failure in failures:
        click.echo(f"{failure.where}: example fails: {failure.problem}", err=True)
    if failures:
        raise Exit(ExitCode.INPUT)


@pipelines.command("test")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--source", "-s", required=True, help="Pipeline id, e.g. linux-auth.")
@click.option("--year", type=click.IntRange(1990, 2100), help="Year of the first line (syslog has none).")
@click.option("--timezone", "zone", default=DEFAULT_TIMEZONE, show_default=True,
              help="Time zone of timestamps without an offset.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N lines.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: {line, event|dead_letter|skipped}.")
@_FOLDERS
@click.pass_context
def test_pipeline(ctx: click.Context, file: Path, source: str, year: int | None, zone: str, limit: int | None,
                  as_json: bool, folders: tuple[Path, ...]) -> None:
    """Show the ECS document each line of FILE becomes, or why it is dead-lettered.

    Nothing is sent to Elasticsearch. Exits 4 when any line would be dead-lettered.
    """
    pipeline = pipeline_named(_folders(ctx, folders), source)  # its own file only; all of them for the error
    if pipeline is None:
        found = _load(ctx, folders)
        if source not in found:
            raise click.BadParameter(f"unknown source {source!r}; pipelines: {', '.join(sorted(found))}",
                                     param_hint="--source")
        pipeline = found[source]
    normalizer = Normalizer(pipeline, agency="test", timezone=zone, source=str(file),
                            now=datetime.now(timezone.utc), year=year)
    counts = {"events": 0, "dead letters": 0, "skipped": 0}
    records = read_evtx(file) if is_evtx(file) else read_records(file)  # .evtx: its records as EVTX JSON
    for number, record in enumerate(records, start=1):
        if limit is not None and number > limit:
            break
        if record.problem:  # too long, or unreadable EVTX data: never reaches the pipeline
            result: Event | DeadLetter | Skipped = normalizer.refuse(record.text, record.problem, record.offset,
                                                                     record.record_id, record.length or None)
        else:
            result = normalizer.normalize(record.text, record.offset, record.record_id)
        line = record.text.rstrip("\r\n")
        if isinstance(result, Event):
            counts["events"] += 1
            shown = {"line": number, "event": result.doc}
            text = f"{file}:{number}: event\n{json.dumps(result.doc, ensure_ascii=False, indent=2)}"
        elif isinstance(result, DeadLetter):
            counts["dead letters"] += 1
            shown = {"line": number, "dead_letter": result.reason, "raw": line}
            text = f"{file}:{number}: dead letter: {result.reason}\n  {line}"
        elif isinstance(result, Skipped):
            counts["skipped"] += 1
            shown = {"line": number, "skipped": result.reason, "raw": line}
            text = f"{file}:{number}: skipped: {result.reason}\n  {line}"
        click.echo(json.dumps(shown, ensure_ascii=False) if as_json else text)
    click.echo(", ".join(f"{n} {what}" for what, n in counts.items()), err=as_json)
    if counts["dead letters"]:
        raise Exit(ExitCode.INPUT)
