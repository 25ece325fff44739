"""Correlations over event.ingested windows fetch their context without ids, then the few ids their
findings read (detect/windowing/idless.py), on the real node.

Tick by tick, as the scheduler scans, the findings are those of the fetch with ids (the old way,
`plan.idless` off): bursts cut by the ticks' edges, late events, two events of one group at the same
millisecond, a value too long to index; and far fewer hits are fetched with their ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from secmon.detect import plan
from secmon.detect.sigma.load import CompiledRule, load_rules
from secmon.model import Finding, ScanWindow
from secmon.service.scan import RuleRun, run_rules
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from tests.conftest import drop_prefix
from tests.integration.test_scan_window_only import doc, example, stamp  # the same documents, the same way

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AGENCY = "so-tttt"
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
TICK = timedelta(minutes=5)
TICKS = 12
RULES = (ROOT / "rules/linux/ssh-password-brute-force.yml",  # 10 failures in 5 minutes per source.address
         ROOT / "rules/web/small-probe-of-admin-paths-on-a-web-server.yml")  # 4 admin paths in 10 min per source.ip
ADMIN = ["/phpmyadmin/", "/wp-admin/", "/admin/", "/administrator/", "/manager/html", "/adminer"]


def events() -> Iterator[tuple[str, dict[str, Any]]]:
    """Failed logins from one address every 5 s for 40 minutes (one long burst, cut by every tick;
    every 7th ingested 6 minutes late, two at the same millisecond), and from a second address 8 in
    a row (never 10: no finding); admin paths from one client every 15 s for 50 minutes (one too long
    to index), and two at the same millisecond."""
    failed, probe = example(RULES[0]), example(RULES[1])
    for n in range(480):
        at = T0 + timedelta(seconds=5 * n + (0 if n != 30 else -5))  # 29 and 30: the same millisecond
        late = timedelta(minutes=6) if n % 7 == 3 else timedelta(seconds=15)
        yield f"failed:{n}", doc({**failed, "process.pid": 1000 + n}, at, at + late)
    for n in range(8):
        at = T0 + timedelta(minutes=20, seconds=10 * n)
        yield f"other:{n}", doc({**failed, "process.pid": 5000 + n, "source.address": "10.9.9.9",
                                 "source.ip": "10.9.9.9"}, at, at + timedelta(seconds=10))
    for n in range(200):
        at = T0 + timedelta(seconds=15 * n + (0 if n != 20 else -15))  # 19 and 20: the same millisecond
        path = ADMIN[n % len(ADMIN)] if n != 33 else "/admin/" + "a" * 1100  # too long to index (url.path)
        late = timedelta(minutes=7) if n % 9 == 4 else timedelta(seconds=25)
        yield f"probe:{n}", doc({**probe, "url.path": path, "url.original": path}, at, at + late)


@pytest.fixture(scope="module")
def rules() -> tuple[CompiledRule, ...]:
    loaded = load_rules(list(RULES))
    assert not loaded.problems, loaded.problems
    correlations = tuple(rule for rule in loaded.rules if rule.kind != "single")
    assert len(correlations) == 2 and all(rule.long_query is not None for rule in correlations)
    return correlations


@pytest.fixture()
def indices(es: Elasticsearch) -> Iterator[Indices]:
    found = Indices(f"t{uuid.uuid4().hex[:10]}")
    install_templates(es, found)
    yield found
    drop_prefix(es, found.prefix)


def arrive(es: Elasticsearch, indices: Indices, window: ScanWindow) -> None:
    """Store the events ingested in `window`, as the collector would have by its end."""
    chosen = [(ident, source) for ident, source in events()
              if stamp(window.start) <= source["event"]["ingested"] < stamp(window.end)]
    ok, errors = helpers.bulk(es, ({"_index": indices.events(AGENCY, T0), "_id": ident, "_source": source}
                                   for ident, source in chosen), raise_on_error=False)
    assert not errors, errors[:3]
    es.indices.refresh(index=indices.events_pattern())


def ordered(run: RuleRun) -> list[Finding]:
    assert not run.failures, run.failures
    return sorted(run.findings, key=lambda f: (f.rule_id, f.group, f.first_seen))


def test_ticks_find_what_the_fetch_with_ids_finds_with_few_ids(es: Elasticsearch, indices: Indices,
                                                               rules: tuple[CompiledRule, ...],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    idless = plan.idless
    fired: set[str] = set()
    hits_with_ids = {True: 0, False: 0}
    requests = {True: 0, False: 0}
    for n in range(TICKS + 2):
        window = ScanWindow(T0 + n * TICK, T0 + (n + 1) * TICK, "event.ingested")
        arrive(es, indices, window)
        runs = {}
        for without in (True, False):
            monkeypatch.setattr(plan, "idless", idless if without else lambda rule, window: False)
            runs[without] = run_rules(es, indices, rules, window)
            hits_with_ids[without] += runs[without].with_ids
            requests[without] += runs[without].requests
        assert ordered(runs[True]) == ordered(runs[False]), f"tick {n}"
        fired |= {f.rule_id for f in runs[True].findings}
        # One more request at most: the ids of the hits the findings read, when some are not the window's.
        assert runs[True].requests <= runs[False].requests + 1, f"tick {n}"
    assert fired == {rule.id for rule in rules}
    # Samples (at most 20 a finding), ties and the long value, against every hit of every context.
    assert hits_with_ids[True] * 4 < hits_with_ids[False], hits_with_ids
    print(f"hits fetched with ids: {hits_with_ids}, requests: {requests}")


def test_a_tick_over_one_window_fetches_no_id(es: Elasticsearch, indices: Indices,
                                              rules: tuple[CompiledRule, ...]) -> None:
    """Every event is in the window, read once in-process: the window's documents name every hit."""
    window = ScanWindow(T0, T0 + timedelta(hours=2), "event.ingested")
    arrive(es, indices, window)
    run = run_rules(es, indices, rules[:1], window)
    assert run.findings and run.requests == 2 and run.with_ids == 0, run
