"""Windowed searches the detectors need, each paged and bounded.

Rules run as: one composite aggregation to find the groups with enough
matches, then one time-ordered pass (point in time + search_after) over the
matches of those groups only. Two requests per rule for a quiet window,
whatever the number of groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from elasticsearch import Elasticsearch

from secmon.store.client import reporting

PAGE = 5000
# A shard that fails (its node left the cluster, a point in time lost with it) must fail the search,
# not shorten it: a rule that sees part of a window raises different incidents than the whole.
WHOLE = {"allow_partial_search_results": False}


def group_counts(es: Elasticsearch, index: str, query: dict[str, Any], fields: tuple[str, ...]
                 ) -> Iterator[tuple[dict[str, Any], int]]:
    """(group key, match count) for every group, paging a composite aggregation."""
    sources = [{field: {"terms": {"field": field}}} for field in fields]
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {"size": 1000, "sources": sources}
        if after:
            composite["after"] = after
        with reporting(es, f"aggregate matches in {index}"):
            response = es.search(index=index, query=query, size=0, aggs={"groups": {"composite": composite}},
                                 ignore_unavailable=True, allow_no_indices=True,
                                 allow_partial_search_results=False)
        agg = response.get("aggregations", {}).get("groups")
        if not agg or not agg["buckets"]:
            return
        for bucket in agg["buckets"]:
            yield bucket["key"], bucket["doc_count"]
        after = agg.get("after_key")
        if not after:
            return


def sorted_matches(es: Elasticsearch, index: str, query: dict[str, Any], fields: tuple[str, ...]
                   ) -> Iterator[dict[str, Any]]:
    """Every matching hit, oldest first, with `fields` as doc values (no _source)."""
    with reporting(es, f"open a point in time on {index}"):
        pit = es.open_point_in_time(index=index, keep_alive="2m", ignore_unavailable=True,
                                     allow_partial_search_results=False)["id"]
    try:
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "query": query, "size": PAGE, "pit": {"id": pit, "keep_alive": "2m"},
                "sort": [{"@timestamp": "asc"}, {"_shard_doc": "asc"}],
                "_source": False, "docvalue_fields": ["@timestamp", *fields], "track_total_hits": False, **WHOLE,
            }
            if after:
                body["search_after"] = after
            with reporting(es, f"search {index}"):
                response = es.search(**body)
            hits = response["hits"]["hits"]
            yield from hits
            if len(hits) < PAGE:
                return
            after = hits[-1]["sort"]
            pit = response.get("pit_id", pit)
    finally:
        with reporting(es, "close a point in time"):
            es.close_point_in_time(id=pit)


def every_source(es: Elasticsearch, index: str, query: dict[str, Any], source: list[str], limit: int
                 ) -> tuple[list[dict[str, Any]], int]:
    """The `_source` (these fields) of every match, in index order, at most `limit`; and how many matched.

    Pages through a point in time, so a report over a month of incidents sees one
    consistent state however long it takes. A missing index is no matches.
    """
    with reporting(es, f"open a point in time on {index}"):
        pit = es.open_point_in_time(index=index, keep_alive="2m", ignore_unavailable=True)["id"]
    found: list[dict[str, Any]] = []
    total = 0
    try:
        after: list[Any] | None = None
        while len(found) < limit:
            body: dict[str, Any] = {"query": query, "size": min(PAGE, limit - len(found)), "_source": source,
                                    "pit": {"id": pit, "keep_alive": "2m"}, "sort": [{"_shard_doc": "asc"}],
                                    "track_total_hits": after is None}
            if after:
                body["search_after"] = after
            with reporting(es, f"search {index}"):
                response = es.search(**body)
            if after is None:
                total = response["hits"]["total"]["value"]
            hits = response["hits"]["hits"]
            found += [hit["_source"] for hit in hits]
            if len(hits) < body["size"]:
                break
            after = hits[-1]["sort"]
            pit = response.get("pit_id", pit)
    finally:
        with reporting(es, "close a point in time"):
            es.close_point_in_time(id=pit)
    return found, total
