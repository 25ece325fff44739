"""Encoded web attacks fire the same rule as the plain payload, on the node and in-process
(issue 10, item 6).

An access-log line carries a SQL injection, XSS or traversal payload encoded as attackers send
it: percent-encoded (either hex case, some characters left as they are), `+` for spaces, double
encoded. The nginx pipeline decodes url.path and url.query; `urllib.parse` builds the encodings
and is the oracle that they all mean the payload. Every variant must fire the payload's rule,
and the node and the in-process matcher must agree on every web rule for every variant.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

import pytest
from elasticsearch import helpers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmon.detect.sigma.load import CompiledRule, load_rules
from secmon.detect.inprocess.match import matches
from secmon.model import Event
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from tests.conftest import drop_prefix
from tests.unit.test_pipelines import PIPELINES, normalize

pytestmark = [pytest.mark.integration]
WEB = Path(__file__).resolve().parents[2] / "rules" / "web"
SQLI, XSS, TRAVERSAL = "SQL injection", "Cross-site scripting", "Path traversal"
PAYLOADS = {
    SQLI: ["1' OR 1=1-- -", "-1 UNION SELECT username,password FROM users--", "1 union/**/all/**/select 1,2,3",
           "12' AND SLEEP(5)-- -", "admin'--", "1;DROP TABLE users", "' or 'a'='a"],
    XSS: ["<script>alert(1)</script>", "\"><img src=x onerror=alert(document.cookie)>", "<svg/onload=alert(1)>",
          "javascript:alert(1)", "' onmouseover='alert(1)"],
    TRAVERSAL: ["../../../../etc/passwd", "..\\..\\..\\windows\\win.ini", "/..;/..;/WEB-INF/web.xml",
                "....//....//etc/hosts"],
}
# Characters a request line can carry unencoded (no space, quote, %, +, &, #, ?).
MAY_STAY = "'<>()=;,/\\*-_.!~:@$`|{}[]^"


def encodings(payload: str, rnd: random.Random) -> dict[str, str]:
    """The payload as query-string value texts, each of which urllib.parse decodes to it."""
    partial = quote(payload, safe="".join(c for c in MAY_STAY if rnd.random() < 0.5))
    variants = {
        "percent": quote(payload, safe=""),
        "plus": quote_plus(payload, safe=""),
        "partial": partial,
        "double": quote(quote(payload, safe=""), safe=""),
        "double-partial": quote(partial, safe="".join(c for c in MAY_STAY if c not in "%")),
    }
    variants = {k: _hex_case(v, rnd) for k, v in variants.items()}
    for name in ("percent", "plus", "partial"):  # the oracle: one layer of decoding is the payload
        assert unquote_plus(variants[name]) == payload, (name, variants[name])
    assert unquote_plus(unquote_plus(variants["double"])) == payload
    return variants


def _hex_case(text: str, rnd: random.Random) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "%":
            digits = text[i + 1:i + 3]
            out.append("%" + (digits.upper() if rnd.random() < 0.5 else digits.lower()))
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def access_line(query_value: str) -> str:
    return (f'171.244.5.9 - - [08/Jun/2020:08:04:43 +0000] "GET /tin-tuc.php?id={query_value}&page=2 HTTP/1.1" '
            '200 512 "-" "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"')


def event(line: str) -> dict[str, Any]:
    result = normalize(PIPELINES["nginx-access"], line)
    assert isinstance(result, Event), result
    return result.doc


@pytest.fixture(scope="module")
def rules() -> list[CompiledRule]:
    ruleset = load_rules([WEB])
    assert not ruleset.problems, ruleset.problems
    return [r for r in ruleset.rules if r.kind == "single"]


@pytest.fixture(scope="module")
def index(es) -> Iterator[str]:  # type: ignore[no-untyped-def]
    indices = Indices(f"t{uuid.uuid4().hex[:10]}")
    install_templates(es, indices)
    name = indices.events("web", __import__("datetime").datetime(2020, 6, 1))
    es.indices.create(index=name)
    yield name
    drop_prefix(es, indices.prefix)


def fired_on_node(es, index: str, rules: list[CompiledRule], docs: dict[str, dict[str, Any]]  # type: ignore[no-untyped-def]
                  ) -> dict[str, set[str]]:
    batch = uuid.uuid4().hex[:8]
    ok, errors = helpers.bulk(es, ({"_index": index, "_id": f"{batch}-{i}", "_source": {**d, "tags": [batch]}}
                                   for i, d in docs.items()), raise_on_error=False, refresh="wait_for")
    assert not errors, errors[:3]
    searches: list[dict[str, Any]] = []
    for rule in rules:
        searches += [{"index": index}, {"query": {"bool": {"filter": [{"term": {"tags": batch}}, rule.query]}},
                                        "size": 100, "_source": False}]
    fired: dict[str, set[str]] = {i: set() for i in docs}
    for rule, response in zip(rules, es.msearch(searches=searches)["responses"]):
        assert "error" not in response, (rule.title, response)
        for hit in response["hits"]["hits"]:
            fired[hit["_id"].split("-", 1)[1]].add(rule.title)
    return fired


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(PAYLOADS)), st.data(), st.integers(0, 2 ** 32))
def test_encoded_payloads_fire_like_the_plain_one(es, index: str, rules: list[CompiledRule], kind: str,  # type: ignore[no-untyped-def]
                                                  data: st.DataObject, seed: int) -> None:
    payload = data.draw(st.sampled_from(PAYLOADS[kind]))
    rnd = random.Random(seed)
    docs = {"plain": event(access_line(quote(payload, safe=MAY_STAY)))}
    docs |= {name: event(access_line(text)) for name, text in encodings(payload, rnd).items()}
    assert all(d["url"]["query"] == f"id={payload}&page=2" for d in docs.values()), \
        {n: d["url"]["query"] for n, d in docs.items()}
    in_process = {name: {r.title for r in rules if matches(r.query, doc)} for name, doc in docs.items()}
    on_node = fired_on_node(es, index, rules, docs)
    assert on_node == in_process, (payload, on_node, in_process)
    assert all(any(t.startswith(kind) for t in titles) for titles in in_process.values()), (payload, in_process)
    assert len({frozenset(t) for t in in_process.values()}) == 1, (payload, in_process)


def test_ordinary_requests_fire_no_attack_rule(es, index: str, rules: list[CompiledRule]) -> None:  # type: ignore[no-untyped-def]
    queries = ["q=union+members+selection", "q=rock+%26+roll", "ten=O%27Reilly+Media", "file=bao-cao..quy-3.pdf",
               "q=select+a+course+or+two", "tim=nguy%E1%BB%85n+v%C4%83n+a", "sort=price%3Basc", "q=1+%3D+1"]
    docs = {str(n): event(access_line(q)) for n, q in enumerate(queries)}
    attacks = {r.title for r in rules if r.title.startswith((SQLI, XSS, TRAVERSAL, "OS command", "File inclusion"))}
    in_process = {name: {r.title for r in rules if matches(r.query, doc)} & attacks for name, doc in docs.items()}
    on_node = {name: titles & attacks for name, titles in fired_on_node(es, index, rules, docs).items()}
    assert on_node == in_process == {name: set() for name in docs}, in_process
