"""Read a log file as (offset, line) records with a stable identity.

A file's identity names its records (`identity:offset`), so it must not change
while the file grows, and must change when the file is replaced:
- its device and inode: the same file on disk, under any name (rotation by rename);
- plus its first line (at most the first KiB): a file truncated and rewritten in
  place, or an inode reused by a new file, starts with other bytes.
Both are there from the first line on, so a file of a few hundred bytes keeps its
ids when it grows (a fingerprint of the first KiB changed with every line added
until the file reached a KiB, and re-collecting it duplicated its events). A copy
is a new file here; with a state folder its checkpoint entry, which remembers
the content, recognises it (collect/registry.py).

A line longer than the cap (`max_line`) is not held in memory: its head is kept
and the rest skipped up to its newline, and it becomes a record that says so
(`problem`), which the collector stores as a dead letter; reading goes on after it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from itertools import accumulate, chain, compress, repeat
from operator import add
from pathlib import Path
from typing import BinaryIO, NamedTuple

from secmon.collect.multiline import Joiner, Line
from secmon.errors import InputError, Location

FINGERPRINT_BYTES = 1024
READ_CHUNK = 1 << 20
PLAIN_SLICE = 1 << 16  # whole lines handed to `_plain` at a time (about this many bytes)
MAX_LINE = 1 << 20  # default cap of one record, in bytes (--max-line)
HEAD_BYTES = 64 << 10  # what a dead letter keeps of a record over the cap


class Record(NamedTuple):  # immutable, and cheaper to make than a frozen dataclass (one per record)
    offset: int  # byte offset of the record's first byte (EVTX: the record number)
    text: str  # the record (a record over the cap: its head)
    record_id: str  # source identity + offset: unique and stable
    end: int = 0  # where reading resumes after this record (the checkpoint once it is durable)
    source: str = ""  # identity of the file or stream, the checkpoint key
    problem: str = ""  # why this record cannot be parsed at all (too long, unreadable): a dead letter
    length: int = 0  # bytes of the record as written, when `text` is only its head
    lost: int = 0  # events known to be lost with this problem (unreadable EVTX records)


def digest(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()[:16]


def first_line(head: bytes) -> bytes:
    """The first line of `head` (the first KiB of a file), newline included, or all of it."""
    cut = head.find(b"\n", 0, FINGERPRINT_BYTES)
    return head[:cut + 1] if cut >= 0 else head[:FINGERPRINT_BYTES]


def identity(device: int, inode: int, head: bytes) -> str:
    """The name of a file's records: its device and inode, and its first line (see above)."""
    return "f" + digest(b"%d:%d:" % (device, inode) + first_line(head))


def fingerprint(path: Path) -> str:
    with path.open("rb") as handle:
        info = os.fstat(handle.fileno())
        return identity(info.st_dev, info.st_ino, handle.read(FINGERPRINT_BYTES))


def too_long(length: int, cap: int, kept: int) -> str:
    return (f"record of {length} bytes is longer than the limit of {cap} bytes (--max-line); "
            f"its first {kept} bytes are kept")


def split_lines(data: bytes, base: int, cap: int = MAX_LINE) -> Iterator[Line]:
    """Complete lines of `data` (which starts at file offset `base`), with their offsets; a line
    longer than `cap` keeps only its head (`Line.length` is then its real length)."""
    if data.isascii():  # the common case: decoded once, and a character offset is a byte offset
        text = data.decode("ascii")
        start = 0
        while (cut := text.find("\n", start)) >= 0:
            if cut + 1 - start > cap:
                yield Line(base + start, base + cut + 1, text[start:start + HEAD_BYTES], cut + 1 - start)
            else:
                yield Line(base + start, base + cut + 1, text[start:cut + 1])
            start = cut + 1
        return
    start = 0
    while (cut := data.find(b"\n", start)) >= 0:
        size = cut + 1 - start
        if size > cap:
            yield Line(base + start, base + cut + 1, data[start:start + HEAD_BYTES].decode("utf-8", "replace"), size)
        else:
            yield Line(base + start, base + cut + 1, data[start:cut + 1].decode("utf-8", errors="replace"))
        start = cut + 1


class FileReader:
    """Every record of a file or stream, from `start`; counts the blank lines it skips.

    Undecodable bytes are replaced, not fatal: the line is kept. A last line
    without a newline is read too (the file is complete: this is not a tail).
    Memory stays bounded by the cap and the read size, whatever the lines.
    """

    def __init__(self, name: str, *, start: int = 0, multiline: re.Pattern[str] | None = None,
                 max_line: int = MAX_LINE):
        self.name = name
        self.start = start
        self.skipped = 0
        self.position = start  # bytes consumed so far, for progress bars
        self.max_line = max_line
        self._multiline = multiline

    def records(self, handle: BinaryIO, ident: str, key: str = "") -> Iterator[Record]:
        """The records of `handle`, named `ident:offset`; `key` (default: `ident`) is their checkpoint key."""
        # Taken from lists of records by a C loop: the generator below is resumed once a list (a slice of
        # the file), not once a record.
        return chain.from_iterable(self._lists(handle, ident, key or ident))

    def _lists(self, handle: BinaryIO, ident: str, key: str) -> Iterator[list[Record]]:
        """`records` in lists, in order."""
        joiner = Joiner(self._multiline, self.max_line)
        cap = self.max_line
        offset = self.start  # file offset of `rest`'s first byte
        rest = b""
        long: tuple[int, bytes] | None = None  # (offset, head) of a line over the cap, read up to its newline
        while chunk := handle.read(READ_CHUNK):
            if long is not None:
                cut = chunk.find(b"\n")
                if cut < 0:
                    self.position += len(chunk)
                    continue
                end = self.position + cut + 1
                yield list(self._emit(joiner.feed(Line(long[0], end, long[1].decode("utf-8", "replace"),
                                                       end - long[0])), ident, key))
                long, chunk, offset = None, chunk[cut + 1:], end
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if self._multiline is None:  # no joining: each line is a record (the hot path, written out)
                # A slice of whole lines at a time: a list of Records a slice, so a chunk of two-byte
                # lines (hostile) is not half a million Records at once.
                at = 0
                while at < cut:
                    end = data.rfind(b"\n", at, at + PLAIN_SLICE) + 1 or data.find(b"\n", at + PLAIN_SLICE) + 1
                    yield self._plain(data[at:end], offset + at, ident, key)
                    at = end
            else:
                for line in split_lines(data[:cut], offset, cap):
                    yield list(self._emit(joiner.feed(line), ident, key))
            offset += cut
            self.position = offset + len(rest)
            if len(rest) > cap:  # no newline within the cap: keep the head, skip to the newline
                long, rest = (offset, rest[:HEAD_BYTES]), b""
        if long is not None:  # the file ends inside a line over the cap
            yield list(self._emit(joiner.feed(Line(long[0], self.position, long[1].decode("utf-8", "replace"),
                                                   self.position - long[0])), ident, key))
        elif rest:
            last = Line(offset, offset + len(rest), rest.decode("utf-8", "replace"))
            yield list(self._emit(joiner.feed(last), ident, key))
            self.position = offset + len(rest)
        yield list(self._emit(joiner.flush(), ident, key))

    def _plain(self, data: bytes, base: int, ident: str, key: str) -> list[Record]:
        """The records of complete lines `data` (from file offset `base`) when none are joined: what
        `split_lines` and `_emit` give, made a chunk at a time by C loops (split, decode, running sums
        of the byte lengths for the offsets, a Record made without its class's Python-level constructor)
        rather than a Python loop a line. A chunk with a line over the cap takes the general road."""
        pieces: list[bytes] | None = None
        if data.isascii():  # the common case: decoded once, and a character is a byte (no bytes pieces made)
            texts = data.decode("ascii").split("\n")
            texts.pop()  # (`data` ends with a newline: the piece after it is empty)
            sizes = list(map(len, texts))
        else:
            pieces = data.split(b"\n")
            pieces.pop()
            sizes = list(map(len, pieces))
        if not sizes:
            return []
        if max(sizes) >= self.max_line:  # a line over the cap (its newline included)
            return [record for line in split_lines(data, base, self.max_line) for record in self._emit([line], ident, key)]
        if pieces is not None:  # each line on its own, as split_lines decodes it: an invalid byte spoils one line only
            texts = list(map(bytes.decode, pieces, repeat("utf-8"), repeat("replace")))
        marks = list(accumulate(map(add, sizes, repeat(1)), initial=base))  # line starts, and the end
        starts, ends = marks[:-1], marks[1:]
        texts = list(map(add, texts, repeat("\n")))
        if any(map(str.isspace, texts)):  # blank lines (they hold their newline: never empty), as `_emit` skips
            kept = [not text.isspace() for text in texts]  # left out before their Records are made
            self.skipped += kept.count(False)
            starts, texts, ends = list(compress(starts, kept)), list(compress(texts, kept)), list(compress(ends, kept))
        return list(map(tuple.__new__, repeat(Record), zip(
            starts, texts, map((ident + ":").__add__, map(str, starts)), ends, repeat(key), repeat(""),
            repeat(0), repeat(0))))

    def _emit(self, lines: list[Line], ident: str, key: str) -> Iterator[Record]:
        for line in lines:
            if line.length:
                yield Record(line.offset, line.text, f"{ident}:{line.offset}", line.end, key,
                             problem=too_long(line.length, self.max_line, len(line.text.encode())),
                             length=line.length)
            elif line.text.strip():
                yield Record(line.offset, line.text, f"{ident}:{line.offset}", line.end, key)
            else:
                self.skipped += 1


def open_log(path: Path) -> tuple[BinaryIO, str, bytes]:
    """An open file, its identity, and its first KiB (to find its checkpoint by content)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read log file: {exc.strerror}", location=Location(str(path))) from None
    try:
        info = os.fstat(handle.fileno())
        head = handle.read(FINGERPRINT_BYTES)
        handle.seek(0)
    except OSError as exc:
        handle.close()
        raise InputError(f"cannot read log file: {exc.strerror}", location=Location(str(path))) from None
    return handle, identity(info.st_dev, info.st_ino, head), head


def read_records(path: Path, start: int = 0, multiline: re.Pattern[str] | None = None,
                 max_line: int = MAX_LINE, ident: str | None = None) -> Iterator[Record]:
    """Every record of `path` from byte `start` (a checkpoint), named by `ident` (default: the file's)."""
    handle, own, _ = open_log(path)
    with handle:
        handle.seek(start)
        yield from FileReader(str(path), start=start, multiline=multiline, max_line=max_line).records(
            handle, ident or own)


def stream_identity(handle: BinaryIO) -> tuple[bytes, str]:
    """Read the first bytes of a stream (stdin) to name it: the same input gives the same ids."""
    head = handle.read(FINGERPRINT_BYTES)
    return head, "stream-" + digest(head)
