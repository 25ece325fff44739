"""What one scheduled scan tick costs the node, by kind of request, on the real node.

The scheduler scans every few minutes all day: each request of its bookkeeping (lease, watermark,
scan record, audit, incident lookup) is paid 288 times a day per 5-minute interval. These tests
count the requests the client really sends (at its transport, so retries are not hidden) over the
ticks of a fake clock and hold the bookkeeping to a budget that allows no growth. The searches of
the events themselves (detection, `service/scan.run_rules`) are counted and printed, not budgeted
here. They also check that what the cheaper road writes is what the scan needs: the watermark, the
outcome, the merged incident with its texts as stored.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from secmon.config import Settings, load_settings
from secmon.errors import LeaseLost
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import pipeline_named
from secmon.service import run as jobs
from secmon.service.common import setup
from secmon.store.indices import Indices
from secmon.store.writer import BulkWriter
from secmon.types import iso
from tests.conftest import free_port
from tests.integration.unattended import AGENCY, ROOT, burst_lines, config_text, watermark

pytestmark = pytest.mark.integration

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
TICK = timedelta(minutes=5)

# The bookkeeping of one tick, at most (kind: method, index role, endpoint). Lower is fine; more fails.
BUDGET_WITH_MERGE = {
    "PUT state _doc": 2,  # the lease renewal; the watermark with the run's outcome
    "POST events _refresh": 1,  # what reached the node before the chunk's end is searchable
    "POST exceptions _search": 1,
    "POST incidents _search": 1,  # the findings' groups' incidents, NEAR_FIELDS only
    "PUT - _bulk": 2,  # the incident's partial update; the scan record with its audit entry
}
BUDGET_NOTHING_FOUND = {"PUT state _doc": 2, "POST events _refresh": 1, "POST exceptions _search": 1,
                        "PUT - _bulk": 1}


class Counted:
    """A client whose every request is counted by kind, before it is sent (nothing is faked)."""

    def __init__(self, url: str, prefix: str):
        self.es = Elasticsearch(url, request_timeout=60)
        self.kinds: Counter[str] = Counter()
        self.received = 0
        transport = self.es.transport
        send = transport.perform_request

        def counting(method: str, target: str, **options: Any) -> Any:
            self.kinds[kind_of(method, target, prefix)] += 1
            return send(method, target, **options)

        transport.perform_request = counting  # type: ignore[method-assign]

    def take(self) -> Counter[str]:
        found, self.kinds = self.kinds, Counter()
        return found


def kind_of(method: str, target: str, prefix: str) -> str:
    parts = [p for p in target.split("?", 1)[0].split("/") if p]
    endpoint = next((p for p in reversed(parts) if p.startswith("_")), "index" if parts else "/")
    role = "-"
    if parts and parts[0].startswith(prefix + "-"):
        role = parts[0][len(prefix) + 1:]
        role = "events" if role.startswith("events-") else role
    return f"{method} {role} {endpoint}"


def bookkeeping(kinds: Counter[str]) -> dict[str, int]:
    """All but the searches of the events (their pages, points in time and multi-searches)."""
    return {k: n for k, n in kinds.items()
            if not (k.split()[1] == "events" and k.split()[2] in ("_search", "_msearch", "_pit"))
            and k.split()[2] not in ("_msearch", "_pit") and not (k.startswith("POST - _search"))}


def ingest(es: Elasticsearch, settings: Settings, lines: list[str], at: datetime, first_offset: int) -> None:
    pipeline = pipeline_named([ROOT / "pipelines"], "linux-auth")
    assert pipeline is not None
    normalizer = Normalizer(pipeline, agency=AGENCY, timezone="UTC", source="auth.log", now=T0)
    events = [normalizer.normalize(text, first_offset + i, f"auth.log:{first_offset + i}")
              for i, text in enumerate(lines)]
    stats = BulkWriter(es, Indices(settings.elasticsearch.index_prefix), now=lambda: at).write(events, AGENCY)  # type: ignore[arg-type]
    assert stats.events == len(lines)


def within(found: dict[str, int], budget: dict[str, int]) -> list[str]:
    return [f"{kind}: {n} (budget {budget.get(kind, 0)})" for kind, n in sorted(found.items())
            if n > budget.get(kind, 0)]


def test_a_scan_tick_stays_within_its_request_budget(tmp_path: Path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "secmon.yml"
    path.write_text(config_text(es_url, prefix, free_port(), lease="15m", lookback="5m", ingest_delay="1m",
                                max_chunk="5m"), encoding="utf-8")
    settings = load_settings(path)
    setup(es, settings, T0)
    counted = Counted(es_url, prefix)
    keeper = jobs.Keeper(counted.es, settings, me="tick:a")
    stop = threading.Event()
    indices = Indices(prefix)

    def tick(now: datetime) -> jobs.JobResult | None:
        assert keeper.keep(now).active
        return jobs.run_job(counted.es, settings, keeper, "scan",
                            lambda token: jobs.scan_due(counted.es, settings, keeper, token, lambda: now, stop),
                            lambda: now)

    # A burst of failed logins (one incident), then the same source again three minutes later: a merge.
    ingest(es, settings, burst_lines(0, T0), T0 + timedelta(seconds=30), 0)
    first = T0 + timedelta(minutes=2)
    result = tick(first)  # creates the lease, the watermark; opens the incident
    assert result is not None and result.outcome == "success", result
    opened = counted.take()
    ingest(es, settings, burst_lines(0, T0 + timedelta(minutes=3)), T0 + timedelta(minutes=3, seconds=30), 100)

    result = tick(first + TICK)
    merged = counted.take()
    assert result is not None and result.outcome == "success", result
    result = tick(first + 2 * TICK)
    quiet = counted.take()
    assert result is not None and result.outcome == "success", result
    print(f"first tick {dict(opened)}\nmerge tick {dict(merged)}\nquiet tick {dict(quiet)}")

    problems = within(bookkeeping(merged), BUDGET_WITH_MERGE) + within(bookkeeping(quiet), BUDGET_NOTHING_FOUND)
    assert not problems, f"{problems}\nmerge tick: {dict(merged)}\nquiet tick: {dict(quiet)}"
    assert not any(k.split()[0] in ("GET", "HEAD") for k in {**merged, **quiet}), (merged, quiet)  # no read-before-write

    # What the cheaper road wrote: the watermark and outcome in one document, the merged incident whole.
    assert watermark(es, prefix) == first + 2 * TICK - timedelta(minutes=1)
    job = es.get(index=indices.state, id="watermark-scan")["_source"]
    assert job["last"]["outcome"] == "success" and job["last"]["at"] and job["lag_seconds"] == 60.0, job
    es.indices.refresh(index=indices.incidents)
    hits = es.search(index=indices.incidents, query={"match_all": {}})["hits"]["hits"]
    assert len(hits) == 1, hits
    doc = hits[0]["_source"]
    assert doc["event"]["count"] == 24 and doc["event"]["end"].startswith(iso(T0 + timedelta(minutes=3))[:16]), doc
    assert doc["secmon"]["i18n"] and doc["rule"]["description"] and doc["tags"], doc  # texts kept as stored
    assert [c["action"] for c in doc["secmon"]["history"]] == ["opened"], doc
    es.indices.refresh(index=[indices.scans, indices.audit])
    scans = es.count(index=indices.scans)["count"]
    audited = es.count(index=indices.audit, query={"term": {"event.action": "scan"}})["count"]
    assert (scans, audited) == (3, 3)  # every scan run is recorded and audited


def test_a_stale_copy_of_the_watermark_is_refused_not_written_over(tmp_path: Path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    """The scheduler writes its job documents on the version it saw last, without reading them first:
    after a takeover, that copy is stale, and the write meets the newer holder's token instead of
    overwriting it; the lease renewal without a read likewise finds it lost."""
    path = tmp_path / "secmon.yml"
    path.write_text(config_text(es_url, prefix, free_port(), lease="30s", lookback="5m", ingest_delay="1m",
                                max_chunk="5m"), encoding="utf-8")
    settings = load_settings(path)
    setup(es, settings, T0)
    a, b = jobs.Keeper(es, settings, me="a"), jobs.Keeper(es, settings, me="b")
    assert a.keep(T0).active
    result = jobs.run_job(es, settings, a, "scan",
                          lambda token: jobs.scan_due(es, settings, a, token, lambda: T0, threading.Event()),
                          lambda: T0)
    assert result is not None and result.outcome == "success", result
    assert a.seen("scan") is not None  # a's copy of its watermark document
    later = T0 + timedelta(minutes=1)
    taken = b.keep(later)  # a's lease expired: b takes over and stamps token 2 on the job documents
    assert taken.active and taken.lease is not None and taken.lease.token == 2
    with pytest.raises(LeaseLost):
        a.commit("scan", 1, later, lambda current: replace(current, value=later))
    stored = es.get(index=Indices(prefix).state, id="watermark-scan")["_source"]
    assert stored["token"] == 2 and stored["holder"] == "b", stored
    assert watermark(es, prefix) == T0 - timedelta(minutes=1)  # where a left it, not moved by the stale copy
    lost = a.keep(later + timedelta(seconds=1))  # its renewal on its old version is refused: it reads, stands by
    assert not lost.active and lost.lost and lost.lease is not None and lost.lease.holder == "b"
