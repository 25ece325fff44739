"""Model and log-template documents in `{prefix}-models`: read, write (optimistically), list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from secmon.errors import StoreUnavailable
from secmon.store.client import reporting
from secmon.store.indices import Indices

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

Version = tuple[int, int]


def put(es: Elasticsearch, indices: Indices, ident: str, doc: Mapping[str, Any]) -> None:
    with reporting(es, f"store model {ident}"):
        es.index(index=indices.models, id=ident, document=dict(doc), refresh=True)


def get(es: Elasticsearch, indices: Indices, ident: str) -> tuple[dict[str, Any], Version] | None:
    with reporting(es, f"read model {ident}"):
        response = es.options(ignore_status=404).get(index=indices.models, id=ident)
    if not response.get("found"):
        return None
    return response["_source"], (response["_seq_no"], response["_primary_term"])


def get_many(es: Elasticsearch, indices: Indices, idents: list[str]) -> dict[str, dict[str, Any]]:
    if not idents:
        return {}
    # One request: an _mget of a missing index answers each id with index_not_found (no model yet),
    # so no HEAD of the index first (the scan reads the models every tick).
    with reporting(es, "read models"):
        # filter_path: a missing index answers every id with a whole error object (kilobytes a scan)
        response = es.mget(index=indices.models, ids=idents, filter_path=["docs._id", "docs.found", "docs._source",
                                                                           "docs.error.type", "docs.error.reason"])
    failed = [d["error"] for d in response["docs"]
              if d.get("error") and d["error"].get("type") != "index_not_found_exception"]
    if failed:
        raise StoreUnavailable(f"Elasticsearch could not read {len(failed)} models: {failed[0].get('type')}: "
                               f"{failed[0].get('reason')}")
    return {d["_id"]: d["_source"] for d in response["docs"] if d.get("found")}


def search(es: Elasticsearch, indices: Indices, kind: str = "model", limit: int = 1000) -> list[dict[str, Any]]:
    """Metadata of the stored models (payloads left out), newest first."""
    with reporting(es, "list models"):
        response = es.search(index=indices.models, query={"term": {"kind": kind}}, size=limit,
                             source_excludes=["payload", "state"], sort=[{"@timestamp": "desc"}],
                             ignore_unavailable=True, allow_no_indices=True)
    return [{"id": h["_id"], **h["_source"]} for h in response["hits"]["hits"]]


def put_if(es: Elasticsearch, indices: Indices, ident: str, doc: Mapping[str, Any], version: Version | None) -> bool:
    """Write only if nobody wrote since `version` (None: only if absent). False on a conflict."""
    with reporting(es, f"store {ident}"):
        if version is None:
            response = es.options(ignore_status=409).create(index=indices.models, id=ident, document=dict(doc),
                                                             refresh=True)
        else:
            response = es.options(ignore_status=409).index(index=indices.models, id=ident, document=dict(doc),
                                                           if_seq_no=version[0], if_primary_term=version[1],
                                                           refresh=True)
    if response.meta.status == 409:
        return False
    if response.meta.status >= 300:
        raise StoreUnavailable(f"Elasticsearch refused to store {ident}: {response.meta.status}")
    return True
