"""Windows rules naming our own fields (`process.executable`, `source.ip`, `winlog.channel`, ...) on the
real node: the same rules and real events as tests/unit/test_sigma_windows_ecs.py, indexed with secmon's
events template; the node returns exactly what the in-process matcher says and the unit tests expect."""

from __future__ import annotations

from pathlib import Path

import pytest

from secmon.detect.inprocess.match import matches
from tests.unit.test_sigma_windows_ecs import CASES, documents, rule

pytestmark = [pytest.mark.integration, pytest.mark.dataset]


@pytest.fixture
def index(windows_indices: dict[str, str]) -> str:
    """The unit tests' documents on the node (tests/integration/conftest.py indexes them with the audit module's)."""
    return windows_indices["ecs"]


@pytest.mark.parametrize("logsource,selection,expected", CASES, ids=[c[1] for c in CASES])
def test_node_and_in_process_agree(es, index: str, tmp_path: Path, logsource: str, selection: str,  # type: ignore[no-untyped-def]
                                   expected: set[str]) -> None:
    compiled = rule(tmp_path, logsource, selection)
    response = es.search(index=index, query=compiled.query, size=100, _source=False)
    on_node = {hit["_id"] for hit in response["hits"]["hits"]}
    local = {ident for ident, doc in documents().items() if matches(compiled.query, doc)}
    assert on_node == local == expected, compiled.query
