"""`secmon collect`: ship log files, EVTX files, stdin, or (with --follow) files by glob and syslog."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click

from secmon.cli.context import Exit, agency_option, es_of, settings_of
from secmon.cli.output import safe, to_json
from secmon.collect.syslog import Address, Limits, Listener, tls_context
from secmon.config import Settings
from secmon.errors import ExitCode, InputError
from secmon.normalize.urls import MAX_ROUNDS, URL_PROBLEM_TAG
from secmon.service.collect import (
    DEFAULT_IN_FLIGHT,
    DEFAULT_WORKERS,
    CollectOptions,
    CollectReport,
    collect_files,
    collect_stream,
    source_hint,
)
from secmon.store.writer import WriteStats
from secmon.types import utcnow

DEFAULT_STATE = "~/.local/state/secmon/collect"


def _state_dir(state: Path | None, needed: bool) -> Path | None:
    if state is None and needed:
        state = Path(os.environ.get("SECMON_STATE_DIR", DEFAULT_STATE))
    return state.expanduser() if state else None


def _counts(stats: WriteStats, url_undecodable: int = 0) -> str:
    text = (f"{stats.events} events shipped, {stats.dead_letters + stats.rejected} dead-lettered, "
            f"{stats.skipped} skipped")
    if url_undecodable:
        text += f", {url_undecodable} with a URL not decoded exactly (tagged {URL_PROBLEM_TAG})"
    if stats.retries:
        text += f", {stats.retries} retries"
    if stats.rejected:
        text += f" ({stats.rejected} of them refused by Elasticsearch)"
    if stats.spooled_batches:
        text += f", {stats.spooled_batches} batches went through the spool"
    return text


def _summary(name: str, report: CollectReport) -> dict[str, Any]:
    """One input's counts, as --json prints them."""
    stats = report.stats
    return {"input": name, "pipeline": report.pipeline, "events": stats.events,
            "dead_letters": stats.dead_letters + stats.rejected, "rejected": stats.rejected,
            "skipped": stats.skipped, "lost": sum(c.lost for c in report.sources.values()),
            "url_undecodable": report.url_undecodable, "retries": stats.retries,
            "spooled_batches": stats.spooled_batches, "damaged": report.damaged, "all_dead": report.all_dead,
            "sources": {n: {"events": c.events, "dead_letters": c.dead_letters, "skipped": c.skipped,
                            "url_undecodable": c.url_undecodable} for n, c in sorted(report.sources.items())},
            "notes": list(report.notes)}


def _verdict(reports: list[tuple[str, CollectReport]], settings: Settings, source: str,
             undecodable_fail: bool = False) -> None:
    """Warn about inputs that lost data, were dead-lettered whole or hold URLs that could not be decoded
    exactly; exit 4 if any lost data or was dead-lettered whole (or, with `undecodable_fail`, held such a URL)."""
    bad = False
    for name, report in reports:
        if report.url_undecodable:
            bad = bad or undecodable_fail
            click.echo(f"secmon: {'error' if undecodable_fail else 'warning'}: {safe(name)}: "
                       f"{report.url_undecodable} events have a URL that could not be decoded exactly (an invalid "
                       f"escape, bytes that are not UTF-8, overlong UTF-8, or more than {MAX_ROUNDS} layers): "
                       f"stored with url.original as sent and tagged {URL_PROBLEM_TAG} (search tags:"
                       f"{URL_PROBLEM_TAG}); web rules saw their path and query partly decoded", err=True)
        lost = sum(c.lost for c in report.sources.values())
        if report.damaged:
            bad = True
            counted = f"{lost} events" if lost else "events"
            click.echo(f"secmon: warning: {name}: {counted} could not be read (the data is damaged); the dead-letter "
                       f"index names each stretch that was lost", err=True)
        if report.all_dead:
            bad = True
            samples = [s for c in report.sources.values() for s in c.samples]
            hint = source_hint(settings, samples, source, utcnow())
            dead = report.stats.dead_letters + report.stats.rejected
            click.echo(f"secmon: warning: {name}: every record was dead-lettered ({dead}); {hint}", err=True)
    if bad:
        raise Exit(ExitCode.INPUT)


@click.command()
@click.argument("files", nargs=-1)
@agency_option(required=True)
@click.option("--source", "-s", required=True, help="Pipeline id (pipelines/<id>.yml), e.g. linux-auth.")
@click.option("--year", type=click.IntRange(1990, 2100),
              help="Year of the first line, for archived logs whose timestamps carry none.")
@click.option("--follow", "-f", is_flag=True,
              help="Run until stopped: FILES are glob patterns, followed through rotation; syslog listeners.")
@click.option("--syslog-udp", metavar="HOST:PORT", help="With --follow: receive syslog over UDP.")
@click.option("--syslog-tcp", metavar="HOST:PORT", help="With --follow: receive syslog over TCP.")
@click.option("--syslog-tls", metavar="HOST:PORT", help="With --follow: receive syslog over TLS (RFC 5425).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Certificate (PEM) for --syslog-tls.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Private key (PEM) for --syslog-tls.")
@click.option("--syslog-max-connections", type=click.IntRange(1, 100_000), default=Limits.max_connections,
              show_default=True, metavar="N", help="TCP/TLS syslog connections at once; more are closed and counted.")
@click.option("--syslog-idle-timeout", type=click.FloatRange(1, 7 * 86400), default=Limits.idle_timeout,
              show_default=True, metavar="SECONDS", help="Close a TCP/TLS syslog connection silent this long.")
@click.option("--from-end", is_flag=True, help="With --follow: files never seen before start at their end.")
@click.option("--multiline-start", metavar="REGEX",
              help="A line matching REGEX starts a record; other lines continue the one before.")
@click.option("--state", type=click.Path(path_type=Path, file_okay=False),
              help=f"Folder for checkpoints and the spool; files resume where the last run stopped "
                   f"(default with --follow: $SECMON_STATE_DIR or {DEFAULT_STATE}).")
@click.option("--spool-max", type=click.IntRange(1, 1 << 20), default=512, show_default=True, metavar="MB",
              help="Bound of the on-disk spool used while Elasticsearch is unreachable.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=2000, show_default=True,
              help="Events per bulk request.")
@click.option("--batch-wait", type=click.FloatRange(0.05, 60), default=1.0, show_default=True, metavar="SECONDS",
              help="Ship a partial batch after this long.")
@click.option("--max-line", type=click.IntRange(1, 1 << 20), default=1024, show_default=True, metavar="KIB",
              help="A longer record becomes a dead letter keeping its first 64 KiB and its length.")
@click.option("--in-flight", type=click.IntRange(1, 64), default=DEFAULT_IN_FLIGHT, show_default=True, metavar="N",
              help="Bulk requests out at once (checkpoints still move only past batches all stored before them).")
@click.option("--undecodable-urls", type=click.Choice(["warn", "error"]), default="warn", show_default=True,
              help="Events whose URL cannot be decoded exactly are stored, tagged url_undecodable, counted and "
                   "warned about; `error` also exits 4.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts per input as JSON (warnings stay on stderr).")
@click.option("--workers", type=click.IntRange(1, 64), default=DEFAULT_WORKERS, show_default=True, metavar="N",
              help="Processes normalizing FILES (not with --follow); 1: the collecting process itself "
                   "(more only pay where spare cores remain beside Elasticsearch: bench/ingest).")
@click.pass_context
def collect(ctx: click.Context, files: tuple[str, ...], agency: str, source: str, year: int | None, follow: bool,
            syslog_udp: str | None, syslog_tcp: str | None, syslog_tls: str | None, tls_cert: str | None,
            tls_key: str | None, syslog_max_connections: int, syslog_idle_timeout: float, from_end: bool,
            multiline_start: str | None, state: Path | None, spool_max: int, batch_size: int, batch_wait: float,
            max_line: int, in_flight: int, undecodable_urls: str, as_json: bool, workers: int) -> None:
    """Parse log FILES into ECS events and ship them to Elasticsearch (`-` reads stdin).

    Prints, per file, the events shipped, the lines dead-lettered (in the dead-letter
    index with the reason), the lines skipped (blank or dropped by the pipeline) and the
    events whose URL could not be decoded exactly (tagged url_undecodable).
    Exits 4 when an input lost data (a damaged EVTX file) or had every record dead-lettered
    (or, with --undecodable-urls error, held a URL that could not be decoded exactly).
    """
    _collector_gc()
    listening = syslog_udp or syslog_tcp or syslog_tls
    if not follow and (listening or from_end):
        raise click.UsageError("--syslog-udp/--syslog-tcp/--syslog-tls and --from-end need --follow")
    if not files and not listening:
        raise click.UsageError("give FILES (or `-` for stdin)" + (", or a syslog listener" if follow else ""))
    if follow and "-" in files:
        raise click.UsageError("--follow reads files and syslog, not stdin")
    if follow and workers > 1:
        raise click.UsageError("--workers applies to FILES read to their end, not to --follow")
    options = CollectOptions(state_dir=_state_dir(state, follow), multiline_start=multiline_start,
                             from_end=from_end, spool_max_bytes=spool_max << 20, batch_events=batch_size,
                             batch_wait=batch_wait, max_line=max_line << 10, in_flight=in_flight,
                             workers=workers)
    if follow:
        limits = Limits(max_connections=syslog_max_connections, idle_timeout=syslog_idle_timeout)
        _follow(ctx, files, agency, source, year, options, (syslog_udp, syslog_tcp, syslog_tls), tls_cert, tls_key,
                limits, as_json)
        return
    es, settings = es_of(ctx), settings_of(ctx)
    paths = [Path(name) for name in files if name != "-"]
    for path in paths:
        if not path.is_file():
            raise InputError("no such file" if not path.exists() else "not a regular file", hint=str(path))
    reports: list[tuple[str, CollectReport]] = []
    if "-" in files:
        report = collect_stream(es, settings, sys.stdin.buffer, agency, source, utcnow(), year, options)
        if not as_json:
            click.echo(f"-: {_counts(report.stats, report.url_undecodable)}")
        reports.append(("-", report))
    bars = _ProgressBars() if sys.stderr.isatty() else None
    for path, report in collect_files(es, settings, paths, agency, source, utcnow(), year, options,
                                      bars.start if bars else None):
        if bars:
            bars.finish()
        if not as_json:
            click.echo(f"{safe(path)}: {_counts(report.stats, report.url_undecodable)}")
        for note in report.notes:  # e.g. resumed at a byte offset, normalized in one process (stderr: --json stays clean)
            click.echo(f"note: {safe(path)}: {safe(note)}", err=True)
        reports.append((str(path), report))
    if as_json:
        click.echo(to_json({"inputs": [_summary(name, report) for name, report in reports]}))
    _verdict(reports, settings, source, undecodable_urls == "error")


def _collector_gc() -> None:
    """The collector makes several dicts a line that reference counting frees at once; the cyclic
    collector's passes over every object of the imported modules (about 70,000) then cost a tenth of
    its CPU (bench/ingest). Those modules stay for the life of the process: set them aside (`freeze`)
    and let the young generation grow larger before a pass."""
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)


class _ProgressBars:
    """One progress bar per file on a terminal (stderr, so stdout stays the counts)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._done = 0

    def start(self, path: Path) -> Callable[[int], None]:
        self.finish()
        self._bar = click.progressbar(length=max(1, path.stat().st_size), label=path.name, file=sys.stderr)
        self._bar.__enter__()
        self._done = 0
        return self._update

    def _update(self, position: int) -> None:
        self._bar.update(position - self._done)
        self._done = position

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _follow(ctx: click.Context, patterns: tuple[str, ...], agency: str, source: str, year: int | None,
            options: CollectOptions, listen: tuple[str | None, str | None, str | None],
            tls_cert: str | None, tls_key: str | None, limits: Limits, as_json: bool = False) -> None:
    udp, tcp, tls = (Address.parse(text, flag) if text else None
                     for text, flag in zip(listen, ("--syslog-udp", "--syslog-tcp", "--syslog-tls")))
    if tls and not (tls_cert and tls_key):
        raise click.UsageError("--syslog-tls needs --tls-cert and --tls-key")
    from secmon.collect.tail import matches_a_file
    from secmon.service.follow import FollowSpec, collect_follow  # the follow loop: only --follow needs it

    es, settings = es_of(ctx), settings_of(ctx)
    listener = None
    if udp or tcp or tls:
        context = tls_context(tls_cert, tls_key) if tls and tls_cert and tls_key else None
        listener = Listener(udp=udp, tcp=tcp, tls=tls, tls_context=context, limits=limits).start()
        for kind, (host, port) in listener.addresses.items():
            click.echo(f"listening for syslog on {kind} {host}:{port}", err=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    for pattern in patterns:
        if not matches_a_file(pattern):
            click.echo(f"secmon: warning: --follow {safe(pattern)!r} matches no file (yet); following it: files "
                       "that appear later are read", err=True)
    try:
        report = collect_follow(es, settings, FollowSpec(patterns, listener), agency, source,
                                        utcnow(), stop, options, year)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if listener:
            listener.stop()
    if as_json:
        click.echo(to_json({"inputs": [{**_summary("follow", report), "syslog_dropped": report.syslog_dropped,
                                        "unmatched_patterns": list(report.unmatched)}]}))
    else:
        _print_report(report)
    for pattern in report.unmatched:  # as a named file that does not exist: exit 4
        click.echo(f"secmon: error: --follow {safe(pattern)!r} matched no file while collect ran", err=True)
    if report.unmatched:
        raise Exit(ExitCode.INPUT)


def _print_report(report: CollectReport) -> None:
    for name, counts in sorted(report.sources.items()):
        click.echo(f"{safe(name)}: {counts.events} events, {counts.dead_letters} dead-lettered, {counts.skipped} "
                   f"skipped" + (f", {counts.url_undecodable} with a URL not decoded exactly"
                                 if counts.url_undecodable else ""))
    click.echo(f"total: {_counts(report.stats, report.url_undecodable)}" + (
        f", {report.syslog_dropped} syslog messages dropped (queue full)" if report.syslog_dropped else ""))
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
