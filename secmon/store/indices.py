"""Index names, in one place. Everything secmon writes starts with the configured prefix."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Indices:
    prefix: str

    def events(self, agency: str, when: datetime) -> str:
        # Monthly indices: retention is deleting an index (works with or without ILM),
        # and an event's index follows from its own timestamp, so re-shipping overwrites.
        return f"{self.prefix}-events-{agency}-{when:%Y.%m}"

    def events_pattern(self, agency: str = "*") -> str:
        return f"{self.prefix}-events-{agency}-*"

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

    def all_patterns(self) -> list[str]:
        return [f"{self.prefix}-*"]
