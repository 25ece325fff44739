"""Small read-only summaries of secmon's own indices: counts by a field, the latest document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secmon.store.client import reporting

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


def count_by(es: Elasticsearch, index: str, field: str, size: int = 20) -> dict[str, int]:
    """{value: documents} for a keyword field; {} when the index does not exist yet."""
    with reporting(es, f"count {index} by {field}"):
        response = es.search(index=index, size=0, ignore_unavailable=True, allow_no_indices=True,
                             aggs={"by": {"terms": {"field": field, "size": size}}})
    buckets = response.get("aggregations", {}).get("by", {}).get("buckets", [])
    return {str(b["key"]): int(b["doc_count"]) for b in buckets}


def latest(es: Elasticsearch, index: str, query: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The newest document by @timestamp (its source, with `_id`), or None."""
    with reporting(es, f"read the latest document of {index}"):
        response = es.search(index=index, size=1, ignore_unavailable=True, allow_no_indices=True,
                             query=query or {"match_all": {}}, sort=[{"@timestamp": "desc"}])
    hits = response["hits"]["hits"]
    return {**hits[0]["_source"], "_id": hits[0]["_id"]} if hits else None
