"""The shared vocabulary every layer speaks: time in UTC, durations, the agency field, literal kinds.

Nothing here does I/O. Keeping these in one module means a time is formatted
one way, a duration is spelled one way, and a status has one set of values
across the indices, the code and the Kibana objects.
"""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"  # agency local time unless the config says otherwise
AGENCY_FIELD = "organization.id"  # every event, incident and alert names its agency here
AGENCY_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # agency ids go into index names

RuleKind = Literal["single", "event_count", "value_count", "temporal", "temporal_ordered", "value_sum", "value_avg"]
Detector = Literal["rule", "anomaly"]
IncidentStatus = Literal["open", "acknowledged", "closed"]
Resolution = Literal["true_positive", "benign", "false_positive"]
DeliveryStatus = Literal["pending", "sending", "sent", "failed"]
DeliveryKind = Literal["alert", "overflow", "daily"]  # one incident; the hourly cap's overflow; the daily digest
Language = Literal["vi", "en"]

_DURATION = re.compile(r"^(\d{1,9})(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_DURATION = timedelta(days=36_500)  # a century: anything longer is a typo, and datetime would overflow


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """UTC, ISO 8601 with a `Z`: how every time is written to Elasticsearch."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """The inverse of `iso` (any ISO 8601 with an offset). Raises ValueError."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment


def parse_duration(text: str) -> timedelta:
    """'90s', '5m', '2h', '1d' -> timedelta. Raises ValueError."""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 2h or 1d")
    value = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if value > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than {MAX_DURATION.days} days")
    return value


def format_duration(value: timedelta) -> str:
    """timedelta -> the shortest exact spelling `parse_duration` reads back."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def add_counts(total: Any, more: Any) -> None:
    """Add the dataclass `more` into `total`, field by field: numbers summed, dicts of numbers summed key by
    key, lists extended. Every field is added, so a counter added to such a class is never left out."""
    for spec in fields(total):
        mine, theirs = getattr(total, spec.name), getattr(more, spec.name)
        if isinstance(mine, dict):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        elif isinstance(mine, list):
            mine.extend(theirs)
        elif isinstance(mine, (int, float)):
            setattr(total, spec.name, mine + theirs)
        else:
            raise TypeError(f"{type(total).__name__}.{spec.name}: cannot add a {type(mine).__name__}")
