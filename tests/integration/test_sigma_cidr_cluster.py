"""`|cidr` on the real node: generated address texts in a keyword and an ip field, queried with the
compiled queries; the node, the in-process matcher and Python's `ipaddress` must agree.

The texts and the oracle are those of tests/unit/test_sigma_cidr.py (every spelling logs use,
IPv4-mapped forms, near-miss garbage). Garbage goes into the keyword field only: the ip type
refuses what is not an address.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import helpers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmon.detect.inprocess.match import matches
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from tests.conftest import scratch_prefix
from tests.unit.test_sigma_cidr import IP, KEYWORD, Network, cidr_query, networks, oracle, sample_texts

pytestmark = [pytest.mark.integration]
ANY = ipaddress.ip_network("::/0")


@pytest.fixture(scope="module")
def index(es) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with scratch_prefix(es) as prefix:
        install_templates(es, Indices(prefix))
        name = f"{prefix}-events-cidr-2026.01"
        es.indices.create(index=name)
        yield name


def check(es, index: str, cases: list[tuple[Network, list[str]]]) -> None:  # type: ignore[no-untyped-def]
    """Index every (network, texts) case under its own tag, query both fields, compare."""
    batch = uuid.uuid4().hex[:8]
    docs: dict[str, dict[str, Any]] = {}
    for n, (_, texts) in enumerate(cases):
        for m, text in enumerate(texts):
            tag = f"{batch}-{n}"
            docs[f"{tag}-k{m}"] = {KEYWORD: text, "tags": [tag]}
            if oracle(text, ANY):
                docs[f"{tag}-i{m}"] = {IP: text, "tags": [tag]}
    ok, errors = helpers.bulk(es, ({"_index": index, "_id": i, "_source": d} for i, d in docs.items()),
                              raise_on_error=False, refresh="wait_for")
    assert not errors, errors[:3]
    # The tag must be a mapped field (the events template is `dynamic: false`): an unmapped tag
    # matches nothing on the node, and every case then looks like a node-side miss.
    tagged = es.count(index=index, query={"prefix": {"tags": f"{batch}-"}})["count"]
    assert tagged == len(docs), f"{tagged} of {len(docs)} documents found by their tag"
    searches: list[dict[str, Any]] = []
    for n, (network, _) in enumerate(cases):
        for field in (KEYWORD, IP):
            query = {"bool": {"filter": [{"term": {"tags": f"{batch}-{n}"}}, cidr_query(field, network)]}}
            searches += [{"index": index}, {"query": query, "size": 1000, "_source": False}]
    responses = es.msearch(searches=searches)["responses"]
    wrong = []
    for n, (network, _texts) in enumerate(cases):
        for k, field in enumerate((KEYWORD, IP)):
            response = responses[2 * n + k]
            assert "error" not in response, response
            on_node = {hit["_id"] for hit in response["hits"]["hits"]}
            kind = "k" if field == KEYWORD else "i"
            mine = {i: d for i, d in docs.items() if i.startswith(f"{batch}-{n}-{kind}")}
            query = cidr_query(field, network)
            local = {i for i, d in mine.items() if matches(query, d)}
            expected = {i for i, d in mine.items() if oracle(d[field], network)}
            if not on_node == local == expected:
                wrong.append((str(network), field, sorted(docs[i][field] for i in on_node ^ expected)[:3],
                              sorted(docs[i][field] for i in local ^ expected)[:3]))
    assert not wrong, wrong[:5]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(networks(), st.integers(0, 2 ** 32)), min_size=1, max_size=6))
def test_node_in_process_and_ipaddress_agree(es, index: str, drawn: list[tuple[Network, int]]) -> None:  # type: ignore[no-untyped-def]
    check(es, index, [(network, sample_texts(network, seed)) for network, seed in drawn])


def test_every_prefix_length_on_the_node(es, index: str) -> None:  # type: ignore[no-untyped-def]
    base4, base6 = 0xC0A8_0A0B, 0xFE80_0000_0000_0000_1234_5678_9ABC_DEF0
    cases: list[tuple[Network, list[str]]] = []
    for p in range(33):
        network = ipaddress.IPv4Network((base4 >> (32 - p) << (32 - p) if p else 0, p))
        cases.append((network, sample_texts(network, seed=p, count=8)))
    for p in range(129):
        network6 = ipaddress.IPv6Network((base6 >> (128 - p) << (128 - p) if p else 0, p))
        cases.append((network6, sample_texts(network6, seed=p, count=8)))
    check(es, index, cases)


def test_ipv4_mapped_spellings_are_ipv4_on_both_paths(es, index: str) -> None:  # type: ignore[no-untyped-def]
    """An IPv4-mapped IPv6 address is the IPv4 address, in every spelling (padded groups, either
    case, dotted or hex tail): Python's `ipaddress` reads them all as `::ffff:a.b.c.d`
    (`ipv4_mapped`), and the node's ip type stores them as that IPv4 address. The `::` before
    `ffff` standing for five zero groups is IPv4-compatible, not mapped, and stays outside."""
    mapped = ["0000:000:000::00:ffff:9b8b:71a1", "0000:000:000::00:fFFf:9b8B:71a1", "00::00:FfFf:f2a9:4e28",
              "0:0:0:0:0:ffff:155.139.113.161", "::FFFF:155.139.113.161", "0000:0000:0000:0000:0000:ffff:9b8b:71a1"]
    assert all(ipaddress.ip_address(t).ipv4_mapped for t in mapped)  # type: ignore[union-attr]
    not_mapped = ["::155.139.113.161", "::9b8b:71a1", "0:0:0:0:1:ffff:9b8b:71a1", "ffff::9b8b:71a1"]
    texts = mapped + not_mapped
    check(es, index, [(ipaddress.ip_network(n), texts) for n in
                      ("0.0.0.0/0", "155.139.0.0/16", "155.139.113.161/32", "::ffff:0:0/96", "::/0", "::/96")])
