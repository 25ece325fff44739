"""Join continuation lines (stack traces, wrapped messages) into one record.

A record starts at a line matching the `start` pattern; the lines that do not
match belong to the record before them. The record's offset is its first
line's, and its end the last line's, so a checkpoint never splits a record.
A joined record never grows past the cap (`max_bytes`): it is cut there and
the next line starts a new one. A line over the cap is never joined.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Line(NamedTuple):  # a NamedTuple, not a dataclass: one is made per line read, and this is cheaper
    offset: int
    end: int
    text: str
    length: int = 0  # a line over the cap: its length in bytes (`text` is then only its head)


MAX_JOINED_LINES = 500  # a runaway record (a pattern that never matches) is cut, not kept in memory


class Joiner:
    def __init__(self, start: re.Pattern[str] | None, max_bytes: int = 1 << 20):
        self._start = start
        self._max_bytes = max_bytes
        self._parts: list[Line] = []
        self._bytes = 0

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def feed(self, line: Line) -> list[Line]:
        if self._start is None:
            return [line]
        if line.length:  # over the cap on its own: it ends the record in progress and stands alone
            return self.flush() + [line]
        size = line.end - line.offset
        if self._parts and (self._start.search(line.text) or len(self._parts) >= MAX_JOINED_LINES
                            or self._bytes + size > self._max_bytes):
            done = self.flush()
            self._parts, self._bytes = [line], size
            return done
        self._parts.append(line)
        self._bytes += size
        return []

    def flush(self) -> list[Line]:
        """The record being joined, if any (at end of input or after a quiet spell)."""
        if not self._parts:
            return []
        parts, self._parts, self._bytes = self._parts, [], 0
        text = "".join(p.text if p.text.endswith("\n") else p.text + "\n" for p in parts)
        return [Line(parts[0].offset, parts[-1].end, text.rstrip("\n") + "\n")]
