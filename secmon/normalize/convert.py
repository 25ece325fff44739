"""Typed field conversions a pipeline can ask for, and timestamps in every shape logs use.

A conversion that fails raises ValueError with a message fit for the
dead-letter index: the line is kept, with the reason, never dropped.
Values come from text lines (always str) or from JSON records (str, int,
float, bool, list, dict), so every converter accepts both.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, TypeVar

from secmon.normalize.urls import decode_path, decode_query

ISO8601 = "ISO8601"
UNIX = "UNIX"
UNIX_MS = "UNIX_MS"
SPECIAL_FORMATS = (ISO8601, UNIX, UNIX_MS)


_T = TypeVar("_T")
MAX_DEPTH = 8  # levels a JSON value may bring into a document (Elasticsearch's own limit is 20 in all)


def _shallow(value: _T) -> _T:
    """`value` itself, when its arrays and objects nest at most MAX_DEPTH levels deep."""
    level = 0
    current: list[Any] = [value]
    while current:
        level += 1
        if level > MAX_DEPTH:
            raise ValueError(f"a JSON value nested more than {MAX_DEPTH} levels deep")
        current = [child for item in current if isinstance(item, (list, dict))
                   for child in (item.values() if isinstance(item, dict) else item)
                   if isinstance(child, (list, dict))]
    return value


def to_string(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return _shallow(value)  # a JSON array or object stays structured (e.g. Zeek `answers`)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_LONG = range(-(2**63), 2**63)  # Elasticsearch's long: a larger number would reject the whole document


def to_long(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{str(value)[:80]!r} is not an integer") from None
    if value not in _LONG:
        raise ValueError(f"{value} is out of range for a long")
    return int(value)


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{str(value)[:80]!r} is not a number") from None
    if not math.isfinite(number):  # NaN and Infinity are not JSON: the bulk request would fail
        raise ValueError(f"{value!r} is not a finite number")
    return number


# A canonical dotted quad is its own canonical form: most addresses skip ipaddress (hot path).
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
_NOT_IP = re.compile(r"[^0-9A-Fa-f:.\[\]]")  # no IP address (v4, v6, [v6]) without a %zone has another character
canonical_ipv4 = _IPV4.fullmatch  # truthy for a text that is its own canonical IPv4 (compiled pipelines inline it)


def to_ip(value: Any) -> str:
    text = str(value)
    if _IPV4.fullmatch(text):
        return text
    if "%" not in text and _NOT_IP.search(text):  # a host name, most often: ipaddress would try twice and raise twice
        raise ValueError(f"{text!r} is not an IP address")
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


# Peers repeat (a brute force names one host thousands of times) and a host name costs two raised
# exceptions to tell from an address: each text's answer is kept, for short texts only (a hostile
# megabyte is not), and all are forgotten when there are too many (a scan of the whole internet).
_ADDRESSES: dict[str, dict[str, str]] = {}
ADDRESS_CACHE = 4096
ADDRESS_CACHED_LENGTH = 256
known_address = _ADDRESSES.get  # text -> what to_address gives (not to be changed), or None


def to_address(value: Any) -> dict[str, str]:
    """ECS `*.address`: the raw peer, plus `*.ip` or `*.domain` as it turns out to be."""
    text = str(value)
    known = _ADDRESSES.get(text)
    if known is not None:
        return dict(known)
    found = _address(text)  # a corrupt one raises, each time with its reason: never kept
    if len(text) <= ADDRESS_CACHED_LENGTH:
        if len(_ADDRESSES) >= ADDRESS_CACHE:
            _ADDRESSES.clear()
        _ADDRESSES[text] = found
    return dict(found)


def _address(text: str) -> dict[str, str]:
    try:
        return {"address": text, "ip": to_ip(text)}
    except ValueError:
        if any(ch.isalpha() for ch in text) and " " not in text:
            return {"address": text, "domain": text.lower()}
        if all(ch.isdigit() or ch in ".:" for ch in text):
            # digits and dots only, yet not an IP: a corrupt address, not a host name
            raise ValueError(f"{text!r} is neither an IP address nor a host name") from None
        return {"address": text}


def to_lowercase(value: Any) -> str:
    return str(value).lower()


def to_uppercase(value: Any) -> str:
    return str(value).upper()


def to_list(value: Any) -> list[Any]:
    """A JSON array as it is; text split on commas (Zeek sets, CEF lists)."""
    if isinstance(value, list):
        return _shallow(value)
    return [part.strip() for part in str(value).split(",") if part.strip()]


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "t", "yes", "y", "1"):
        return True
    if text in ("false", "f", "no", "n", "0"):
        return False
    raise ValueError(f"{value!r} is not a boolean")


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    # decoded as the application reads them (normalize/urls.py); the engine also tags what
    # cannot be decoded exactly
    "url_path": lambda value: decode_path(str(value)).text,
    "url_query": lambda value: decode_query(str(value)).text,
    "string": to_string,
    "long": to_long,
    "float": to_float,
    "ip": to_ip,
    "address": to_address,  # expands under the target: target.address, target.ip|domain
    "lowercase": to_lowercase,
    "uppercase": to_uppercase,
    "list": to_list,
    "bool": to_bool,
}


# How far into the future a yearless time may fall and keep the year that puts it there (clocks
# drift, zones differ): further, it is taken for a time of the year before.
FUTURE_TOLERANCE = timedelta(days=1)


class YearlessClock:
    """Gives syslog timestamps ("Jun  9 06:06:20", no year) a year.

    A stream is read in order, so when the month goes backwards by more than a
    few months the year has turned (Dec -> Jan). The first year is either given
    (archived logs: `--year`) or the latest year that does not put the first
    timestamp more than FUTURE_TOLERANCE into the future.

    When the year was not given, a turn of the year that would put the lines after
    it more than FUTURE_TOLERANCE into the future (last New Year's log read on Dec
    30: its December lines fit this year) is not taken: those lines keep the year,
    which is theirs, and the lines before them were of the year before. A stream is
    not read twice, so those earlier lines keep the year they got (`--year` reads
    such a log right).

    `now` is when the stream is opened; the clock advances it by the time elapsed
    since (`elapsed`, monotonic seconds), so that a stream followed for months
    judges a turn of the year by the time the turn is read.
    """

    def __init__(self, first_year: int | None, now: datetime, elapsed: Callable[[], float] = time.monotonic):
        self._year = first_year
        self._given = first_year is not None
        self._now = now
        self._elapsed = elapsed
        self._opened = elapsed()
        self._last_month: int | None = None
        self.first: tuple[datetime, tzinfo, int] | None = None  # since `restore`: the first time and its year

    @property
    def state(self) -> tuple[int | None, int | None]:
        """All that the year of the next timestamp depends on, besides that timestamp."""
        return self._year, self._last_month

    def restore(self, state: tuple[int | None, int | None]) -> None:
        self._year, self._last_month = state
        self.first = None

    def year_after(self, state: tuple[int | None, int | None], partial: datetime, tz: tzinfo) -> int:
        """The year `partial` gets when it comes right after `state` (the clock itself is not moved)."""
        year, last_month = state
        if year is None:
            now = self._current()
            year = now.astimezone(tz).year  # the stream's own: New Year comes first east of UTC
            # The latest year that has the day (Feb 29) and does not put it too far ahead of now.
            while (moment := _in_year(partial, year, tz)) is None or moment > now + FUTURE_TOLERANCE:
                year -= 1
        elif last_month is not None and partial.month < last_month - 6:
            moment = _in_year(partial, year + 1, tz)  # None: Feb 29, which `complete` refuses with its reason
            if self._given or moment is None or moment <= self._current() + FUTURE_TOLERANCE:
                year += 1
        return year

    def _current(self) -> datetime:
        return self._now + timedelta(seconds=self._elapsed() - self._opened)

    def complete(self, partial: datetime, tz: tzinfo) -> datetime:
        self._year = self.year_after((self._year, self._last_month), partial, tz)
        if self.first is None:
            self.first = (partial, tz, self._year)
        self._last_month = partial.month
        try:
            return partial.replace(year=self._year, tzinfo=tz)
        except ValueError:  # Feb 29 in a year that has none
            raise ValueError(f"{partial:%b %d} does not exist in {self._year}") from None


def _in_year(partial: datetime, year: int, tz: tzinfo) -> datetime | None:
    try:
        return partial.replace(year=year, tzinfo=tz)
    except ValueError:  # Feb 29 in a year that has none
        return None


def _epoch(value: Any, scale: float) -> datetime:
    try:
        seconds = float(value) / scale
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        raise ValueError(f"{value!r} is not a UNIX time") from None


SYSLOG = "%b %d %H:%M:%S"
_SYSLOG_TIME = re.compile(r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d\d?) (\d\d):(\d\d):(\d\d)")
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


LEAP_YEAR = 2000  # the year a time without one is read in, before the clock gives it its own


def syslog_time(text: str) -> datetime | None:
    """strptime(text, SYSLOG) for the usual spelling, without strptime's cost (most of a
    syslog line's parse); None sends anything else (other case, a bad day) to strptime."""
    found = _SYSLOG_TIME.fullmatch(text)
    if found is None:
        return None
    month, day, hour, minute, second = found.groups()
    try:
        return datetime(LEAP_YEAR, _MONTHS[month], int(day), int(hour), int(minute), int(second))
    except ValueError:
        return None


def _parse_one(text: str, fmt: str, tz: tzinfo, clock: YearlessClock) -> datetime:
    if fmt == UNIX or fmt == UNIX_MS:
        return _epoch(text, 1000.0 if fmt == UNIX_MS else 1.0)
    if fmt == ISO8601:
        parsed = datetime.fromisoformat(text)
    else:
        if "%Y" in fmt or "%y" in fmt:
            parsed = datetime.strptime(text, fmt)
        else:  # parsed in a leap year (strptime's own default, 1900, refuses Feb 29), then given its year
            parsed = (syslog_time(text) if fmt == SYSLOG else None) or datetime.strptime(
                f"{LEAP_YEAR} {text}", f"%Y {fmt}")
            return clock.complete(parsed, tz).astimezone(timezone.utc)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(timezone.utc)


def parse_timestamp(value: Any, formats: tuple[str, ...], tz: tzinfo, clock: YearlessClock) -> datetime:
    """Parse with the first format that fits; returns an aware UTC datetime.

    Naive times are in `tz` (the agency's zone unless the pipeline names one);
    formats without a year take it from the stream's `clock`.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(value)
    else:
        text = " ".join(str(value).split())  # syslog pads single-digit days with a space
    overflow = False
    for fmt in formats:
        try:
            return _parse_one(text, fmt, tz, clock)
        except OverflowError:  # year 1 or 9999 shifted out of range by its offset
            overflow = True
        except ValueError:
            continue
    if overflow:
        raise ValueError(f"timestamp {text[:80]!r} is out of the range of times (years 1 to 9999 in UTC)")
    raise ValueError(f"timestamp {text[:80]!r} matches none of the formats {list(formats)}")
