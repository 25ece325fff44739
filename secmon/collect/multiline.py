"""Join continuation lines (stack traces, wrapped messages) into one record.

A record starts at a line matching the `start` pattern; the lines that do not
match belong to the record before them. The record's offset is its first
line's, and its end the last line's, so a checkpoint never splits a record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    offset: int
    end: int
    text: str


MAX_JOINED_LINES = 500  # a runaway record (a pattern that never matches) is cut, not kept in memory


class Joiner:
    def __init__(self, start: re.Pattern[str] | None):
        self._start = start
        self._parts: list[Line] = []

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def feed(self, line: Line) -> list[Line]:
        if self._start is None:
            return [line]
        if self._parts and (self._start.search(line.text) or len(self._parts) >= MAX_JOINED_LINES):
            done = self.flush()
            self._parts = [line]
            return done
        self._parts.append(line)
        return []

    def flush(self) -> list[Line]:
        """The record being joined, if any (at end of input or after a quiet spell)."""
        if not self._parts:
            return []
        parts, self._parts = self._parts, []
        text = "".join(p.text if p.text.endswith("\n") else p.text + "\n" for p in parts)
        return [Line(parts[0].offset, parts[-1].end, text.rstrip("\n") + "\n")]
