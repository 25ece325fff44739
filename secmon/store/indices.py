"""Index names, in one place. Everything secmon writes starts with the configured prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

_MONTH = re.compile(r"^(\d{4})\.(\d{2})$")


@dataclass(frozen=True)
class Indices:
    prefix: str

    def events(self, agency: str, when: datetime) -> str:
        # Monthly indices: retention is deleting an index (works with or without ILM),
        # and an event's index follows from its own timestamp, so re-shipping overwrites.
        return f"{self.prefix}-events-{agency}-{when:%Y.%m}"

    def events_pattern(self, agency: str = "*") -> str:
        return f"{self.prefix}-events-{agency}-*"

    def events_month(self, name: str, agency: str) -> datetime | None:
        """The first instant (UTC) of the month an event index of `agency` holds; None if `name` is not one.

        The pattern of agency `a` also matches agency `a-b`'s indices: only an exact
        `<yyyy.mm>` after `{prefix}-events-{agency}-` counts.
        """
        head = f"{self.prefix}-events-{agency}-"
        match = _MONTH.match(name[len(head):]) if name.startswith(head) else None
        if match is None or not 1 <= int(match.group(2)) <= 12:
            return None
        return datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=timezone.utc)

    def deadletter(self, agency: str) -> str:
        return f"{self.prefix}-deadletter-{agency}"

    @property
    def incidents(self) -> str:
        return f"{self.prefix}-incidents"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}-alerts"

    @property
    def scans(self) -> str:
        return f"{self.prefix}-scans"

    @property
    def exceptions(self) -> str:
        return f"{self.prefix}-exceptions"

    @property
    def models(self) -> str:
        return f"{self.prefix}-models"

    @property
    def audit(self) -> str:
        return f"{self.prefix}-audit"

    @property
    def state(self) -> str:
        """The scheduler's lease and its jobs' watermarks."""
        return f"{self.prefix}-state"

    def all_patterns(self) -> list[str]:
        return [f"{self.prefix}-*"]
