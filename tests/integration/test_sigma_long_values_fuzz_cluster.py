"""Long values, generated: the node (rule query or long_query, then the exact check of hits with
`_ignored` on their fetched values, as scans do) and the in-process matcher reading whole values
answer alike, for values just under, at and over `message`'s ignore_above (8191), and for rules
with negations (where a value the node cannot see must not make `not ... contains` true)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import helpers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmon.detect import plan
from secmon.detect.sigma.compile import and_, or_
from secmon.detect.sigma.load import CompiledRule, load_rule_file
from secmon.detect.inprocess.match import matches
from secmon.store.indices import Indices
from secmon.store.search import sorted_matches
from secmon.store.templates import install_templates
from tests.conftest import scratch_prefix
from tests.integration.test_sigma_regex_cluster import compiled

pytestmark = [pytest.mark.integration]
SELECTIONS = [
    "message|contains: 'aB'", "message|startswith: 'A'", "message|endswith|cased: 'b'", "message|re: 'x.y'",
    "message|contains|all: [a, b]", "message: 'a*b'", "message|contains: 'é'",
]
NEGATED = ["message|contains: 'a'\n  filter:\n    message|contains: 'é'\n  condition: sel and not filter"]
LIMIT = 8191
values = st.tuples(st.text(alphabet="abxyABé \n-", max_size=6), st.sampled_from([0, LIMIT - 12, LIMIT - 3, LIMIT + 5]),
                   st.text(alphabet="abxyABé \n-", max_size=6)).map(lambda t: t[0] + "-" * t[1] + t[2])


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> list[CompiledRule]:
    folder = tmp_path_factory.mktemp("long-rules")
    return [compiled(folder, s) for s in SELECTIONS] + [negated(folder, s) for s in NEGATED]


def negated(folder: Path, detection: str) -> CompiledRule:
    path = folder / f"{uuid.uuid4().hex}.yml"
    path.write_text(f"title: t\nlogsource: {{category: webserver}}\ndetection:\n  sel:\n    {detection}\n",
                    encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    return ruleset.rules[0]


@pytest.fixture(scope="module")
def index(es) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with scratch_prefix(es) as prefix:
        install_templates(es, Indices(prefix))
        name = f"{prefix}-events-long-2026.01"
        es.indices.create(index=name)
        yield name


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(values, min_size=1, max_size=12, unique=True))
def test_node_and_in_process_agree_on_long_values(es, index: str, rules: list[CompiledRule],  # type: ignore[no-untyped-def]
                                                   drawn: list[str]) -> None:
    batch = uuid.uuid4().hex[:8]
    docs = {f"{batch}-{n}": {"@timestamp": "2026-01-15T10:00:00Z", "event": {"category": "web"}, "message": v,
                             "tags": [batch]} for n, v in enumerate(drawn)}
    ok, errors = helpers.bulk(es, ({"_index": index, "_id": i, "_source": d} for i, d in docs.items()),
                              raise_on_error=False, refresh="wait_for")
    assert not errors, errors[:3]
    wrong = []
    for rule in rules:
        assert rule.long_query is not None
        query = and_([{"term": {"tags": batch}}, or_([rule.query, rule.long_query])])
        hits = sorted_matches(es, index, query, (), plan.long_fields(rule))
        on_node = {h["_id"] for h in hits
                   if "_ignored" not in h["fields"] or matches(rule.query, h["fields"], whole=True)}
        local = {i for i, d in docs.items() if matches(rule.query, d, whole=True)}
        if on_node != local:
            wrong.append((rule.query, sorted((len(docs[i]["message"]), docs[i]["message"][:8]) for i in on_node ^ local)))
    assert not wrong, wrong
