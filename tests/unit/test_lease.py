"""The lease and watermark decisions (secmon/lease.py): pure, so every case is spelled out here."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from secmon.lease import JobState, Lease, chunks, lease_step, may_commit, next_lease, released

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
TTL = timedelta(seconds=30)


def test_nobody_holds_it_create_with_token_one() -> None:
    assert lease_step(None, "a", T0) == "create"
    assert next_lease(None, "create", "a", T0, TTL) == Lease("a", 1, T0 + TTL, T0)


def test_a_live_lease_of_another_means_standby_an_expired_one_is_taken_over_with_the_next_token() -> None:
    held = Lease("a", 4, T0 + TTL, T0)
    assert lease_step(held, "b", T0 + TTL - timedelta(milliseconds=1)) == "standby"
    assert lease_step(held, "b", T0 + TTL) == "take_over"
    taken = next_lease(held, "take_over", "b", T0 + TTL, TTL)
    assert (taken.holder, taken.token, taken.expires) == ("b", 5, T0 + 2 * TTL)


def test_the_holder_renews_its_own_lease_even_after_it_lapsed_and_keeps_its_token() -> None:
    held = Lease("a", 4, T0 + TTL, T0)
    assert lease_step(held, "a", T0 + 10 * TTL) == "renew"  # nobody took it: nobody committed since
    renewed = next_lease(held, "renew", "a", T0 + TTL, TTL)
    assert (renewed.token, renewed.expires, renewed.acquired) == (4, T0 + 2 * TTL, T0)


def test_release_expires_it_now_and_keeps_the_token_for_the_next_takeover() -> None:
    held = Lease("a", 4, T0 + TTL, T0)
    gone = released(held, T0 + timedelta(seconds=5))
    assert gone.token == 4 and not gone.alive(T0 + timedelta(seconds=5))
    assert lease_step(gone, "b", T0 + timedelta(seconds=5)) == "take_over"


def test_a_lease_survives_its_document() -> None:
    held = Lease("host:1:ab", 7, T0 + TTL, T0)
    assert Lease.from_doc(held.to_doc(T0)) == held


def test_fencing_refuses_a_writer_older_than_the_stored_token() -> None:
    assert may_commit(None, 1)
    assert may_commit(3, 3) and may_commit(3, 4)
    assert not may_commit(4, 3)


def test_a_job_document_round_trips() -> None:
    state = JobState("scan", 3, "h:1:x", value=T0, outcome="partial", ran_at=T0, error="2 rules failed",
                     lag_seconds=4.5)
    assert JobState.from_doc(state.to_doc(T0)) == state
    assert JobState.from_doc(JobState("deliver", 1, "h").to_doc(T0)) == JobState("deliver", 1, "h")


def test_chunks_cover_from_the_watermark_to_now_minus_the_delay_oldest_first_none_longer_than_max() -> None:
    now = T0 + timedelta(hours=3, minutes=10)
    found = list(chunks(T0, now, timedelta(minutes=15), timedelta(minutes=1), timedelta(hours=1)))
    assert found == [(T0, T0 + timedelta(hours=1)), (T0 + timedelta(hours=1), T0 + timedelta(hours=2)),
                     (T0 + timedelta(hours=2), T0 + timedelta(hours=3)),
                     (T0 + timedelta(hours=3), now - timedelta(minutes=1))]


def test_the_first_run_starts_a_lookback_ago_and_an_up_to_date_watermark_gives_nothing() -> None:
    now = T0 + timedelta(minutes=30)
    assert list(chunks(None, now, timedelta(minutes=15), timedelta(minutes=1), timedelta(hours=1))) == [
        (now - timedelta(minutes=15), now - timedelta(minutes=1))]
    assert list(chunks(now - timedelta(seconds=30), now, timedelta(minutes=15), timedelta(minutes=1),
                       timedelta(hours=1))) == []
