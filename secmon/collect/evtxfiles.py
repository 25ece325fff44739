"""Windows event logs (.evtx) as JSON records, read by the Rust-backed `evtx` package.

Each record's text is the compact JSON of `{"Event": {"System": ..., "EventData"|"UserData": ...}}`
(what the Windows pipelines parse). Its id is the event's own identity - computer,
channel, record number and a digest of the record - not the file's: EVTX files
share their first kilobytes (a mostly constant header), so a file fingerprint
would give two different files the same ids; and the same event exported twice
is stored once. (The record header's time is no help: crafted or re-exported
files often carry 1601-01-01 there.)

A damaged chunk costs records, and the parser skips them without a word. The
chunk headers say which record numbers each chunk holds; every number they
promise (and every number between the lowest and the highest read: records are
numbered without gaps) that was not read is reported as a record naming the
missing range (`problem`, `lost`), which the collector stores as a dead letter.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from secmon.collect.files import Record, digest
from secmon.errors import InputError, Location

MAX_BROKEN_CHUNKS = 100
FILE_HEADER = 4096
CHUNK = 64 * 1024
MAX_CHUNK_RECORDS = CHUNK // 24  # a record takes at least 24 bytes: a header promising more is damaged
_RECORD_ERROR = re.compile(r"record number (\d+)")


def read_evtx(path: Path) -> Iterator[Record]:
    import evtx  # the native extension loads only when an EVTX file is read

    try:
        parser = evtx.PyEvtxParser(str(path))
    except (OSError, RuntimeError) as exc:
        raise InputError(f"cannot read EVTX file: {exc}", location=Location(str(path))) from None
    records = parser.records_json()
    errors = 0
    seen: set[int] = set()
    why: dict[int, str] = {}  # record number -> the parser's complaint about it
    while True:
        try:
            raw = next(records)
        except StopIteration:
            break
        except RuntimeError as exc:  # damaged data: said in the dead-letter index, reading goes on
            found = _RECORD_ERROR.search(str(exc))
            if found is not None:  # one record: reported with the gap it leaves, below
                why.setdefault(int(found.group(1)), str(exc))
                continue
            errors += 1
            if errors > MAX_BROKEN_CHUNKS:
                raise InputError(f"EVTX file too damaged to read on: {exc}", location=Location(str(path))) from None
            yield Record(-errors, "", f"evtx-error:{path}:{errors}", 0,
                         problem=f"unreadable EVTX data, its events are lost: {exc}")
            continue
        assert raw is not None  # typed Optional by the binding; records are dicts
        number = int(raw["event_record_id"])
        seen.add(number)
        data, text = compact(raw["data"])
        system = data.get("Event", {}).get("System", {}) if isinstance(data, dict) else {}
        key = f"evtx:{system.get('Computer', '')}:{system.get('Channel', '')}:{number}:{digest(text.encode())}"
        yield Record(number, text, key, number)  # no checkpoint: a re-read overwrites, by id
    for first, last in missing(promised(path) + [(n, n) for n in why], seen):
        count = last - first + 1
        span = f"record {first}" if count == 1 else f"records {first}-{last}"
        detail = next((why[n] for n in sorted(why) if first <= n <= last), "the file is damaged there")
        yield Record(-first, "", f"evtx-gap:{path}:{first}-{last}", 0, lost=count,
                     problem=f"EVTX {span} could not be read ({count} events lost): {detail}")


# A float in compact JSON: a number token (after `:`, `,` or `[`, before `,`, `]` or `}`) with a
# fraction or an exponent. orjson and json write floats differently (6.103515625e-05), never the rest.
# (A record is an object or an array: a float alone, with no such neighbours, is left to json.)
_FLOAT = re.compile(r"[:,\[]-?[0-9]+(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)[,\]}]")


def compact(record: str) -> tuple[Any, str]:
    """The record's JSON and its compact text (no spaces, non-ASCII as is): the text of a record,
    from which its id is made. orjson (four times faster), checked to write what `json.dumps(...,
    ensure_ascii=False, separators=(",", ":"))` writes: they differ only on floats (EVTX records
    hardly have any), so a text that may hold one is written by json, as is whatever orjson
    refuses (an integer beyond 64 bits, a lone surrogate)."""
    try:
        data = orjson.loads(record)
        text = orjson.dumps(data).decode()
        if text[:1] in ("{", "[") and _FLOAT.search(text) is None:
            return data, text
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass
    data = json.loads(record)
    return data, json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def promised(path: Path) -> list[tuple[int, int]]:
    """(first, last) record number of every chunk whose header is intact."""
    ranges = []
    try:
        with path.open("rb") as handle:
            handle.seek(FILE_HEADER)
            while len(header := handle.read(CHUNK)) >= 40:
                if header[:8] == b"ElfChnk\0":
                    first, last = struct.unpack_from("<QQ", header, 24)  # first and last record identifier
                    if first <= last < first + MAX_CHUNK_RECORDS:
                        ranges.append((first, last))
    except OSError:
        return []
    return ranges


def missing(ranges: list[tuple[int, int]], seen: set[int]) -> list[tuple[int, int]]:
    """Ranges of record numbers promised (or lying between two that were read) that were not read."""
    if not ranges and not seen:
        return []
    numbers = set(seen)
    for first, last in ranges:
        numbers.update((first, last))
    low, high = min(numbers), max(numbers)
    if high - low > 50_000_000:  # a header from another universe: trust only what was read
        low, high = min(seen, default=0), max(seen, default=-1)
    gaps: list[tuple[int, int]] = []
    start: int | None = None
    for number in range(low, high + 1):
        if number in seen:
            if start is not None:
                gaps.append((start, number - 1))
                start = None
        elif start is None:
            start = number
    if start is not None:
        gaps.append((start, high))
    return gaps


def is_evtx(path: Path) -> bool:
    if path.suffix.lower() == ".evtx":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(8) == b"ElfFile\0"
    except OSError:
        return False
