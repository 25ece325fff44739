"""Values longer than ignore_above (issue 10, item 5) are detected on the node and in-process.

A 20 KB PowerShell script block (a normal 4104 chunk) naming Invoke-Mimikatz, and a `wevtutil cl`
command line padded to 9,000 characters: neither is indexed in its keyword field, so the rule
query alone misses them; the rule's `long_query` (`_ignored`) fetches them and findings.py checks
them exactly on their `_source` values. The in-process scan reads the values whole. Long values
that must NOT match (the same padding without the attack) stay quiet on both paths.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from elasticsearch import helpers

from secmon.detect.inprocess.match import matches
from secmon.detect.inprocess.router import scan_documents
from secmon.service.scan import rule_findings
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from secmon.types import AGENCY_FIELD
from tests.conftest import drop_prefix
from tests.unit.test_sigma_long_values import AT, CASES, rule_and_example

pytestmark = [pytest.mark.integration]
@pytest.fixture(scope="module")
def indices(es) -> Iterator[Indices]:  # type: ignore[no-untyped-def]
    indices = Indices(f"t{uuid.uuid4().hex[:10]}")
    install_templates(es, indices)
    yield indices
    drop_prefix(es, indices.prefix)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_long_values_on_the_node_and_in_process(es, indices: Indices, case: int) -> None:  # type: ignore[no-untyped-def]
    name, field, value, detected = CASES[case]
    rule, example = rule_and_example(name)
    agency = f"a{uuid.uuid4().hex[:6]}"
    doc = {**example, field: value, "@timestamp": AT.isoformat(), AGENCY_FIELD: agency}
    assert len(value) > 8191
    assert not matches(rule.query, doc), "the rule query alone cannot see an unindexed value"
    ok, errors = helpers.bulk(es, [{"_index": indices.events(agency, AT), "_id": "long", "_source": doc}],
                              raise_on_error=False, refresh="wait_for")
    assert not errors, errors
    stored = es.search(index=indices.events_pattern(agency), query={"term": {"_ignored": field}})["hits"]["hits"]
    assert len(stored) == 1, "Elasticsearch names the long field in _ignored"

    on_node = [f for f in rule_findings(es, indices, rule, AT - timedelta(hours=1), AT + timedelta(hours=1))
               if f.agency == agency]  # the other cases' events share the indices
    in_process = scan_documents([rule], [("long", doc)])
    assert (len(on_node), len(in_process)) == ((1, 1) if detected else (0, 0)), (on_node, in_process)
    if detected:
        assert on_node[0].sample_event_ids == in_process[0].sample_event_ids == ("long",)
        assert on_node[0].group == in_process[0].group
