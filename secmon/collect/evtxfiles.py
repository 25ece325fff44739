"""Windows event logs (.evtx) as JSON records, read by the Rust-backed `evtx` package.

Each record's text is the compact JSON of `{"Event": {"System": ..., "EventData"|"UserData": ...}}`
(what the Windows pipelines parse). Its id is the event's own identity - computer,
channel, record number and a digest of the record - not the file's: EVTX files
share their first kilobytes (a mostly constant header), so a file fingerprint
would give two different files the same ids; and the same event exported twice
is stored once. (The record header's time is no help: crafted or re-exported
files often carry 1601-01-01 there.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from secmon.collect.files import Record, digest
from secmon.errors import InputError, Location


MAX_BROKEN_CHUNKS = 100


def read_evtx(path: Path) -> Iterator[Record]:
    import evtx  # the native extension loads only when an EVTX file is read

    try:
        parser = evtx.PyEvtxParser(str(path))
    except (OSError, RuntimeError) as exc:
        raise InputError(f"cannot read EVTX file: {exc}", location=Location(str(path))) from None
    records = parser.records_json()
    errors = 0
    while True:
        try:
            raw = next(records)
        except StopIteration:
            return
        except RuntimeError as exc:  # a damaged chunk: say so in the dead-letter index, read on
            errors += 1
            if errors > MAX_BROKEN_CHUNKS:
                raise InputError(f"EVTX file too damaged to read on: {exc}", location=Location(str(path))) from None
            yield Record(-errors, f"unreadable EVTX data in {path}: {exc}", f"evtx-error:{path}:{errors}", 0)
            continue
        assert raw is not None  # typed Optional by the binding; records are dicts
        number = int(raw["event_record_id"])
        data = json.loads(raw["data"])
        system = data.get("Event", {}).get("System", {}) if isinstance(data, dict) else {}
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        key = f"evtx:{system.get('Computer', '')}:{system.get('Channel', '')}:{number}:{digest(text.encode())}"
        yield Record(number, text, key, number)  # no checkpoint: a re-read overwrites, by id


def is_evtx(path: Path) -> bool:
    if path.suffix.lower() == ".evtx":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(8) == b"ElfFile\0"
    except OSError:
        return False
