"""The year of a syslog time that has none ("Dec 31 23:59:59"), around New Year, with `now` fixed.

A stream is read once, in order: the first line takes the latest year that does not put it more
than FUTURE_TOLERANCE into the future, a Dec -> Jan turn moves to the next year unless that puts
the lines after it in the future (then they keep the year, and the lines before were the year
before's: a stream cannot take those back).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings, strategies as st

from secmon.normalize.convert import FUTURE_TOLERANCE, SYSLOG, YearlessClock, parse_timestamp

HCM = ZoneInfo("Asia/Ho_Chi_Minh")  # UTC+7: its New Year comes seven hours before UTC's


def stamp(moment: datetime, tz: tzinfo) -> str:
    local = moment.astimezone(tz)
    return f"{local:%b} {local.day:2d} {local:%H:%M:%S}"


def read(lines: list[str], now: datetime, tz: tzinfo = UTC, year: int | None = None) -> list[str]:
    clock = YearlessClock(year, now, elapsed=lambda: 0.0)  # `now` stands still while the lines are read
    return [parse_timestamp(line, (SYSLOG,), tz, clock).isoformat() for line in lines]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("now,lines,expected", [
    # last New Year's log read on Dec 30: its December line fits this year, so it gets this year (a stream
    # cannot know better); its January lines are not put in the next year, the future, but in this one
    (utc(2026, 12, 30, 12), ["Dec 30 10:00:00", "Jan  1 00:10:00", "Jan  2 08:00:00"],
     ["2026-12-30T10:00:00+00:00", "2026-01-01T00:10:00+00:00", "2026-01-02T08:00:00+00:00"]),
    # on Dec 31 at noon, Jan 1 00:10 of next year is within the tolerance (a clock ahead, a live log):
    # that reading stands, and a later line beyond the tolerance is refused by the collector's time bounds
    (utc(2026, 12, 31, 12), ["Dec 31 10:00:00", "Jan  1 00:10:00", "Jan  2 08:00:00"],
     ["2026-12-31T10:00:00+00:00", "2027-01-01T00:10:00+00:00", "2027-01-02T08:00:00+00:00"]),
    (utc(2026, 12, 30, 12), ["Dec 31 00:30:00", "Jan  1 00:10:00"],  # within the tolerance of the first line
     ["2026-12-31T00:30:00+00:00", "2026-01-01T00:10:00+00:00"]),
    # this New Year's log, read right after it, early in January: the turn is taken
    (utc(2027, 1, 1, 1), ["Dec 31 23:50:00", "Jan  1 00:20:00"],
     ["2026-12-31T23:50:00+00:00", "2027-01-01T00:20:00+00:00"]),
    (utc(2027, 1, 5), ["Dec 30 08:00:00", "Jan  2 09:00:00", "Jan  4 23:59:59"],
     ["2026-12-30T08:00:00+00:00", "2027-01-02T09:00:00+00:00", "2027-01-04T23:59:59+00:00"]),
    # last New Year's log read in late December: its December is last year's
    (utc(2026, 12, 28), ["Dec 31 10:00:00", "Jan  1 00:10:00"],
     ["2025-12-31T10:00:00+00:00", "2026-01-01T00:10:00+00:00"]),
])
def test_around_new_year(now: datetime, lines: list[str], expected: list[str]) -> None:
    assert read(lines, now) == expected


def test_new_year_in_a_zone_ahead_of_utc_is_taken_when_it_has_come_there() -> None:
    now = utc(2026, 12, 31, 18)  # 01:00 on Jan 1 in Ho Chi Minh City
    assert read(["Dec 31 23:55:00", "Jan  1 00:30:00"], now, HCM) == [
        "2026-12-31T16:55:00+00:00", "2026-12-31T17:30:00+00:00"]
    # a stream opened there after its midnight: its first line is of its new year, not of UTC's
    assert read(["Jan  1 00:10:00"], utc(2026, 12, 31, 17, 30), HCM) == ["2026-12-31T17:10:00+00:00"]


def test_a_given_year_is_the_first_lines_and_every_turn_is_taken() -> None:
    assert read(["Dec 31 10:00:00", "Jan  1 00:10:00"], utc(2026, 12, 31, 12), year=2026) == [
        "2026-12-31T10:00:00+00:00", "2027-01-01T00:10:00+00:00"]
    assert read(["Dec 31 10:00:00", "Jan  1 00:10:00"], utc(2026, 12, 31, 12), year=2005) == [
        "2005-12-31T10:00:00+00:00", "2006-01-01T00:10:00+00:00"]


NEW_YEARS = st.builds(lambda year, minutes: utc(year, 1, 1) + timedelta(minutes=minutes),
                      st.integers(2001, 2035), st.integers(-4 * 24 * 60, 4 * 24 * 60))


@settings(max_examples=400, deadline=None)
@given(now=st.one_of(NEW_YEARS, st.datetimes(datetime(2001, 1, 1), datetime(2035, 12, 31), timezones=st.just(UTC))),
       back=st.integers(0, 100 * 86400), gaps=st.lists(st.integers(1, 4 * 86400), max_size=40),
       tz=st.sampled_from([UTC, HCM, ZoneInfo("America/New_York")]))
@example(now=utc(2026, 12, 30, 12), back=86400 * 364, gaps=[3600 * 14], tz=UTC)  # last Dec 30 -> Dec 31
@example(now=utc(2026, 12, 30, 12), back=86400 * 363 + 3600 * 10, gaps=[3600 * 14], tz=UTC)  # Dec 31 -> Jan 1
def test_every_line_is_right_or_a_year_late_and_no_year_is_taken_in_the_future(
        now: datetime, back: int, gaps: list[int], tz: tzinfo) -> None:
    """A log of the last 260 days, read now without a year: each line gets its own year, or the next
    one where that too is within the tolerance of now (which no reader can tell apart); the year a
    line starts (the first line, the first after a turn) puts it no further than that after now."""
    now = now.replace(microsecond=0)
    times = [now - timedelta(seconds=back)]
    for gap in gaps:
        times.insert(0, times[0] - timedelta(seconds=gap))
    got = [datetime.fromisoformat(t) for t in read([stamp(t, tz) for t in times], now, tz)]
    for i, (true, inferred) in enumerate(zip(times, got)):
        local = true.astimezone(tz)
        late = local.replace(year=local.year + 1) if (local.month, local.day) != (2, 29) else None
        assert inferred == true or inferred == late, (i, true, inferred)
        if i == 0 or local.year != times[i - 1].astimezone(tz).year:
            assert inferred <= now + FUTURE_TOLERANCE, (i, true, inferred)


def test_a_stream_followed_for_a_month_takes_the_turn_of_the_year_when_it_comes() -> None:
    """`now` is when the stream was opened (a follower started on Dec 1): the turn is judged by the
    time it is read, not by Dec 1 (to which Jan 1 is a month in the future)."""
    elapsed = [0.0]
    clock = YearlessClock(None, utc(2026, 12, 1), elapsed=lambda: elapsed[0])
    assert parse_timestamp("Dec  1 00:00:05", (SYSLOG,), UTC, clock).isoformat() == "2026-12-01T00:00:05+00:00"
    elapsed[0] = 31 * 86400.0 + 10
    assert parse_timestamp("Dec 31 23:59:59", (SYSLOG,), UTC, clock).isoformat() == "2026-12-31T23:59:59+00:00"
    assert parse_timestamp("Jan  1 00:00:09", (SYSLOG,), UTC, clock).isoformat() == "2027-01-01T00:00:09+00:00"


@pytest.mark.parametrize("fmt,text", [(SYSLOG, "Feb 29 10:00:00"), ("%d %b %H:%M:%S", "29 Feb 10:00:00")])
def test_feb_29_is_read_and_given_a_leap_year(fmt: str, text: str) -> None:
    def one(now: datetime, year: int | None = None) -> str:
        return parse_timestamp(text, (fmt,), UTC, YearlessClock(year, now, elapsed=lambda: 0.0)).isoformat()

    assert one(utc(2028, 3, 1)) == "2028-02-29T10:00:00+00:00"
    assert one(utc(2029, 6, 1)) == "2028-02-29T10:00:00+00:00"  # the latest leap year not in the future
    assert one(utc(2028, 2, 27)) == "2024-02-29T10:00:00+00:00"  # 2028's is more than a day ahead
    assert one(utc(2029, 6, 1), year=2024) == "2024-02-29T10:00:00+00:00"
    with pytest.raises(ValueError, match="matches none of the formats"):  # 2027 has no Feb 29: a dead letter
        one(utc(2029, 6, 1), year=2027)
    clock = YearlessClock(None, utc(2028, 3, 1), elapsed=lambda: 0.0)  # across New Year into a leap year
    assert [parse_timestamp(t, (fmt,), UTC, clock).isoformat() for t in (
        "Dec 31 23:00:00" if fmt == SYSLOG else "31 Dec 23:00:00", text)] == [
        "2027-12-31T23:00:00+00:00", "2028-02-29T10:00:00+00:00"]
