"""Windows rules naming our own fields (`process.executable`, `source.ip`, `winlog.channel`, ...) on the
real node: the same rules and real events as tests/unit/test_sigma_windows_ecs.py, indexed with secmon's
events template; the node returns exactly what the in-process matcher says and the unit tests expect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import helpers

from secmon.detect.inprocess.match import matches
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from tests.conftest import scratch_prefix
from tests.unit.test_sigma_windows_ecs import CASES, documents, rule

pytestmark = [pytest.mark.integration, pytest.mark.dataset]


@pytest.fixture(scope="module")
def index(es) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with scratch_prefix(es) as prefix:
        install_templates(es, Indices(prefix))
        name = f"{prefix}-events-ecs-2026.01"
        docs = {ident: {**doc, "organization": {"id": "ecs"}} for ident, doc in documents().items()}
        ok, errors = helpers.bulk(es, ({"_index": name, "_id": i, "_source": d} for i, d in docs.items()),
                                  raise_on_error=False, refresh="wait_for")
        assert not errors, errors[:3]
        yield name


@pytest.mark.parametrize("logsource,selection,expected", CASES, ids=[c[1] for c in CASES])
def test_node_and_in_process_agree(es, index: str, tmp_path: Path, logsource: str, selection: str,  # type: ignore[no-untyped-def]
                                   expected: set[str]) -> None:
    compiled = rule(tmp_path, logsource, selection)
    response = es.search(index=index, query=compiled.query, size=100, _source=False)
    on_node = {hit["_id"] for hit in response["hits"]["hits"]}
    local = {ident for ident, doc in documents().items() if matches(compiled.query, doc)}
    assert on_node == local == expected, compiled.query
