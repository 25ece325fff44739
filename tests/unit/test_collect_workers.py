"""Normalizing in worker processes gives what one process gives, even when the year of yearless
syslog times turns while batches sent from an older state are out (no Elasticsearch needed:
the documents are compared as serialized)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson

from secmon.collect.files import read_records
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import load_pipelines
from secmon.service.records import SourceCounts, normalize_record
from secmon.service.collect_workers import Job, Workers, batches
from secmon.store.indices import Indices
from secmon.store.writer import BulkWriter, Doc, Origin
from tests.conftest import ROOT

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def write_log(path: Path, years: int = 3, per_month: int = 5) -> None:
    """Yearless syslog lines, a few a month for `years` years (the year turns each December),
    with a line no pipeline format takes now and then (a dead letter)."""
    lines = []
    for n in range(years * 12 * per_month):
        month = MONTHS[(n // per_month) % 12]
        lines.append(f"{month} {1 + n % 28:2d} 10:00:{n % 60:02d} combo sshd[{1000 + n}]: "
                     f"Failed password for root from 10.0.0.{n % 250} port {2000 + n} ssh2\n")
        if n % 37 == 0:
            lines.append(f"garbage {n}\n")
    path.write_text("".join(lines))


def normalizer(path: Path, year: int | None) -> Normalizer:
    pipeline = load_pipelines([ROOT / "pipelines"])["linux-auth"]
    return Normalizer(pipeline, agency="so-tttt", timezone="Asia/Ho_Chi_Minh", source=str(path),
                      now=datetime(2026, 6, 1, tzinfo=timezone.utc), year=year)


def one_process(path: Path, year: int | None) -> tuple[list[Doc], SourceCounts]:
    norm, counts = normalizer(path, year), SourceCounts()
    items, origins = [], []
    for record in read_records(path):
        item = normalize_record(norm, record, counts)
        items.append(item)
        origins.append(Origin("event", "so-tttt", str(path), record.offset, "linux-auth"))
    return BulkWriter(None, Indices("t")).serialize(items, "so-tttt", origins), counts  # type: ignore[arg-type]


def in_workers(path: Path, year: int | None, size: int) -> tuple[list[Doc], SourceCounts, int]:
    counts = SourceCounts()
    workers = Workers(Job(normalizer(path, year), BulkWriter(None, Indices("t")), "so-tttt", str(path)), 3,  # type: ignore[arg-type]
                      counts)
    docs: list[Doc] = []
    try:
        for rows in batches(read_records(path), size, 1 << 30):
            for batch, _ in workers.submit(rows, None):
                docs += batch
        for batch, _ in workers.drain():
            docs += batch
    finally:
        workers.close()
    return docs, counts, workers.redone


def comparable(doc: Doc) -> tuple[bytes, dict[str, object], Origin]:
    body = orjson.loads(doc.body)
    if doc.origin.kind == "dead_letter":
        body.pop("@timestamp")  # a dead letter is stamped with the time it was read
    return doc.head, body, doc.origin


def test_workers_give_the_documents_of_one_process_across_new_years(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    write_log(log)
    for year in (2005, None):  # given, or guessed from the first line and the clock
        expected, counts = one_process(log, year)
        docs, worker_counts, redone = in_workers(log, year, size=10)
        assert [comparable(d) for d in docs] == [comparable(d) for d in expected]
        assert (worker_counts.events, worker_counts.dead_letters) == (counts.events, counts.dead_letters)
        assert counts.dead_letters == 5 and worker_counts.samples == counts.samples
        # Batches went out from a state half a year old: some were normalized again from the right one.
        assert redone > 0
        assert b'"@timestamp":"2007-12' in b"".join(d.body for d in docs) or year is None


def test_worker_counts_add_up_every_field() -> None:
    """A worker's counts reach the report whole: a field `add` forgot would be silently zero with --workers."""
    from dataclasses import fields

    total, part = SourceCounts(), SourceCounts()
    for f in fields(SourceCounts):
        if f.type in ("int", int):
            setattr(part, f.name, 1)
    total.add(part)
    total.add(part)
    assert {f.name: getattr(total, f.name) for f in fields(SourceCounts) if f.type in ("int", int)} == {
        f.name: 2 for f in fields(SourceCounts) if f.type in ("int", int)}
