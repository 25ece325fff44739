"""Sigma on the real node: the 202 regression cases fire, and the cluster agrees with the in-process matcher.

The events are indexed once per module (bulk, refresh) under the test prefix with
secmon's own events template: the SigmaHQ regression events, a slice of the
EVTX-ATTACK-SAMPLES events, and copies of both with the case of every event data
value swapped. Then every community rule's compiled query runs once on the node
(ids only) and once in-process over the same documents; the id sets must be equal.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import ApiError, helpers

from secmon.detect.sigma.load import CompiledRule, RuleSet, load_rules
from secmon.detect.inprocess.match import compile_matcher, matches
from secmon.detect.inprocess.router import RuleRouter
from secmon.normalize.winlog import flatten_evtx
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from tests.conftest import drop_prefix

pytestmark = [pytest.mark.integration, pytest.mark.dataset]

ATTACK_SAMPLE_EVENTS = 3000  # first N EVTX-ATTACK-SAMPLES events (sorted file order), plus their copies


def json_documents(path: Path) -> Iterator[dict[str, Any]]:
    """A regression .json file holds one or more pretty-printed JSON objects one after another."""
    text, decoder, i = path.read_text(encoding="utf-8"), json.JSONDecoder(), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return
        obj, i = decoder.raw_decode(text, i)
        yield obj


def swapped(doc: dict[str, Any]) -> dict[str, Any]:
    copy = json.loads(json.dumps(doc))
    for section in ("event_data", "user_data"):
        data = copy["winlog"].get(section, {})
        for key, value in data.items():
            data[key] = [v.swapcase() for v in value] if isinstance(value, list) else value.swapcase()
    return copy


@pytest.fixture(scope="module")
def corpus(datasets: Path) -> RuleSet:
    return load_rules([datasets / "sigma_rules"])


@pytest.fixture(scope="module")
def events(datasets: Path) -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for row in csv.DictReader((datasets / "sigma_regression" / "labels.csv").open(encoding="utf-8")):
        path = (datasets / "sigma_regression" / row["evtx"]).with_suffix(".json")
        for n, record in enumerate(json_documents(path)):
            docs[f"reg:{row['rule_id']}:{n}"] = flatten_evtx(record)
    files = sorted((datasets / "evtx_attack_samples" / "jsonl").rglob("*.jsonl"))
    count = 0
    for path in files:
        for n, line in enumerate(path.open(encoding="utf-8")):
            if count >= ATTACK_SAMPLE_EVENTS:
                break
            docs[f"evtx:{path.name}:{n}"] = flatten_evtx(json.loads(line))
            count += 1
    for ident in list(docs):
        docs[f"{ident}:swapped"] = swapped(docs[ident])
    for doc in docs.values():
        doc["organization"] = {"id": "sigma"}
    return docs


@pytest.fixture(scope="module")
def index(es, events: dict[str, dict[str, Any]]) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import uuid

    prefix = f"t{uuid.uuid4().hex[:10]}"
    indices = Indices(prefix)
    install_templates(es, indices)
    name = f"{prefix}-events-sigma-2020.01"
    ok, errors = helpers.bulk(es, ({"_index": name, "_id": ident, "_source": doc} for ident, doc in events.items()),
                              raise_on_error=False, chunk_size=2000)
    assert not errors, errors[:3]
    es.indices.refresh(index=name)
    yield name
    drop_prefix(es, prefix)


def cluster_ids(es, index: str, rule: CompiledRule) -> set[str]:  # type: ignore[no-untyped-def]
    """What the node returns for the rule, refined in-process on doc values when the query is a superset."""
    response = es.search(index=index, query=rule.query, size=10000, _source=False, track_total_hits=True,
                         docvalue_fields=list(rule.refine_fields))
    assert response["hits"]["total"]["value"] < 10000
    hits = response["hits"]["hits"]
    if rule.refine is not None:
        hits = [hit for hit in hits if matches(rule.refine, hit.get("fields", {}))]
    return {hit["_id"] for hit in hits}


def test_every_regression_case_fires_on_the_node(es, index: str, corpus: RuleSet, datasets: Path) -> None:  # type: ignore[no-untyped-def]
    by_id = {rule.id: rule for rule in corpus.rules}
    silent = []
    cases = list(csv.DictReader((datasets / "sigma_regression" / "labels.csv").open(encoding="utf-8")))
    assert len(cases) == 202
    for row in cases:
        rule = by_id[row["rule_id"]]
        try:
            fired = cluster_ids(es, index, rule)
        except ApiError as exc:
            silent.append(f"{row['rule_name']}: refused: {exc}")
            continue
        if not any(ident.startswith(f"reg:{row['rule_id']}:") for ident in fired):
            silent.append(row["rule_name"])
    assert not silent


def test_cluster_and_in_process_agree(es, index: str, corpus: RuleSet, datasets: Path,  # type: ignore[no-untyped-def]
                                      events: dict[str, dict[str, Any]]) -> None:
    # The 202 regression rules (a cross-section of the corpus: every modifier the corpus uses but
    # |expand) over all indexed events: > 2M (rule, event) pairs in about a minute.
    wanted = {row["rule_id"] for row in csv.DictReader(
        (datasets / "sigma_regression" / "labels.csv").open(encoding="utf-8"))}
    rules = [rule for rule in corpus.rules if rule.id in wanted]
    disagreements = []
    pairs = 0
    for rule in rules:
        matcher = compile_matcher(rule.refine or rule.query)
        local = {ident for ident, doc in events.items() if matcher(doc)}
        try:
            remote = cluster_ids(es, index, rule)
        except ApiError as exc:
            disagreements.append((rule.id, rule.title, "refused", str(exc)[:200]))
            continue
        pairs += len(events)
        if local != remote:
            disagreements.append((rule.id, rule.title, sorted(local - remote)[:3], sorted(remote - local)[:3]))
    print(f"\ndifferential: {len(rules)} rules x {len(events)} events = {pairs} pairs, "
          f"{len(disagreements)} rules disagree")
    assert pairs >= 1_000_000
    assert not disagreements, disagreements[:10]


def test_offline_router_only_skips_rules_that_cannot_match(corpus: RuleSet,
                                                          events: dict[str, dict[str, Any]]) -> None:
    # In-process only (no node): the router's logsource routing and needle prefilter, over the
    # whole corpus, must answer what trying every rule answers, case-swapped copies included.
    router = RuleRouter(corpus.rules)
    docs = {ident: doc for ident, doc in events.items() if ident.startswith("reg:")}
    wrong, fired = [], 0
    for ident, doc in docs.items():
        expected = [rule.path for rule in router.matching_unrouted(doc)]
        fired += len(expected)
        if [rule.path for rule in router.matching(doc)] != expected:
            wrong.append(ident)
    assert fired >= len(docs) // 2 and not wrong, wrong[:5]


def test_the_needle_prefilter_never_drops_a_rule_that_fires(corpus: RuleSet, datasets: Path) -> None:
    # Every 10th EVTX-ATTACK-SAMPLES event (all 277 files, not only the slice indexed above), as the
    # offline scan sees it: the rules the needle prefilter lets through must fire exactly where
    # trying every rule the logsource admits fires (the prefilter is what makes offline triage fast).
    router = RuleRouter(corpus.rules)
    files = sorted((datasets / "evtx_attack_samples" / "jsonl").rglob("*.jsonl"))
    lines = [line for path in files for line in path.open(encoding="utf-8") if line.strip()][::10]
    wrong, fired = [], 0
    for n, line in enumerate(lines):
        doc = flatten_evtx(json.loads(line))
        expected = [rule.path for rule in router.matching_routed_only(doc)]
        fired += len(expected)
        if [rule.path for rule in router.matching(doc)] != expected:
            wrong.append(n)
    assert len(lines) > 800 and fired > 100 and not wrong, wrong[:5]


def test_every_windows_field_the_community_rules_read_is_mapped(corpus: RuleSet) -> None:
    # The events template is `dynamic: false` (made-up field names cannot grow it): a Windows field a
    # rule reads must be mapped, or the node would never match it while the in-process matcher would.
    from tests.unit.test_events_template import mapped, rule_fields

    known = mapped()
    missing = {field: rule.path for rule in corpus.rules for field in rule_fields(rule)
               if field.startswith("winlog.") and field not in known}
    assert not missing, f"add these to secmon/store/templates/events.json: {missing}"
