"""Typed field conversions a pipeline can ask for, and syslog-style timestamps.

A conversion that fails raises ValueError with a message fit for the
dead-letter index: the line is kept, with the reason, never dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any


def to_string(value: str) -> str:
    return value


def to_long(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an integer") from None


def to_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def to_address(value: str) -> dict[str, str]:
    """ECS `*.address`: the raw peer, plus `*.ip` or `*.domain` as it turns out to be."""
    try:
        return {"address": value, "ip": to_ip(value)}
    except ValueError:
        if any(ch.isalpha() for ch in value) and " " not in value:
            return {"address": value, "domain": value.lower()}
        if all(ch.isdigit() or ch in ".:" for ch in value):
            # digits and dots only, yet not an IP: a corrupt address, not a host name
            raise ValueError(f"{value!r} is neither an IP address nor a host name") from None
        return {"address": value}


CONVERTERS: dict[str, Callable[[str], Any]] = {
    "string": to_string,
    "long": to_long,
    "ip": to_ip,
    "address": to_address,  # expands under the target: target.address, target.ip|domain
}


class YearlessClock:
    """Gives syslog timestamps ("Jun  9 06:06:20", no year) a year.

    A stream is read in order, so when the month goes backwards by more than a
    few months the year has turned (Dec -> Jan). The first year is either given
    (archived logs: `--year`) or the latest year that does not put the first
    timestamp more than a day into the future.
    """

    def __init__(self, first_year: int | None, now: datetime):
        self._year = first_year
        self._now = now
        self._last_month: int | None = None

    def complete(self, partial: datetime, tz: tzinfo) -> datetime:
        if self._year is None:
            year = self._now.year
            if partial.replace(year=year, tzinfo=tz) > self._now + timedelta(days=1):
                year -= 1
            self._year = year
        elif self._last_month is not None and partial.month < self._last_month - 6:
            self._year += 1
        self._last_month = partial.month
        try:
            return partial.replace(year=self._year, tzinfo=tz)
        except ValueError:  # Feb 29 in a year that has none
            raise ValueError(f"{partial:%b %d} does not exist in {self._year}") from None


def parse_timestamp(text: str, formats: tuple[str, ...], tz: tzinfo, clock: YearlessClock) -> datetime:
    """Parse with the first format that fits; returns an aware UTC datetime."""
    cleaned = " ".join(text.split())  # syslog pads single-digit days with a space
    for fmt in formats:
        try:
            parsed = datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
        if "%Y" not in fmt and "%y" not in fmt:
            parsed = clock.complete(parsed, tz)
        elif parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=tz)
        return parsed.astimezone(timezone.utc)
    raise ValueError(f"timestamp {text!r} matches none of the formats {list(formats)}")
