"""In-process string matching (RE2 automata, byte-segment search) answers what the node answers.

Hypothesis draws short values over an alphabet that exercises case folding, non-ASCII letters,
newlines and digits; they are indexed in a keyword field, and rules with regexes (crafted
catastrophic ones included) and wildcards run on the node and in-process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import helpers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmon.detect.rules.load import CompiledRule, load_rule_file
from secmon.detect.rules.match import matches
from secmon.store.indices import Indices
from secmon.store.templates import install_templates

pytestmark = [pytest.mark.integration]

SELECTIONS = [
    "message|re: '(a+)+$'", "message|re: '^(a|ab)*c'", "message|re: '(?i)AB+c'", "message|re: '\\d{2}-\\w'",
    "message|re: '^[aé]{2,3}x'", "message|re: 'x.y'", "message|re: '(?s)x.y'", "message|re: '(.*a){3}c'",
    "message|re: 'b$|^c'", "message|re: '\\s+1'",
    "message|contains: 'é'", "message|contains: 'aB'", "message|startswith: 'A'", "message|endswith|cased: 'b'",
    "message|contains|all: [a, b, c]", "message: 'a?c*'", "message|contains: 'x\\*y'", "message: 'ÉA'",
]
values = st.text(alphabet="abcxyABÉé \n-12", max_size=12)


def compiled(tmp_path: Path, selection: str) -> CompiledRule:
    path = tmp_path / f"{uuid.uuid4().hex}.yml"
    path.write_text(f"title: t\nlogsource: {{category: webserver}}\ndetection:\n  sel:\n    {selection}\n"
                    "  condition: sel\n", encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    return ruleset.rules[0]


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> list[CompiledRule]:
    folder = tmp_path_factory.mktemp("regex-rules")
    return [compiled(folder, s) for s in SELECTIONS]


@pytest.fixture(scope="module")
def index(es) -> Iterator[str]:  # type: ignore[no-untyped-def]
    prefix = f"t{uuid.uuid4().hex[:10]}"
    install_templates(es, Indices(prefix))
    name = f"{prefix}-events-regex-2026.01"
    es.indices.create(index=name)
    yield name
    es.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    for template in es.options(ignore_status=404).indices.get_index_template(name=f"{prefix}-*").get(
            "index_templates", []):
        es.indices.delete_index_template(name=template["name"])


# Known defect (found on the merged tree, 2026-11-29; issue 10): `|contains` of a non-ASCII letter
# ('é') can match on one path and not the other (case folding of non-ASCII text by query type).
# Not strict: the test runs on every draw and must lose this mark once both paths agree.
@pytest.mark.xfail(reason="non-ASCII case folding of |contains: node and in-process differ", strict=False)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(values, min_size=1, max_size=40, unique=True))
def test_node_and_in_process_agree(es, index: str, rules: list[CompiledRule], drawn: list[str]) -> None:  # type: ignore[no-untyped-def]
    batch = uuid.uuid4().hex[:8]
    docs = {f"{batch}-{n}": {"event": {"category": "web"}, "message": v, "labels": {"batch": batch}}
            for n, v in enumerate(drawn)}
    ok, errors = helpers.bulk(es, ({"_index": index, "_id": i, "_source": d} for i, d in docs.items()),
                              raise_on_error=False, refresh="wait_for")
    assert not errors, errors[:3]
    searches = []
    for rule in rules:
        query = {"bool": {"filter": [{"term": {"labels.batch": batch}}, rule.query]}}
        searches += [{"index": index}, {"query": query, "size": 100, "_source": False}]
    wrong = []
    for rule, selection, response in zip(rules, SELECTIONS, es.msearch(searches=searches)["responses"]):
        assert "error" not in response, (selection, response)
        hits = response["hits"]["hits"]
        on_node = {h["_id"] for h in hits if rule.refine is None or matches(rule.refine, docs[h["_id"]])}
        local = {i for i, d in docs.items() if matches(rule.refine or rule.query, d)}
        if on_node != local:
            wrong.append((selection, sorted(docs[i]["message"] for i in on_node ^ local)[:3]))
    assert not wrong, wrong
