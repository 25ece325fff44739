"""The scheduler's state on the real node: the lease, fencing, watermark catch-up, retention, `status`.

Clocks are injected, so "an hour of downtime" or "the lease expired" take no time.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from secmon.config import Settings, load_settings
from secmon.errors import LeaseLost, StoreUnavailable
from secmon.lease import JobState
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import pipeline_named
from secmon.service import run as jobs
from secmon.service.common import setup
from secmon.service.retention import retention
from secmon.service.scan import ScanOptions, scan
from secmon.store.indices import Indices
from secmon.store.writer import BulkWriter
from tests.conftest import free_port, run_cli
from tests.integration.unattended import (
    AGENCY,
    ROOT,
    burst_lines,
    config_text,
    incidents_per_source,
    source_of,
    wait_until,
    watermark,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def settings_for(tmp_path: Path, es_url: str, prefix: str, **schedule: str) -> Settings:
    path = tmp_path / "secmon.yml"
    path.write_text(config_text(es_url, prefix, free_port(), **schedule), encoding="utf-8")
    return load_settings(path)


@pytest.fixture
def settings(tmp_path, es, es_url, prefix) -> Settings:  # type: ignore[no-untyped-def]
    found = settings_for(tmp_path, es_url, prefix, lease="30s", max_chunk="2m", ingest_delay="1m", lookback="15m")
    setup(es, found, NOW)
    return found


def test_one_creates_the_lease_the_other_stands_by_then_takes_over_when_it_expires(es, settings) -> None:  # type: ignore[no-untyped-def]
    a, b = jobs.Keeper(es, settings, me="host:1:a"), jobs.Keeper(es, settings, me="host:2:b")
    first = a.keep(NOW)
    assert first.active and first.became_active and first.lease is not None and first.lease.token == 1
    standby = b.keep(NOW)
    assert not standby.active and standby.lease is not None and standby.lease.holder == "host:1:a"
    renewed = a.keep(NOW + timedelta(seconds=10))
    assert renewed.active and not renewed.became_active and renewed.lease.token == 1  # type: ignore[union-attr]
    assert not b.keep(NOW + timedelta(seconds=39)).active  # renewed at +10 s: live until +40 s
    assert b.holds(NOW + timedelta(seconds=39)) is None
    taken = b.keep(NOW + timedelta(seconds=40))
    assert taken.active and taken.became_active and taken.lease.token == 2  # type: ignore[union-attr]
    assert a.holds(NOW + timedelta(seconds=40)) is None  # it lapsed: a commits nothing any more
    lost = a.keep(NOW + timedelta(seconds=41))
    assert not lost.active and lost.lost and lost.lease.holder == "host:2:b"  # type: ignore[union-attr]


def test_a_released_lease_is_taken_over_at_once(es, settings) -> None:  # type: ignore[no-untyped-def]
    a, b = jobs.Keeper(es, settings, me="a"), jobs.Keeper(es, settings, me="b")
    assert a.keep(NOW).active
    a.release(NOW + timedelta(seconds=1))
    taken = b.keep(NOW + timedelta(seconds=1))
    assert taken.active and taken.lease.token == 2  # type: ignore[union-attr]


@pytest.mark.parametrize("expired", [False, True], ids=["no lease yet", "expired lease"])
def test_instances_racing_for_the_lease_leave_exactly_one_holder(es, settings, expired: bool) -> None:  # type: ignore[no-untyped-def]
    now = NOW
    if expired:
        assert jobs.Keeper(es, settings, me="old").keep(NOW).active
        now = NOW + timedelta(minutes=5)
    keepers = [jobs.Keeper(es, settings, me=f"racer-{i}") for i in range(6)]
    start = threading.Barrier(len(keepers))
    results: dict[str, bool] = {}

    def race(keeper: jobs.Keeper) -> None:
        start.wait()
        results[keeper.me] = keeper.keep(now).active

    threads = [threading.Thread(target=race, args=(k,)) for k in keepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(results.values()) == 1, results
    winner = next(k for k in keepers if results[k.me])
    assert winner.holds(now) == (2 if expired else 1)


def test_a_stale_holder_cannot_move_the_watermark(es, settings) -> None:  # type: ignore[no-untyped-def]
    indices = Indices(settings.elasticsearch.index_prefix)
    a, b = jobs.Keeper(es, settings, me="a"), jobs.Keeper(es, settings, me="b")
    assert a.keep(NOW).active
    jobs.write_job(es, indices, "scan", 1, "a", NOW, lambda s: JobState(s.job, s.token, s.holder, value=NOW))
    later = NOW + timedelta(minutes=1)
    assert b.keep(later).active  # takeover: token 2, stamped on every job document
    assert JobState.from_doc(es.get(index=indices.state, id="watermark-scan")["_source"]).token == 2
    with pytest.raises(LeaseLost):  # a, paused through the takeover, wakes up and tries to commit
        jobs.write_job(es, indices, "scan", 1, "a", later, lambda s: JobState(s.job, s.token, s.holder, value=later))
    with pytest.raises(LeaseLost):  # and a whole scan run of a's refuses to start from b's watermark
        jobs.scan_due(es, settings, a, 1, lambda: later, threading.Event())
    assert watermark(es, settings.elasticsearch.index_prefix) == NOW


def ingest(es, settings: Settings, lines: list[str], at: datetime, first_offset: int) -> None:  # type: ignore[no-untyped-def]
    """Ship lines as the collector does, with `event.ingested` = `at` (as if sent then)."""
    pipeline = pipeline_named([ROOT / "pipelines"], "linux-auth")
    assert pipeline is not None
    normalizer = Normalizer(pipeline, agency=AGENCY, timezone="UTC", source="auth.log", now=NOW)
    events = [normalizer.normalize(text, first_offset + i, f"auth.log:{first_offset + i}") for i, text in enumerate(lines)]
    indices = Indices(settings.elasticsearch.index_prefix)
    stats = BulkWriter(es, indices, now=lambda: at).write(events, AGENCY)  # type: ignore[arg-type]
    assert stats.events == len(lines)
    es.indices.refresh(index=indices.events_pattern())


def test_after_downtime_the_scan_catches_up_in_chunks_oldest_first_and_moves_the_watermark_after_each(
        es, settings) -> None:  # type: ignore[no-untyped-def]
    t0 = NOW - timedelta(hours=2)
    split = burst_lines(2, t0 + timedelta(minutes=7))
    ingest(es, settings, burst_lines(0, t0), t0 + timedelta(seconds=30), 0)
    ingest(es, settings, burst_lines(1, t0 + timedelta(minutes=5)), t0 + timedelta(minutes=5), 100)
    # One burst whose halves reached Elasticsearch in two chunks (say, a spool drained between them).
    ingest(es, settings, split[:6], t0 + timedelta(minutes=7), 200)
    ingest(es, settings, split[6:], t0 + timedelta(minutes=9), 300)
    indices = Indices(settings.elasticsearch.index_prefix)
    keeper = jobs.Keeper(es, settings, me="a")
    now = t0 + timedelta(minutes=11)  # the scheduler comes back 11 minutes after its last commit
    assert keeper.keep(now).active
    jobs.write_job(es, indices, "scan", 1, "a", now, lambda s: JobState(s.job, s.token, s.holder, value=t0))
    windows: list[tuple[datetime, datetime]] = []

    def crashing_at_third(es_, settings_, options: ScanOptions, when: datetime):  # type: ignore[no-untyped-def]
        windows.append((options.start, options.end))
        assert options.field == "event.ingested" and not options.deliver
        if len(windows) == 3:
            raise StoreUnavailable("the node went away mid-scan")
        return scan(es_, settings_, options, when)

    result = jobs.run_job(es, settings, keeper, "scan",
                          lambda token: jobs.scan_due(es, settings, keeper, token, lambda: now, threading.Event(),
                                                      crashing_at_third), lambda: now)
    assert result is not None and result.outcome == "failure"
    assert watermark(es, indices.prefix) == t0 + timedelta(minutes=4)  # two chunks done, the third did not count
    stored = JobState.from_doc(es.get(index=indices.state, id="watermark-scan")["_source"])
    assert stored.outcome == "failure" and "went away" in stored.error

    def recording(es_, settings_, options: ScanOptions, when: datetime):  # type: ignore[no-untyped-def]
        windows.append((options.start, options.end))
        return scan(es_, settings_, options, when)

    result = jobs.run_job(es, settings, keeper, "scan",
                          lambda token: jobs.scan_due(es, settings, keeper, token, lambda: now, threading.Event(),
                                                      recording), lambda: now)
    assert result is not None and result.outcome == "success", result
    minute = timedelta(minutes=1)
    assert windows == [(t0, t0 + 2 * minute), (t0 + 2 * minute, t0 + 4 * minute), (t0 + 4 * minute, t0 + 6 * minute),
                       (t0 + 4 * minute, t0 + 6 * minute), (t0 + 6 * minute, t0 + 8 * minute),
                       (t0 + 8 * minute, t0 + 10 * minute)]  # up to now - ingest_delay, 2 minutes at most each
    assert watermark(es, indices.prefix) == now - minute
    found = incidents_per_source(es, indices.prefix, [source_of(i) for i in range(3)])
    assert found == {source_of(0): 1, source_of(1): 1, source_of(2): 1}, found


def test_a_stop_during_a_scan_is_said_as_a_stop_not_as_a_lapsed_lease(es, settings, caplog) -> None:  # type: ignore[no-untyped-def]
    indices = Indices(settings.elasticsearch.index_prefix)
    t0 = NOW - timedelta(hours=2)
    now = t0 + timedelta(minutes=11)  # five chunks to scan
    keeper = jobs.Keeper(es, settings, me="a")
    assert keeper.keep(now).active
    jobs.write_job(es, indices, "scan", 1, "a", now, lambda s: JobState(s.job, s.token, s.holder, value=t0))
    stop = threading.Event()
    chunks: list[datetime] = []

    def stopped_meanwhile(es_, settings_, options: ScanOptions, when: datetime):  # type: ignore[no-untyped-def]
        chunks.append(options.start)
        stop.set()  # SIGTERM during the first chunk: the scheduler stops renewing, then releases the lease
        keeper.release(when)
        return scan(es_, settings_, options, when)

    with caplog.at_level("WARNING", logger="secmon.service.run"):
        result = jobs.run_job(es, settings, keeper, "scan", lambda token: jobs.scan_due(
            es, settings, keeper, token, lambda: now, stop, stopped_meanwhile), lambda: now, stop)
    assert result is not None and result.outcome == "success", result
    assert result.note == "1 chunks scanned; secmon was stopped (SIGTERM/SIGINT) before the rest" and chunks == [t0]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "secmon was stopped (SIGTERM/SIGINT) before its document could be written" in said, said
    assert "lapsed" not in said, said
    assert watermark(es, indices.prefix) == t0  # nothing written without the lease: the chunk is scanned again

    # Between two chunks, the watermark's move: a stop says so; without one, the lease lapsed.
    assert keeper.keep(now).active
    token = keeper.holds(now)
    assert token is not None
    keeper.release(now)
    with pytest.raises(LeaseLost, match=r"^secmon was stopped \(SIGTERM/SIGINT\) before the watermark could move"):
        jobs._commit(keeper, token, lambda s: s, lambda: now, stop)
    with pytest.raises(LeaseLost, match="^the lease lapsed before the watermark could move"):
        jobs._commit(keeper, token, lambda s: s, lambda: now, threading.Event())
    caplog.clear()
    with caplog.at_level("WARNING", logger="secmon.service.run"):
        jobs.record(keeper, "scan", token, jobs.JobResult("success", "", lambda s: s), lambda: now)
    assert "the lease lapsed before its document could be written" in caplog.text, caplog.text


def test_a_scan_that_ran_no_rule_does_not_move_the_watermark(tmp_path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "no-rules").mkdir()
    path = tmp_path / "secmon.yml"
    path.write_text(config_text(es_url, prefix, free_port(), rules=[tmp_path / "no-rules"]), encoding="utf-8")
    settings = load_settings(path)
    setup(es, settings, NOW)
    keeper = jobs.Keeper(es, settings, me="a")
    assert keeper.keep(NOW).active
    result = jobs.run_job(es, settings, keeper, "scan",
                          lambda token: jobs.scan_due(es, settings, keeper, token, lambda: NOW, threading.Event()),
                          lambda: NOW)
    assert result is not None and result.outcome == "failure" and "no rule ran" in result.note
    assert watermark(es, prefix) == NOW - timedelta(seconds=4)  # where the first run starts (the look-back), still
    code, out, _ = run_cli("-c", str(path), "status")
    assert code == 7 and "no rule ran" in out, out


def test_retention_deletes_whole_months_past_the_agency_retention_and_audits_it(es, settings) -> None:  # type: ignore[no-untyped-def]
    indices = Indices(settings.elasticsearch.index_prefix)
    old = f"{indices.prefix}-events-{AGENCY}-2020.01"
    recent = indices.events(AGENCY, NOW)
    other = f"{indices.prefix}-events-{AGENCY}-x-2020.01"  # another agency's name starts with this one's
    for name in (old, recent, other):
        es.indices.create(index=name)
    deleted = retention(es, settings, NOW)  # so-tttt keeps 365 days (the default)
    assert deleted == [old]
    assert not es.indices.exists(index=old) and es.indices.exists(index=recent) and es.indices.exists(index=other)
    es.indices.refresh(index=indices.audit)
    audit = es.search(index=indices.audit, query={"term": {"event.action": "retention"}})["hits"]["hits"]
    assert [hit["_source"]["secmon"]["details"]["index"] for hit in audit] == [old]


def test_status_is_healthy_while_a_scheduler_runs_and_unhealthy_with_failed_alerts_or_without_one(  # type: ignore[no-untyped-def]
        tmp_path, es, es_url, prefix) -> None:
    from secmon.scheduler import run as run_scheduler

    path = tmp_path / "secmon.yml"
    path.write_text(config_text(es_url, prefix, free_port(), lease="3s", scan_interval="2s", lookback="5s"),
                    encoding="utf-8")
    settings = load_settings(path)
    stop = threading.Event()
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(run_scheduler(es, settings, stop)), daemon=True)
    thread.start()
    try:
        answers: list[tuple[int, str, str]] = []
        wait_until(lambda: answers.append(run_cli("-c", str(path), "status")) or answers[-1][0] == 0, 60,
                   lambda: "never healthy:\n" + "".join(answers[-1][1:]), step=0.5)
        assert answers[-1][1].rstrip().endswith("healthy")
        es.index(index=f"{prefix}-alerts", id="broken", refresh=True,
                 document={"@timestamp": NOW.isoformat(), "secmon": {"status": "failed"}})
        code, out, _ = run_cli("-c", str(path), "status", "--json")
        report = json.loads(out)
        assert code == 7 and not report["healthy"] and report["alerts"]["failed"] == 1, out
        assert any("alerts failed" in problem for problem in report["problems"])
        es.delete(index=f"{prefix}-alerts", id="broken", refresh=True)
    finally:
        stop.set()
        thread.join(60)
    assert done and not thread.is_alive()
    code, out, _ = run_cli("-c", str(path), "status")
    assert code == 7 and "no active scheduler" in out, out


def test_status_says_so_when_elasticsearch_is_unreachable(tmp_path, prefix) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "secmon.yml"
    path.write_text(config_text(f"http://127.0.0.1:{free_port()}", prefix, free_port()), encoding="utf-8")
    code, _, err = run_cli("-c", str(path), "status")
    assert code == 5 and "unreachable" in err, err
