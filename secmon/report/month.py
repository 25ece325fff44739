"""A calendar month in a time zone: the period a monthly report covers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @staticmethod
    def parse(text: str) -> Month:
        """'2026-10' -> Month. Raises ValueError."""
        found = _MONTH.match(text.strip())
        if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 1970:
            raise ValueError(f"{text!r} is not a month like 2026-10")
        return Month(int(found.group(1)), int(found.group(2)))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def start(self, timezone: str) -> datetime:
        """Midnight of the first day, local time: a month is the agency's (or the centre's) month."""
        return datetime(self.year, self.month, 1, tzinfo=ZoneInfo(timezone))

    def end(self, timezone: str) -> datetime:
        """The next month's start (exclusive)."""
        return self.next().start(timezone)

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def days(self) -> int:
        return (self.end("UTC") - self.start("UTC")).days
