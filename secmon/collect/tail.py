"""Follow files by glob, through rotation by rename and by copytruncate.

Each poll expands the globs, keeps reading every open file from where it
stopped, and notices three things:
- a new file (by device and inode): its content (a fingerprint of its first
  bytes) is looked up in the checkpoint registry, so a file seen before resumes
  exactly where shipping stopped, under any name, with the record names it had;
- a file renamed away (rotation by rename): its open handle is read to the end
  before it is closed, so its last lines are not lost;
- a file truncated or rewritten in place (copytruncate): its first bytes no
  longer match its fingerprint; it starts over under a new identity, and the
  copy, which has the old content, is picked up at the old checkpoint when
  the glob matches it (use `app.log*`, not `app.log`).
Only complete lines are read: a line being written is read once its newline is.
A line longer than the cap is read up to its newline without being held: its
head becomes a record that says so (a dead letter), and reading goes on.
"""

from __future__ import annotations

import glob
import os
import re
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from secmon.collect.files import (
    FINGERPRINT_BYTES,
    HEAD_BYTES,
    MAX_LINE,
    READ_CHUNK,
    Record,
    digest,
    identity,
    split_lines,
    too_long,
)
from secmon.collect.multiline import Joiner, Line
from secmon.collect.registry import Registry

MULTILINE_QUIET = 2.0  # seconds without a new line before a joined record is complete
CLOSE_AFTER_IDLE_POLLS = 3  # polls at end of a file that left the glob before it is closed


@dataclass
class _Tail:
    key: tuple[int, int]  # (device, inode)
    path: str
    handle: BinaryIO
    content: str  # fingerprint of the first `length` bytes: the checkpoint key
    ident: str  # what its records are named with
    length: int  # bytes fingerprinted
    pos: int  # next unread byte: the start of the next line
    joiner: Joiner
    last_line: float = field(default_factory=time.monotonic)
    idle: int = 0
    long: bytes | None = None  # the head of a line over the cap whose newline is still to come
    scan: int = 0  # with `long`: how far its newline was looked for


def matches_a_file(pattern: str) -> bool:
    """Whether the glob `pattern` names a regular file now (as `Follower` reads them)."""
    return any(os.path.isfile(path) for path in glob.iglob(pattern))


class Follower:
    def __init__(self, patterns: list[str], registry: Registry, *, from_end: bool = False,
                 multiline: re.Pattern[str] | None = None, max_bytes: int = 4 << 20, max_line: int = MAX_LINE):
        self._patterns = patterns
        self._registry = registry
        self._multiline = multiline
        self._max_bytes = max_bytes
        self._max_line = max_line
        self._tails: dict[tuple[int, int], _Tail] = {}
        self._first_poll = True
        self._from_end = from_end
        # content -> (length, path, ident, (device, inode)) of every file read: checkpoints, and copies
        self._known: dict[str, tuple[int, str, str, tuple[int, int]]] = {}
        self.skipped = 0
        self.matched: set[str] = set()  # the patterns that have matched a file at some poll (the others are said)

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
                    self.matched.add(pattern)
        return found

    def poll(self) -> list[Record]:
        """Whatever complete records are new, up to about `max_bytes` per file."""
        seen = self.paths()
        records: list[Record] = []
        for key, tail in list(self._tails.items()):
            if key in seen:
                tail.path = seen[key][0]
                self._known[tail.content] = (tail.length, tail.path, tail.ident, tail.key)
            records += self._read(tail)
            if key not in seen and tail.idle >= CLOSE_AFTER_IDLE_POLLS:
                records += self._records(tail, tail.joiner.flush())
                tail.handle.close()
                del self._tails[key]
        held = {t.content for t in self._tails.values()}
        for key, (path, size) in seen.items():
            if key not in self._tails and size > 0:
                opened = self._open(key, path, size, held)
                if opened is not None:
                    held.add(opened.content)
                    self._tails[key] = opened
                    records += self._read(opened)
        self._first_poll = False
        return records

    def close(self) -> None:
        for tail in self._tails.values():
            tail.handle.close()
        self._tails.clear()

    def _open(self, key: tuple[int, int], path: str, size: int, held: set[str]) -> _Tail | None:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - kept open across polls, closed in poll/close
        except OSError:
            return None
        head = handle.read(FINGERPRINT_BYTES)
        found = self._registry.find(head, size)
        if found is not None and found.key in held:
            handle.close()  # a copy of a file being read (copytruncate, first half): wait for the truncation
            return None
        recalled = self._recall(head, size) if found is None else None
        if found is not None:
            content, ident, length, start = found.key, found.ident, found.length, found.offset
        elif recalled is not None and recalled[0] not in held and recalled[1][3] != key:
            # a copy of a file this process read, whose checkpoint is not saved yet (copytruncate right
            # after a batch): read again from the start under the same names, which overwrites
            content, (length, _, ident, _), start = recalled[0], recalled[1], 0
        else:
            length = min(size, FINGERPRINT_BYTES)
            content, ident = digest(head[:length]), identity(key[0], key[1], head)
            if self._registry.get(content) is not None or content in held:
                # rewritten in place with the same first bytes: another file under the same name and inode
                suffix = f"-{time.time_ns():x}"
                content, ident = content + suffix, ident + suffix
            start = self._line_start(handle, size) if self._from_end and self._first_poll else 0
        self._known[content] = (length, path, ident, key)
        return _Tail(key, path, handle, content, ident, length, start, Joiner(self._multiline, self._max_line))

    def _recall(self, head: bytes, size: int) -> tuple[str, tuple[int, str, str, tuple[int, int]]] | None:
        """A file this process has read (by the fingerprint of its first bytes), if `head` starts like it."""
        for content, known in self._known.items():
            length = known[0]
            if length <= size and length <= len(head) and digest(head[:length]) == content:
                return content, known
        return None

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
        return digest(tail.handle.read(tail.length)) != tail.content.split("-")[0]

    def _read(self, tail: _Tail) -> list[Record]:
        size = os.fstat(tail.handle.fileno()).st_size
        if self._truncated(tail, size):
            pending = self._records(tail, tail.joiner.flush())
            held = {t.content for t in self._tails.values()}
            replacement = self._open(tail.key, tail.path, size, held) if size else None
            tail.handle.close()
            if replacement is None:
                del self._tails[tail.key]  # empty now: found again by the next poll once written to
                return pending
            self._tails[tail.key] = replacement
            return pending + self._read(replacement)
        before = (tail.pos, tail.scan)
        lines: list[Line] = []
        budget = self._max_bytes
        while tail.pos < size and budget > 0:
            if tail.long is not None:
                budget -= self._skip_long(tail, size, lines)
                if tail.long is not None:
                    break  # its newline is not written yet
                continue
            tail.handle.seek(tail.pos)
            data = tail.handle.read(min(size - tail.pos, max(budget, self._max_line + 1)))
            budget -= len(data)
            cut = data.rfind(b"\n") + 1
            for line in split_lines(data[:cut], tail.pos, self._max_line):
                lines += tail.joiner.feed(line)
            tail.pos += cut
            if cut == 0 and len(data) <= self._max_line:
                break  # a line in progress: read once its newline is
            if len(data) - cut > self._max_line:  # no newline within the cap: skip to it, keep the head
                tail.long, tail.scan = data[cut:cut + HEAD_BYTES], tail.pos + len(data) - cut
        if (tail.pos, tail.scan) == before:  # nothing new (or only part of a line): idle
            tail.idle += 1
            if tail.joiner.pending and time.monotonic() - tail.last_line > MULTILINE_QUIET:
                return self._records(tail, tail.joiner.flush())
            return []
        tail.idle = 0
        if lines:
            tail.last_line = time.monotonic()
        return self._records(tail, lines)

    def _skip_long(self, tail: _Tail, size: int, lines: list[Line]) -> int:
        """Look for the newline of a line over the cap; the bytes read."""
        assert tail.long is not None
        if size < tail.scan:  # shrank under us: look again from the line's start
            tail.long = None
            return 0
        tail.handle.seek(tail.scan)
        chunk = tail.handle.read(min(size - tail.scan, READ_CHUNK))
        cut = chunk.find(b"\n")
        if cut < 0:
            tail.scan += len(chunk)
            return max(len(chunk), 1)
        end = tail.scan + cut + 1
        lines += tail.joiner.feed(Line(tail.pos, end, tail.long.decode("utf-8", "replace"), end - tail.pos))
        tail.pos, tail.long = end, None
        return cut + 1

    def _records(self, tail: _Tail, lines: list[Line]) -> list[Record]:
        out = []
        for line in lines:
            if line.length:
                out.append(Record(line.offset, line.text, f"{tail.ident}:{line.offset}", line.end, tail.content,
                                  problem=too_long(line.length, self._max_line, len(line.text.encode())),
                                  length=line.length))
            elif line.text.strip():
                out.append(Record(line.offset, line.text, f"{tail.ident}:{line.offset}", line.end, tail.content))
            else:
                self.skipped += 1
        return out

    def marks_path(self, content: str) -> tuple[int, str, str]:
        """(fingerprinted length, path, ident) of a file being read (by its checkpoint key)."""
        length, path, ident, _ = self._known.get(content, (FINGERPRINT_BYTES, "", content, (0, 0)))
        return length, path, ident
