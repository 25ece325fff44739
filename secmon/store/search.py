"""Searches the detectors need, each paged and bounded; the queries come from `detect/`.

A scan runs its rules in a handful of requests (see detect/plan.py): one
`_msearch` of size-0 searches, one per rule (`aggregate_each`), then one
`_msearch` for the hits of the rules that matched (`matches_each`); a search whose hits
do not fit in one answer is paged with a point in time + search_after
(`sorted_matches`). The search of one rule can be refused (a query the node
rejects): that is the search's outcome (`Refused`), never the batch's.

`group_counts` and `sorted_matches` are also the per-rule path: a composite
aggregation and a time-ordered pass per rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from secmon.errors import RequestRefused, StoreUnavailable
from secmon.store.client import REFUSED_FOR_CONTENT, UNAVAILABLE, refusal, reporting

PAGE = 5000  # hits per page of a point in time
FETCH = 5000  # hits per search of a batch; a search that fills it is paged through a point in time
FETCHES_PER_MSEARCH = 10  # one answer holds at most 10 x FETCH hits (doc values only): tens of MB of heap
AGGREGATIONS_PER_MSEARCH = 100  # size-0 searches: small answers (at most ~500 buckets each)
# A refused search is an answer, not a partial one: a shard that cannot run a query fails the search.
# A shard that fails (its node left the cluster, a point in time lost with it) must fail the search,
# not shorten it: a rule that sees part of a window raises different incidents than the whole.
WHOLE = {"allow_partial_search_results": False}
_HEADER: dict[str, Any] = {"ignore_unavailable": True, "allow_no_indices": True, **WHOLE}


@dataclass
class RequestCount:
    """Requests sent to Elasticsearch by one run: what a scan costs the cluster."""

    sent: int = 0
    # Hits fetched with their `_id`: the costly part of a fetch (the id is a stored field, read
    # from the compressed blocks that hold the whole document; doc values are columns).
    with_ids: int = 0


@dataclass(frozen=True)
class Refused:
    """Elasticsearch refused this one search (most often its query): the others stand."""

    reason: str


def aggregate_each(es: Elasticsearch, index: str, bodies: Sequence[dict[str, Any]], count: RequestCount
                   ) -> list[dict[str, Any] | Refused]:
    """Size-0 searches, AGGREGATIONS_PER_MSEARCH per _msearch: the aggregations of each, or its refusal."""
    answers: list[dict[str, Any] | Refused] = []
    for at in range(0, len(bodies), AGGREGATIONS_PER_MSEARCH):
        answers += [answer if isinstance(answer, Refused) else dict(answer.get("aggregations", {}))
                    for answer in _msearch(es, index, bodies[at:at + AGGREGATIONS_PER_MSEARCH], count)]
    return answers


def every_hit_if_few(es: Elasticsearch, index: str, body: dict[str, Any], count: RequestCount
                     ) -> list[dict[str, Any]] | None:
    """Every hit of one search whose `size` is its bound, in one answer; None when more match
    (`track_total_hits` must be size + 1) or the node refuses the search: the caller then asks
    otherwise (the scan: rule by rule). A node that does not answer raises, as every search does."""
    count.sent += 1
    try:
        with reporting(es, f"search {index}"):
            response = es.search(index=index, **body, **_HEADER)
    except RequestRefused:
        return None
    total = response["hits"]["total"]
    hits: list[dict[str, Any]] = response["hits"]["hits"]
    return hits if total["value"] <= body["size"] and total["relation"] == "eq" else None


Search = tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]  # query, doc-value fields, long fields


def matches_each(es: Elasticsearch, index: str, searches: Sequence[Search], count: RequestCount, ids: bool = True
                 ) -> Iterator[list[dict[str, Any]] | Refused]:
    """Every hit of each (query, doc-value fields, long fields) search, in order: FETCHES_PER_MSEARCH
    searches per _msearch, and a search that fills FETCH hits done again page by page through a
    point in time. Long fields: see `sorted_matches`.

    Without `ids` the hits carry no `_id` (nor the whole values of long fields: `_ignored` says
    which hits would need them): the fetch reads doc values only, several times cheaper.

    A generator: the caller turns one search's hits into findings before the next request,
    so memory holds one _msearch answer, not every rule's hits."""
    for at in range(0, len(searches), FETCHES_PER_MSEARCH):
        chunk = searches[at:at + FETCHES_PER_MSEARCH]
        bodies = [{"query": query, "size": FETCH, "sort": [{"@timestamp": "asc"}], "_source": False,
                   "docvalue_fields": _docvalues(fields, long_fields), "track_total_hits": False,
                   **_STORED[ids]}
                  for query, fields, long_fields in chunk]
        for (query, fields, long_fields), answer in zip(chunk, _msearch(es, index, bodies, count)):
            if isinstance(answer, Refused):
                yield answer
                continue
            if len(answer["hits"]["hits"]) < FETCH:
                if ids:
                    count.with_ids += len(answer["hits"]["hits"])
                    with reporting(es, f"search {index}"):
                        _complete(es, answer["hits"]["hits"], fields, long_fields, count)
                yield answer["hits"]["hits"]
                continue
            with reporting(es, f"search {index} page by page"):
                try:
                    hits: list[dict[str, Any]] | Refused = list(_paged(es, index, query, fields, long_fields, count,
                                                                       ids))
                except ApiError as exc:
                    if exc.meta.status not in REFUSED_FOR_CONTENT:
                        raise  # the cluster, not the query: `reporting` makes it StoreUnavailable
                    hits = Refused(refusal(exc.meta.status, exc.body, exc.message))
            yield hits


def _msearch(es: Elasticsearch, index: str, bodies: Sequence[dict[str, Any]], count: RequestCount
             ) -> list[dict[str, Any] | Refused]:
    """One _msearch: each search's answer, or why the node refused that search."""
    lines: list[dict[str, Any]] = []
    for body in bodies:
        lines += [{"index": index, **_HEADER}, body]
    count.sent += 1
    with reporting(es, f"search {index} (_msearch)"):
        response = es.msearch(searches=lines)
    return answers(index, response["responses"])


def answers(index: str, items: list[dict[str, Any]]) -> list[dict[str, Any] | Refused]:
    """The answers of an _msearch's searches: each one's, or why the node refused that search.

    A search refused for its query fails alone (400); one the cluster could not run (a node gone,
    shards unassigned, overloaded) says nothing of its rule: the whole scan is unavailable (exit 5, and
    the next scan covers the window again), not a list of every rule as broken (exit 4)."""
    failed = [item for item in items if "error" in item]
    unavailable = [item for item in failed if item.get("status") in UNAVAILABLE]
    if failed and (unavailable or (len(failed) == len(items) and all(_server_side(item) for item in failed))):
        why = unavailable[0] if unavailable else failed[0]
        raise StoreUnavailable(f"Elasticsearch could not search {index} (_msearch, {len(failed)} of {len(items)} "
                               f"searches failed): {refusal(why.get('status'), why)}")
    return [Refused(refusal(item.get("status"), item)) if "error" in item else item for item in items]



def _server_side(item: dict[str, Any]) -> bool:
    status = item.get("status")
    return isinstance(status, int) and status >= 500
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


def sorted_matches(es: Elasticsearch, index: str, query: dict[str, Any], fields: tuple[str, ...],
                   long_fields: tuple[str, ...] = (), count: RequestCount | None = None) -> Iterator[dict[str, Any]]:
    """Every matching hit, oldest first, with `fields` as doc values (no _source).

    A keyword value longer than its ignore_above has no doc value; with `long_fields`, each hit
    also carries `_ignored` (the fields too long to index), and a hit that has some gets the
    whole values of `long_fields` and `fields` from `_source` (the detector checks it exactly).
    """
    with reporting(es, f"search {index} page by page"):
        yield from _paged(es, index, query, fields, long_fields, count or RequestCount())


def _paged(es: Elasticsearch, index: str, query: dict[str, Any], fields: tuple[str, ...],
           long_fields: tuple[str, ...], count: RequestCount, ids: bool = True) -> Iterator[dict[str, Any]]:
    count.sent += 1
    with reporting(es, f"open a point in time on {index}"):
        pit = es.open_point_in_time(index=index, keep_alive="2m", ignore_unavailable=True,
                                     allow_partial_search_results=False)["id"]
    try:
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "query": query, "size": PAGE, "pit": {"id": pit, "keep_alive": "2m"},
                "sort": [{"@timestamp": "asc"}, {"_shard_doc": "asc"}],
                "_source": False, "docvalue_fields": _docvalues(fields, long_fields), "track_total_hits": False,
                **WHOLE, **_STORED[ids],
            }
            if after:
                body["search_after"] = after
            count.sent += 1
            response = es.search(**body)
            hits = response["hits"]["hits"]
            if ids:
                count.with_ids += len(hits)
                _complete(es, hits, fields, long_fields, count)
            yield from hits
            if len(hits) < PAGE:
                return
            after = hits[-1]["sort"]
            pit = response.get("pit_id", pit)
    finally:
        count.sent += 1
        with reporting(es, "close a point in time"):
            es.close_point_in_time(id=pit)


_STORED: dict[bool, dict[str, Any]] = {True: {}, False: {"stored_fields": "_none_"}}  # `_none_`: not even the _id


def _docvalues(fields: tuple[str, ...], long_fields: tuple[str, ...]) -> list[str]:
    return ["@timestamp", *fields, *(["_ignored"] if long_fields else [])]


def _complete(es: Elasticsearch, hits: list[dict[str, Any]], fields: tuple[str, ...], long_fields: tuple[str, ...],
              count: RequestCount) -> None:
    """Hits with a value too long to index get the whole values of the fields their rule reads."""
    if not long_fields:
        return
    lacking = [h for h in hits if "_ignored" in h.get("fields", {})]
    if lacking:
        count.sent += len({h["_index"] for h in lacking})
        _add_long_values(es, lacking, (*fields, *long_fields))


def _add_long_values(es: Elasticsearch, hits: list[dict[str, Any]], fields: tuple[str, ...]) -> None:
    """Give these hits the whole values of `fields` (`_ignored` ones included, read from _source)."""
    by_index: dict[str, list[dict[str, Any]]] = {}
    for hit in hits:
        by_index.setdefault(hit["_index"], []).append(hit)
    wanted = sorted(set(fields))
    for index, group in by_index.items():
        with reporting(es, f"read long values in {index}"):
            body: dict[str, Any] = {"index": index, "query": {"ids": {"values": [h["_id"] for h in group]}},
                                    "size": len(group), "_source": False, "fields": wanted, **WHOLE}
            response = es.search(**body)
        found = {h["_id"]: {**h.get("fields", {}), **h.get("ignored_field_values", {})}
                 for h in response["hits"]["hits"]}
        for hit in group:
            hit["fields"] = {**hit.get("fields", {}), **found.get(hit["_id"], {})}


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
