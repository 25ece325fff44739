"""The batched scan's query composition (detect/plan.py) and the arrival-time filter of findings: pure."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from secmon.detect import plan
from secmon.detect.windowing.findings import findings
from secmon.detect.sigma.load import CompiledRule, load_rule_file
from secmon.model import ScanWindow

RULES = Path(__file__).resolve().parents[2] / "rules"
START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
BY_TIME = ScanWindow(START, START + timedelta(minutes=5))
BY_ARRIVAL = ScanWindow(START, START + timedelta(minutes=5), "event.ingested")


def rule(name: str) -> CompiledRule:
    loaded = load_rule_file(RULES / "linux" / f"{name}.yml")
    assert not loaded.problems and len(loaded.rules) == 1
    return loaded.rules[0]


@pytest.fixture(scope="module")
def brute() -> CompiledRule:  # event_count >= 10 in 5 minutes, per source.address
    return rule("ssh-password-brute-force")


@pytest.fixture(scope="module")
def root_login() -> CompiledRule:  # single, per (host.hostname, source.ip)
    return rule("ssh-root-login-accepted")


def probe_answer(first: str | None = "2026-03-01T10:01:00Z", keys: list[Any] = (), lacking: int = 0,
                 formatted: bool = False) -> dict[str, Any]:
    millis = None if first is None else datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp() * 1000
    buckets = [{"key": k, "doc_count": 1} | ({"key_as_string": str(k).lower()} if formatted else {}) for k in keys]
    return {"first": {"value": millis}, "last": {"value": None if millis is None else millis + 60_000},
            "keys": {"buckets": buckets}, "lacking": {"doc_count": lacking}}


def test_a_probe_asks_for_new_matches_and_their_first_group_by_field(brute: CompiledRule) -> None:
    body = plan.probe_search(brute, BY_ARRIVAL)
    assert body["size"] == 0
    window, query = body["query"]["bool"]["filter"]
    assert window == {"range": {"event.ingested": {"gte": "2026-03-01T10:00:00Z", "lt": "2026-03-01T10:05:00Z",
                                                   "format": "strict_date_optional_time"}}}
    assert query == plan.matching(brute)  # its query, or a value too long to index (compile.py)
    assert body["aggs"]["keys"] == {"terms": {"field": "source.address", "size": plan.MAX_NARROWING_GROUPS + 1}}
    assert body["aggs"]["lacking"] == {"missing": {"field": "source.address"}}


def test_a_rule_without_group_by_narrows_on_the_agency(brute: CompiledRule) -> None:
    import dataclasses

    assert plan.narrowing_field(dataclasses.replace(brute, group_by=())) == "organization.id"


def test_reading_a_probe(brute: CompiledRule) -> None:
    assert plan.read_probe(brute, probe_answer(None)) is None
    seen = plan.read_probe(brute, probe_answer(keys=["a", "b"], lacking=2))
    assert seen is not None and seen.keys == ("a", "b") and seen.lacking
    assert seen.first == START + timedelta(minutes=1) and seen.last == START + timedelta(minutes=2)
    many = plan.read_probe(brute, probe_answer(keys=list(range(plan.MAX_NARROWING_GROUPS + 1))))
    assert many is not None and many.keys is None  # too many to narrow on: fetch every group
    assert plan.read_probe(brute, probe_answer(keys=[True], formatted=True)).keys == ("true",)  # type: ignore[union-attr]


def test_a_correlation_whose_new_matches_lack_the_group_field_fetches_nothing(brute: CompiledRule,
                                                                              root_login: CompiledRule) -> None:
    lacking = plan.read_probe(brute, probe_answer(keys=[], lacking=3))
    assert lacking is not None and not plan.worth_fetching(brute, lacking)
    single = plan.read_probe(root_login, probe_answer(keys=[], lacking=3))
    assert single is not None and plan.worth_fetching(root_login, single)  # grouped as "(none)"


def test_the_fetch_searches_the_context_of_the_new_matches(brute: CompiledRule, root_login: CompiledRule) -> None:
    seen = plan.read_probe(brute, probe_answer(keys=["1.2.3.4"]))
    assert seen is not None
    context, query, narrowing = plan.fetch_query(brute, BY_TIME, seen)["bool"]["filter"]
    assert context["range"]["@timestamp"]["gte"] == "2026-03-01T09:55:00Z"  # start - timespan
    assert context["range"]["@timestamp"]["lt"] == "2026-03-01T10:05:00Z"  # the window's end, as rule by rule
    assert narrowing == {"bool": {"should": [{"terms": {"source.address": ["1.2.3.4"]}}], "minimum_should_match": 1}}
    context = plan.fetch_query(brute, BY_ARRIVAL, seen)["bool"]["filter"][0]["range"]["@timestamp"]
    assert (context["gte"], context["lte"]) == ("2026-03-01T09:56:00Z", "2026-03-01T10:07:00Z")  # new matches +- 5m
    lone = plan.read_probe(root_login, probe_answer(keys=["combo"], lacking=1))
    assert lone is not None
    narrowing = plan.fetch_query(root_login, BY_TIME, lone)["bool"]["filter"][-1]
    assert narrowing["bool"]["should"][1] == {"bool": {"must_not": [{"exists": {"field": "host.hostname"}}]}}
    wide = plan.read_probe(root_login, probe_answer(keys=list(range(plan.MAX_NARROWING_GROUPS + 1))))
    assert wide is not None and len(plan.fetch_query(root_login, BY_TIME, wide)["bool"]["filter"]) == 2


def hit(ident: str, at: datetime, ingested: str | None = None, host: str = "combo") -> dict[str, Any]:
    fields: dict[str, Any] = {"@timestamp": [at.isoformat().replace("+00:00", "Z")], "organization.id": ["so-tttt"],
                              "host.hostname": [host], "source.ip": ["1.2.3.4"]}
    if ingested:
        fields["event.ingested"] = [ingested]
    return {"_id": ident, "fields": fields}


def test_new_events_are_those_ingested_in_the_window_to_the_millisecond() -> None:
    window = ScanWindow(START + timedelta(microseconds=1500), START + timedelta(seconds=1, microseconds=999),
                        "event.ingested")
    hits = [hit("before", START, "2026-03-01T10:00:00.000Z"), hit("first", START, "2026-03-01T10:00:00.001Z"),
            hit("last", START, "2026-03-01T10:00:00.999Z"), hit("after", START, "2026-03-01T10:00:01.000Z"),
            hit("never", START)]
    # Elasticsearch truncates the bounds to milliseconds, so the probe saw exactly these.
    assert plan.new_event_ids(hits, window) == {"first", "last"}
    assert plan.new_event_ids(hits, BY_TIME) is None


def test_only_bursts_holding_a_new_event_count(root_login: CompiledRule) -> None:
    hits = [hit("a", START), hit("b", START + timedelta(minutes=30)),  # one burst (1 h suppression)
            hit("c", START + timedelta(hours=3)), hit("d", START + timedelta(hours=3), host="other")]
    assert len(findings(root_login, hits)) == 3
    kept = findings(root_login, hits, new=frozenset({"b"}))
    assert [(f.count, f.sample_event_ids) for f in kept] == [(2, ("a", "b"))]
    assert findings(root_login, hits, new=frozenset()) == []


def test_findings_do_not_depend_on_the_order_of_hits(brute: CompiledRule) -> None:
    base = {"organization.id": ["so-tttt"], "source.address": ["bad.example"]}
    hits = [{"_id": f"e{n:02d}", "fields": {**base, "@timestamp": [f"2026-03-01T10:00:0{n // 4}Z"]}}
            for n in range(12)]  # ties: four events per second
    expected = findings(brute, hits)
    assert expected and expected[0].sample_event_ids[:2] == ("e00", "e01")
    for seed in range(5):
        shuffled = hits[:]
        random.Random(seed).shuffle(shuffled)
        assert findings(brute, shuffled) == expected
