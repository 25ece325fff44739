"""Execute paged composite aggregations: one page in memory at a time, whatever the window."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from secmon.errors import StoreUnavailable
from secmon.store.client import reporting

MIN_PAGE = 10


def composite_buckets(es: Elasticsearch, index: str, query: Mapping[str, Any],
                      aggs_for: Callable[[Mapping[str, Any] | None, int], dict[str, Any]], page: int = 1000,
                      name: str = "windows") -> Iterator[dict[str, Any]]:
    """Every bucket of the composite aggregation `name` that `aggs_for(after_key, page size)` composes.

    A page whose sub-aggregations would pass the node's `search.max_buckets` is asked again at half
    the size (windows with thousands of distinct values are rare, but log content decides)."""
    after: Mapping[str, Any] | None = None
    while True:
        try:
            with reporting(es, f"aggregate {index}"):
                response = es.search(index=index, query=dict(query), size=0, aggs=aggs_for(after, page),
                                     ignore_unavailable=True, allow_no_indices=True, track_total_hits=False)
        except StoreUnavailable as exc:  # only the bucket limit is retried; everything else goes up unchanged
            cause = exc.__cause__
            if isinstance(cause, ApiError) and "too_many_buckets" in str(cause.body) and page > MIN_PAGE:
                page //= 2
                continue
            raise
        agg = (response.get("aggregations") or {}).get(name)
        if not agg or not agg["buckets"]:
            return
        yield from agg["buckets"]
        after = agg.get("after_key")
        if not after:
            return
