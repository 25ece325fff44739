"""Who gets an alert: the agency's recipients above its severity floor, plus the centre-wide routes.

Addresses only ever come from the config, never from log content.
"""

from __future__ import annotations

from dataclasses import dataclass

from secmon.config import Settings
from secmon.model import Finding, Severity
from secmon.types import Language


@dataclass(frozen=True)
class Recipient:
    address: str
    language: Language
    timezone: str
    route: str  # "agency" or the name of the alerts.routes entry that matched


def recipients(settings: Settings, finding: Finding) -> list[Recipient]:
    """Every recipient of one finding's alert, each address once (the agency's own entry wins)."""
    agency = settings.agency(finding.agency)
    found: dict[str, Recipient] = {}
    if finding.severity.rank >= Severity(agency.min_severity).rank:
        for address in agency.recipients:
            found.setdefault(address, Recipient(address, agency.language, agency.timezone, "agency"))
    for route in settings.alerts.routes:
        if "*" not in route.agencies and agency.id not in route.agencies:
            continue
        if finding.severity.rank < Severity(route.min_severity).rank:
            continue
        for address in route.recipients:
            found.setdefault(address, Recipient(address, route.language, route.timezone, route.name))
    return list(found.values())
