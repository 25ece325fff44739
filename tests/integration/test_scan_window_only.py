"""Single rules over event.ingested windows take their hits from the window's own documents
(plan.window_only, inwindow.rule_hits), on the real node.

- The hits built in-process are the hits the node's fetch of the window returns (long values,
  multi-valued and missing group-by fields included).
- Scans tick by tick (the scheduler's) raise the incidents one backfill raises: a single rule's
  burst cut by the ticks is one incident, one occurrence, every event counted once; a
  correlation whose events straddle two ticks fires as the backfill's does.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from secmon.config import load_settings
from secmon.detect import inwindow, plan
from secmon.detect.inprocess.examples import examples_of
from secmon.detect.sigma.compile import and_
from secmon.detect.sigma.load import CompiledRule, load_rules
from secmon.model import ScanWindow
from secmon.service.common import setup
from secmon.service.scan import ScanOptions, run_rules, scan
from secmon.store.indices import Indices
from secmon.store.search import RequestCount, every_hit_if_few, sorted_matches
from secmon.types import iso
from tests.conftest import drop_prefix, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AGENCY = "so-tttt"
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
TICK = timedelta(minutes=5)
RULES = (ROOT / "rules/linux/ssh-root-login-accepted.yml",  # single, 1 h suppression, per (host, source.ip)
         ROOT / "rules/linux/ssh-password-brute-force.yml",  # 10 failures in 5 minutes per source.address
         ROOT / "rules/web/web-shell-accessed.yml")  # single, with a long-value part (url.path)


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def example(path: Path) -> dict[str, Any]:
    found = (examples_of(path) or {})["match"][0]
    return dict(found[0] if isinstance(found, list) else found)


def doc(fields: dict[str, Any], at: datetime, ingested: datetime) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in {**fields, "@timestamp": stamp(at), "organization.id": AGENCY,
                       "event.ingested": stamp(ingested)}.items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return nested


def events() -> Iterator[tuple[str, dict[str, Any]]]:
    """Root logins: one burst over 25 minutes cut by every tick (some late), then variants; failed logins:
    10 in 2 minutes, 6 in the first tick and 4 in the next; web shells, one path too long to index."""
    login, failed, shell = (example(path) for path in RULES)
    for n in range(12):  # 1 h suppression: one burst
        at = T0 + timedelta(minutes=2 * n + 1)
        # Every 4th a few minutes late, not the first: an incident is named by the first event seen.
        yield f"login:{n}", doc(login, at, at + timedelta(seconds=400 if n % 4 == 1 else 20))
    variants = [{k: v for k, v in login.items() if k != "host.hostname"},
                {**login, "host.hostname": ["aa-first", "combo"]}, {**login, "source.ip": ["10.0.0.9", "10.0.0.8"]}]
    for n, variant in enumerate(variants):
        at = T0 + timedelta(minutes=11, seconds=n)
        yield f"variant:{n}", doc(variant, at, at + timedelta(seconds=30))
    for n in range(10):
        at = T0 + timedelta(minutes=3, seconds=12 * n)
        yield f"failed:{n}", doc({**failed, "process.pid": 100 + n}, at,
                                 T0 + timedelta(minutes=4) if n < 6 else T0 + timedelta(minutes=6))
    padded = "/" + "a" * 1100 + str(shell["url.path"])
    for n, path in enumerate([shell["url.path"], padded, shell["url.path"]]):
        at = T0 + timedelta(minutes=7 + n)
        yield f"shell:{n}", doc({**shell, "url.path": path, "url.original": path}, at, at + timedelta(seconds=5))


def ticks() -> list[ScanWindow]:
    return [ScanWindow(T0 + n * TICK, T0 + (n + 1) * TICK, "event.ingested") for n in range(8)]


@pytest.fixture(scope="module")
def rules() -> tuple[CompiledRule, ...]:
    loaded = load_rules(list(RULES))
    assert not loaded.problems and [r.kind for r in loaded.rules].count("single") == 2, loaded
    return loaded.rules


def load(es: Elasticsearch, tmp: Path, es_url: str, arrived: ScanWindow | None = None) -> tuple[Any, Indices]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = load_settings(write_config(tmp / f"{prefix}.yml", es_url, prefix, 2525,
                                          extra="incidents:\n  quiet_period: 10m\n"))
    setup(es, settings, T0)
    indices = Indices(prefix)
    arrive(es, indices, arrived)
    return settings, indices


def arrive(es: Elasticsearch, indices: Indices, arrived: ScanWindow | None) -> None:
    """Store the events (those ingested in `arrived`, if given), as the collector would have by then."""
    chosen = [(ident, source) for ident, source in events()
              if arrived is None or stamp(arrived.start) <= source["event"]["ingested"] < stamp(arrived.end)]
    ok, errors = helpers.bulk(es, ({"_index": indices.events(AGENCY, T0), "_id": ident, "_source": source}
                                   for ident, source in chosen), raise_on_error=False)
    assert not errors, errors[:3]
    es.indices.refresh(index=indices.events_pattern())


@pytest.fixture(scope="module")
def loaded(es: Elasticsearch, es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Indices]]:
    settings, indices = load(es, tmp_path_factory.mktemp("windowonly"), es_url)
    yield settings, indices
    drop_prefix(es, indices.prefix)


def comparable(hits: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """A hit's id and fields, the timestamp as a moment (the node writes it with milliseconds)."""
    out = []
    for found in hits:
        fields = {k: (sorted(map(str, v)) if k != "@timestamp" else
                      [datetime.fromisoformat(str(v[0]).replace("Z", "+00:00"))]) for k, v in found["fields"].items()}
        out.append((str(found["_id"]), fields))
    return sorted(out)


def test_the_window_documents_give_the_hits_the_node_fetch_returns(es: Elasticsearch, loaded: tuple[Any, Indices],
                                                                   rules: tuple[CompiledRule, ...]) -> None:
    _, indices = loaded
    index = indices.events_pattern()
    window = ScanWindow(T0, T0 + timedelta(hours=1), "event.ingested")  # every event
    body = inwindow.window_search(rules, window)
    assert body is not None and inwindow.builds_hits(rules, window)
    documents = every_hit_if_few(es, index, body, RequestCount())
    assert documents is not None
    matched = inwindow.match_documents(rules, documents)
    compared = 0
    for n, rule in enumerate(rules):
        if not plan.window_only(rule, window):
            continue
        here = inwindow.rule_hits(rule, matched.documents[n])
        query = and_([plan.window_filter(window.start, window.end, window.field), plan.matching(rule)])
        there = list(sorted_matches(es, index, query, plan.hit_fields(rule), plan.long_fields(rule)))
        assert comparable(here) == comparable(there), rule.id
        compared += len(here)
    assert compared == 12 + 3 + 3
    long_hit = next(h for h in inwindow.rule_hits(rules[2], matched.documents[2]) if h["_id"] == "shell:1")
    assert "_ignored" in long_hit["fields"] and len(long_hit["fields"]["url.path"][0]) > 1100


def incidents(es: Elasticsearch, indices: Indices) -> list[tuple[Any, ...]]:
    es.indices.refresh(index=indices.incidents)
    found = es.search(index=indices.incidents, size=100, query={"match_all": {}})["hits"]["hits"]
    return sorted((h["_id"], h["_source"]["rule"]["id"], tuple(h["_source"]["secmon"]["group"]),
                   h["_source"]["event"]["start"], h["_source"]["event"]["end"], h["_source"]["event"]["count"],
                   h["_source"]["secmon"]["occurrences"]) for h in found)


def test_ticks_raise_the_incidents_of_one_backfill(es: Elasticsearch, es_url: str, tmp_path: Path,
                                                   rules: tuple[CompiledRule, ...]) -> None:
    by_ticks, ticked = load(es, tmp_path, es_url, ScanWindow(T0, T0, "event.ingested"))  # nothing yet
    backfilled, filled = load(es, tmp_path, es_url)
    try:
        for n, window in enumerate(ticks()):
            arrive(es, ticked, window)  # a tick sees what arrived by its end, no later event
            for _ in range(1 if n % 3 else 2):  # some ticks run twice (a crash before the watermark moved)
                summary = scan(es, by_ticks, ScanOptions(window.start, window.end, RULES, deliver=False,
                                                         field="event.ingested"), window.end + timedelta(minutes=1))
                assert not summary.rules_failed, summary.rules_failed
        summary = scan(es, backfilled, ScanOptions(T0 - timedelta(hours=1), T0 + timedelta(hours=2), RULES,
                                                   deliver=False), T0 + timedelta(hours=3))
        assert not summary.rules_failed, summary.rules_failed
        ticks_found, backfill_found = incidents(es, ticked), incidents(es, filled)
        named = {Path(rule.path).stem: rule.id for rule in rules}
        by_rule = {name: [i for i in ticks_found if i[1] == ident] for name, ident in named.items()}
        # The root logins' burst: cut by five ticks, one incident of one occurrence, all 12 counted once.
        (burst,) = [i for i in by_rule["ssh-root-login-accepted"] if i[2] == ("host.hostname=combo",
                                                                              "source.ip=220.135.151.1")]
        assert burst[5] == 12 and burst[6] == 1, burst
        (brute,) = by_rule["ssh-password-brute-force"]  # 6 failures in one tick, 4 in the next: it fires
        assert brute[3] == iso(T0 + timedelta(minutes=3)), brute
        # Everything but the correlation's count: a tick counts the events it adds to a burst that fires,
        # the 6 of the earlier tick, which did not fire then, are context (grouping.py, contributions).
        left, right = [i[:5] + i[6:] for i in ticks_found], [i[:5] + i[6:] for i in backfill_found]
        assert left == right
        assert brute[5] == 4  # what the tick that fired added
        brute_id = named["ssh-password-brute-force"]
        assert [i for i in ticks_found if i[1] != brute_id] == [i for i in backfill_found if i[1] != brute_id]
    finally:
        drop_prefix(es, ticked.prefix)
        drop_prefix(es, filled.prefix)


def test_a_window_too_big_to_read_fetches_the_window_alone(es: Elasticsearch, loaded: tuple[Any, Indices],
                                                           rules: tuple[CompiledRule, ...],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, indices = loaded
    window = ScanWindow(T0, T0 + timedelta(hours=1), "event.ingested")
    here = run_rules(es, indices, rules, window)
    monkeypatch.setattr(inwindow, "WINDOW_LIMIT", 5)
    fetched = run_rules(es, indices, rules, window)
    key = lambda f: (f.rule_id, f.group, f.first_seen)  # noqa: E731
    assert sorted(here.findings, key=key) == sorted(fetched.findings, key=key) and here.findings
    assert here.requests == 2 and not here.failures  # the window's documents, then the correlation's fetch
