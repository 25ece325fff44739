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

from secmon.detect.sigma.load import CompiledRule, load_rule_file
from secmon.detect.inprocess.match import matches
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from tests.conftest import scratch_prefix

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
    with scratch_prefix(es) as prefix:
        install_templates(es, Indices(prefix))
        name = f"{prefix}-events-regex-2026.01"
        es.indices.create(index=name)
        yield name


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(values, min_size=1, max_size=40, unique=True))
def test_node_and_in_process_agree(es, index: str, rules: list[CompiledRule], drawn: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert_agree(es, index, rules, SELECTIONS, drawn)


def test_non_ascii_case_folding(es, index: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The node folds ASCII letters only in case_insensitive term, prefix and wildcard queries
    (`|contains: 'é'` does not match `É`), and Unicode in a `(?i)` regexp; in-process does the same."""
    selections = ["message|contains: 'é'", "message|startswith: 'É'", "message: 'ÉA'", "message|re: '(?i)é'",
                  "message|contains: 'ß'", "message|contains: 'đ'", "message|re: '(?i)Đ'", "message|contains: 'ắ'"]
    texts = ["é", "É", "aÉb", "ÉA", "éa", "Éa", "ß", "SS", "ẞ", "đ", "Đ", "Ắ", "ắ", "e\u0301", "K", "k"]
    assert_agree(es, index, [compiled(tmp_path, s) for s in selections], selections, texts)


def assert_agree(es, index: str, rules: list[CompiledRule], selections: list[str], texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    batch = uuid.uuid4().hex[:8]
    docs = {f"{batch}-{n}": {"event": {"category": "web"}, "message": v, "tags": [batch]}
            for n, v in enumerate(texts)}
    ok, errors = helpers.bulk(es, ({"_index": index, "_id": i, "_source": d} for i, d in docs.items()),
                              raise_on_error=False, refresh="wait_for")
    assert not errors, errors[:3]
    # The tag must be a mapped field (the events template is `dynamic: false`): an unmapped tag
    # matches nothing on the node, and every rule then looks like a node-side miss.
    tagged = es.count(index=index, query={"term": {"tags": batch}})["count"]
    assert tagged == len(docs), f"{tagged} of {len(docs)} documents found by their tag"
    searches = []
    for rule in rules:
        query = {"bool": {"filter": [{"term": {"tags": batch}}, rule.query]}}
        searches += [{"index": index}, {"query": query, "size": 100, "_source": False}]
    wrong = []
    for rule, selection, response in zip(rules, selections, es.msearch(searches=searches)["responses"]):
        assert "error" not in response, (selection, response)
        hits = response["hits"]["hits"]
        on_node = {h["_id"] for h in hits if rule.refine is None or matches(rule.refine, docs[h["_id"]])}
        local = {i for i, d in docs.items() if matches(rule.refine or rule.query, d)}
        if on_node != local:
            wrong.append((selection, sorted(docs[i]["message"] for i in on_node ^ local)[:3]))
    assert not wrong, wrong
