"""Which event indices retention may delete: names parsed exactly, months rolled over correctly."""

from __future__ import annotations

from datetime import datetime, timezone

from secmon.service.retention import _month_after
from secmon.store.indices import Indices


def test_an_event_index_name_gives_its_month_and_only_its_own_agency_s() -> None:
    indices = Indices("secmon")
    assert indices.events_month("secmon-events-so-tttt-2025.12", "so-tttt") == datetime(2025, 12, 1, tzinfo=timezone.utc)
    assert indices.events_month("secmon-events-so-tttt-x-2025.12", "so-tttt") is None  # agency so-tttt-x
    assert indices.events_month("secmon-events-so-tttt-2025.13", "so-tttt") is None
    assert indices.events_month("secmon-events-so-tttt-2025.12-restored", "so-tttt") is None
    assert indices.events_month("other-events-so-tttt-2025.12", "so-tttt") is None


def test_the_month_after_rolls_over_the_year() -> None:
    assert _month_after(datetime(2025, 12, 1, tzinfo=timezone.utc)) == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert _month_after(datetime(2025, 1, 1, tzinfo=timezone.utc)) == datetime(2025, 2, 1, tzinfo=timezone.utc)
