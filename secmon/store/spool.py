"""A bounded on-disk spool of bulk batches, for while Elasticsearch is unreachable.

Each batch is one segment file of NDJSON bulk lines, written durably
(temporary file, fsync, rename), so a batch in the spool survives a crash as
surely as one in Elasticsearch: the collector's checkpoint may move past it.
Segments are shipped oldest first and deleted once Elasticsearch has them.
A segment starts with a version line, then holds three lines a document: its
bulk action, its body, and its origin (see writer.py); segments written before
the origin existed (no version line) hold the first two only.
The spool never grows past `max_bytes`: when it is full the caller stops
reading (backpressure) instead of holding data in memory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from secmon.store.writer import Doc, Origin

SUFFIX = ".ndjson"
VERSION = b'{"secmon_spool":2}'
_EVENT_INDEX = re.compile(rb'"_index":"[^"]*-\d{4}\.\d{2}"')  # monthly: an event (else the dead-letter index)


def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class Spool:
    def __init__(self, folder: Path, max_bytes: int):
        self.folder = folder
        self.max_bytes = max_bytes
        self._segments: list[tuple[int, Path, int]] = []  # (sequence, path, bytes), oldest first
        self._opened = False

    def open(self) -> Spool:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.tmp"):  # a write cut short by a crash; its batch was not checkpointed
            stale.unlink()
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            if path.stem.isdigit():
                self._segments.append((int(path.stem), path, path.stat().st_size))
        self._segments.sort()
        self._opened = True
        return self

    @property
    def size(self) -> int:
        return sum(s for _, _, s in self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def append(self, docs: list[Doc]) -> bool:
        """Store a batch durably; False (and nothing written) when it would pass the bound."""
        data = VERSION + b"\n" + b"".join(part + b"\n" for doc in docs
                                          for part in (doc.head, doc.body, doc.origin.encode()))
        if self._segments and self.size + len(data) > self.max_bytes:
            return False  # one batch always fits, so a batch larger than the bound cannot block forever
        sequence = self._segments[-1][0] + 1 if self._segments else 1
        path = self.folder / f"{sequence:012d}{SUFFIX}"
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(self.folder)
        self._segments.append((sequence, path, len(data)))
        return True

    def oldest(self) -> tuple[Path, list[Doc]] | None:
        if not self._segments:
            return None
        path = self._segments[0][1]
        lines = path.read_bytes().splitlines()
        if lines and lines[0] == VERSION:
            return path, [Doc(lines[i], lines[i + 1], Origin.decode(lines[i + 2])) for i in range(1, len(lines) - 2, 3)]
        return path, [Doc(lines[i], lines[i + 1],  # written by an older secmon: no origin
                          Origin("event" if _EVENT_INDEX.search(lines[i]) else "dead_letter"))
                      for i in range(0, len(lines) - 1, 2)]

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._segments = [s for s in self._segments if s[1] != path]
