"""An _msearch answer: a search refused for its query fails alone; one the cluster could not run
fails the scan (StoreUnavailable, exit 5), never "every rule broken" (exit 4). The item shapes are
the node's own (Elasticsearch 9.5: a 400 for a bad query, a 503 when a node holding shards is gone)."""

from __future__ import annotations

from typing import Any

import pytest

from secmon.errors import StoreUnavailable
from secmon.store.search import Refused, answers

OK: dict[str, Any] = {"hits": {"hits": []}, "status": 200}
BAD_QUERY = {"status": 400, "error": {"type": "search_phase_execution_exception", "root_cause": [
    {"type": "query_shard_exception", "reason": "failed to create query: For input string: \"x\""}]}}
NODE_GONE = {"status": 503, "error": {"type": "search_phase_execution_exception", "root_cause": [
    {"type": "no_shard_available_action_exception", "reason": "[node-2][127.0.0.1:9302] closed"}]}}
SERVER = {"status": 500, "error": {"type": "node_disconnected_exception", "reason": "[node-2] disconnected"}}


def test_a_refused_query_fails_alone() -> None:
    got = answers("e-*", [OK, BAD_QUERY, OK])
    assert got[0] is OK and got[2] is OK
    assert isinstance(got[1], Refused) and "query_shard_exception" in got[1].reason


@pytest.mark.parametrize("items", [[OK, NODE_GONE], [NODE_GONE], [SERVER, SERVER], [BAD_QUERY, NODE_GONE]])
def test_a_search_the_cluster_could_not_run_fails_the_whole_request(items: list[dict[str, Any]]) -> None:
    with pytest.raises(StoreUnavailable) as raised:
        answers("e-*", items)
    assert f"{sum('error' in i for i in items)} of {len(items)} searches failed" in str(raised.value)


def test_one_server_error_among_answers_is_that_rules_alone() -> None:
    """A 500 for one search while the others answer: that search's own problem (a query the node
    chokes on), so the other rules keep their results."""
    got = answers("e-*", [OK, SERVER])
    assert got[0] is OK and isinstance(got[1], Refused)
