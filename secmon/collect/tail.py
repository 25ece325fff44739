"""Follow files by glob, through rotation by rename and by copytruncate.

Each poll expands the globs, keeps reading every open file from where it
stopped, and notices three things:
- a new file (by inode): its identity (fingerprint of its first bytes) is
  looked up in the checkpoint registry, so a file seen before resumes exactly
  where shipping stopped, under any name;
- a file renamed away (rotation by rename): its open handle is read to the end
  before it is closed, so its last lines are not lost;
- a file truncated or rewritten in place (copytruncate): its first bytes no
  longer match its identity; it starts over under a new identity, and the
  copy, which has the old identity, is picked up at the old checkpoint when
  the glob matches it (use `app.log*`, not `app.log`).
Only complete lines are read: a line being written is read once its newline is.
"""

from __future__ import annotations

import glob
import os
import re
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from secmon.collect.files import FINGERPRINT_BYTES, Record, digest, split_lines
from secmon.collect.multiline import Joiner, Line
from secmon.collect.registry import Registry

MULTILINE_QUIET = 2.0  # seconds without a new line before a joined record is complete
CLOSE_AFTER_IDLE_POLLS = 3  # polls at end of a file that left the glob before it is closed


@dataclass
class _Tail:
    key: tuple[int, int]  # (device, inode)
    path: str
    handle: BinaryIO
    ident: str
    length: int  # bytes fingerprinted
    pos: int  # next unread byte
    joiner: Joiner
    last_line: float = field(default_factory=time.monotonic)
    idle: int = 0


class Follower:
    def __init__(self, patterns: list[str], registry: Registry, *, from_end: bool = False,
                 multiline: re.Pattern[str] | None = None, max_bytes: int = 4 << 20):
        self._patterns = patterns
        self._registry = registry
        self._multiline = multiline
        self._max_bytes = max_bytes
        self._tails: dict[tuple[int, int], _Tail] = {}
        self._first_poll = True
        self._from_end = from_end
        self._known: dict[str, tuple[int, str]] = {}  # ident -> (fingerprinted length, path), for checkpoints
        self.skipped = 0

    def paths(self) -> dict[tuple[int, int], tuple[str, int]]:
        found: dict[tuple[int, int], tuple[str, int]] = {}
        for pattern in self._patterns:
            for path in sorted(glob.glob(pattern)):
                try:
                    info = os.stat(path)
                except OSError:
                    continue  # removed between glob and stat
                if os.path.isfile(path):
                    found.setdefault((info.st_dev, info.st_ino), (path, info.st_size))
        return found

    def poll(self) -> list[Record]:
        """Whatever complete records are new, up to about `max_bytes` per file."""
        seen = self.paths()
        records: list[Record] = []
        for key, tail in list(self._tails.items()):
            if key in seen:
                tail.path = seen[key][0]
                self._known[tail.ident] = (tail.length, tail.path)
            records += self._read(tail)
            if key not in seen and tail.idle >= CLOSE_AFTER_IDLE_POLLS:
                records += self._records(tail, tail.joiner.flush())
                tail.handle.close()
                del self._tails[key]
        held = {t.ident for t in self._tails.values()}
        for key, (path, size) in seen.items():
            if key not in self._tails and size > 0:
                opened = self._open(key, path, size, held)
                if opened is not None:
                    held.add(opened.ident)
                    self._tails[key] = opened
                    records += self._read(opened)
        self._first_poll = False
        return records

    def close(self) -> None:
        for tail in self._tails.values():
            tail.handle.close()
        self._tails.clear()

    def _identify(self, handle: BinaryIO, size: int) -> tuple[str, int, int] | None:
        """(identity, fingerprinted length, checkpoint offset) for a file's current content."""
        for length in sorted(self._registry.lengths() | {FINGERPRINT_BYTES}, reverse=True):
            if length > size:
                continue
            handle.seek(0)
            ident = digest(handle.read(length))
            known = self._registry.get(ident)
            if known is not None and known.offset <= size:
                return ident, length, known.offset
        return None

    def _open(self, key: tuple[int, int], path: str, size: int, held: set[str]) -> _Tail | None:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - kept open across polls, closed in poll/close
        except OSError:
            return None
        found = self._identify(handle, size)
        if found is not None and found[0] in held:
            handle.close()  # a copy of a file being read (copytruncate, first half): wait for the truncation
            return None
        if found is None:
            length = min(size, FINGERPRINT_BYTES)
            handle.seek(0)
            ident = digest(handle.read(length))
            if self._registry.get(ident) is not None or ident in held:
                ident = f"{ident}-{time.time_ns():x}"  # rewritten in place with the same first bytes
            start = self._line_start(handle, size) if self._from_end and self._first_poll else 0
            found = (ident, length, start)
        ident, length, start = found
        self._known[ident] = (length, path)
        return _Tail(key, path, handle, ident, length, start, Joiner(self._multiline))

    @staticmethod
    def _line_start(handle: BinaryIO, size: int) -> int:
        """The start of the line in progress at `size`: where `--from-end` begins."""
        back = min(size, 1 << 16)
        handle.seek(size - back)
        data = handle.read(back)
        cut = data.rfind(b"\n")
        return size - back + cut + 1 if cut >= 0 else (0 if back == size else size)

    def _truncated(self, tail: _Tail, size: int) -> bool:
        if size < tail.pos:
            return True
        tail.handle.seek(0)
        return digest(tail.handle.read(tail.length)) != tail.ident.split("-")[0]

    def _read(self, tail: _Tail) -> list[Record]:
        size = os.fstat(tail.handle.fileno()).st_size
        if self._truncated(tail, size):
            pending = self._records(tail, tail.joiner.flush())
            held = {t.ident for t in self._tails.values()}
            replacement = self._open(tail.key, tail.path, size, held) if size else None
            tail.handle.close()
            if replacement is None:
                del self._tails[tail.key]  # empty now: found again by the next poll once written to
                return pending
            self._tails[tail.key] = replacement
            return pending + self._read(replacement)
        if size == tail.pos:
            tail.idle += 1
            if tail.joiner.pending and time.monotonic() - tail.last_line > MULTILINE_QUIET:
                return self._records(tail, tail.joiner.flush())
            return []
        tail.idle = 0
        tail.handle.seek(tail.pos)
        data = tail.handle.read(min(size - tail.pos, self._max_bytes))
        cut = data.rfind(b"\n") + 1
        lines: list[Line] = []
        for line in split_lines(data[:cut], tail.pos):
            lines += tail.joiner.feed(line)
        if cut:
            tail.last_line = time.monotonic()
        tail.pos += cut
        return self._records(tail, lines)

    def _records(self, tail: _Tail, lines: list[Line]) -> list[Record]:
        out = []
        for line in lines:
            if line.text.strip():
                out.append(Record(line.offset, line.text, f"{tail.ident}:{line.offset}", line.end, tail.ident))
            else:
                self.skipped += 1
        return out

    def marks_path(self, ident: str) -> tuple[int, str]:
        """(fingerprinted length, path) of an identity being read, for its checkpoint."""
        return self._known.get(ident, (FINGERPRINT_BYTES, ""))
