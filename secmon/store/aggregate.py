"""Execute paged composite aggregations: one page in memory at a time, whatever the window."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from elasticsearch import Elasticsearch

from secmon.store.client import reporting


def composite_buckets(es: Elasticsearch, index: str, query: Mapping[str, Any],
                      aggs_for: Callable[[Mapping[str, Any] | None], dict[str, Any]], name: str = "windows"
                      ) -> Iterator[dict[str, Any]]:
    """Every bucket of the composite aggregation `name` that `aggs_for(after_key)` composes, page by page."""
    after: Mapping[str, Any] | None = None
    while True:
        with reporting(es, f"aggregate {index}"):
            response = es.search(index=index, query=dict(query), size=0, aggs=aggs_for(after),
                                 ignore_unavailable=True, allow_no_indices=True, track_total_hits=False)
        agg = (response.get("aggregations") or {}).get(name)
        if not agg or not agg["buckets"]:
            return
        yield from agg["buckets"]
        after = agg.get("after_key")
        if not after:
            return
