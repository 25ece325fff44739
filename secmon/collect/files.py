"""Read a log file as (offset, line) records with a stable identity.

The identity of a file is a fingerprint of its first bytes, not its path, so a
renamed (rotated) or copied file keeps the ids of the records already shipped
and re-shipping never duplicates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from secmon.errors import InputError, Location

FINGERPRINT_BYTES = 1024


@dataclass(frozen=True)
class Record:
    offset: int  # byte offset of the line's first byte
    text: str
    record_id: str  # fingerprint + offset: unique and stable


def fingerprint(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(FINGERPRINT_BYTES)
    return hashlib.sha256(head).hexdigest()[:16]


def read_records(path: Path) -> Iterator[Record]:
    """Every line of `path`. Undecodable bytes are replaced, not fatal: the line is kept."""
    try:
        ident = fingerprint(path)
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read log file: {exc.strerror}", location=Location(str(path))) from None
    with handle:
        offset = 0
        for raw in handle:
            text = raw.decode("utf-8", errors="replace")
            if text.strip():
                yield Record(offset, text, f"{ident}:{offset}")
            offset += len(raw)
