"""Read a log file as (offset, line) records with a stable identity.

The identity of a file is a fingerprint of its first bytes, not its path, so a
renamed (rotated) or copied file keeps the ids of the records already shipped
and re-shipping never duplicates.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from secmon.collect.multiline import Joiner, Line
from secmon.errors import InputError, Location

FINGERPRINT_BYTES = 1024
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Record:
    offset: int  # byte offset of the record's first byte (EVTX: the record number)
    text: str
    record_id: str  # source identity + offset: unique and stable
    end: int = 0  # where reading resumes after this record (the checkpoint once it is durable)
    source: str = ""  # identity of the file or stream, the checkpoint key


def digest(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()[:16]


def fingerprint(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(FINGERPRINT_BYTES)
    return digest(head)


def split_lines(data: bytes, base: int) -> Iterator[Line]:
    """Complete lines of `data` (which starts at file offset `base`), with their offsets."""
    start = 0
    while (cut := data.find(b"\n", start)) >= 0:
        yield Line(base + start, base + cut + 1, data[start:cut + 1].decode("utf-8", errors="replace"))
        start = cut + 1


class FileReader:
    """Every record of a file or stream, from `start`; counts the blank lines it skips.

    Undecodable bytes are replaced, not fatal: the line is kept. A last line
    without a newline is read too (the file is complete: this is not a tail).
    """

    def __init__(self, name: str, *, start: int = 0, multiline: re.Pattern[str] | None = None):
        self.name = name
        self.start = start
        self.skipped = 0
        self.position = start  # bytes consumed so far, for progress bars
        self._multiline = multiline

    def records(self, handle: BinaryIO, ident: str) -> Iterator[Record]:
        joiner = Joiner(self._multiline)
        offset = self.start
        rest = b""
        while chunk := handle.read(READ_CHUNK):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            for line in split_lines(data[:cut], offset):
                yield from self._emit(joiner.feed(line), ident)
            offset += cut
            self.position = offset
        if rest:
            yield from self._emit(joiner.feed(Line(offset, offset + len(rest), rest.decode("utf-8", "replace"))), ident)
            self.position = offset + len(rest)
        yield from self._emit(joiner.flush(), ident)

    def _emit(self, lines: list[Line], ident: str) -> Iterator[Record]:
        for line in lines:
            if line.text.strip():
                yield Record(line.offset, line.text, f"{ident}:{line.offset}", line.end, ident)
            else:
                self.skipped += 1


def open_log(path: Path) -> tuple[BinaryIO, str]:
    try:
        ident = fingerprint(path)
        return path.open("rb"), ident
    except OSError as exc:
        raise InputError(f"cannot read log file: {exc.strerror}", location=Location(str(path))) from None


def read_records(path: Path, start: int = 0, multiline: re.Pattern[str] | None = None) -> Iterator[Record]:
    """Every record of `path` from byte `start` (a checkpoint)."""
    handle, ident = open_log(path)
    with handle:
        handle.seek(start)
        yield from FileReader(str(path), start=start, multiline=multiline).records(handle, ident)


def stream_identity(handle: BinaryIO) -> tuple[bytes, str]:
    """Read the first bytes of a stream (stdin) to name it: the same input gives the same ids."""
    head = handle.read(FINGERPRINT_BYTES)
    return head, "stream-" + digest(head)
