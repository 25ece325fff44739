"""Documents of the state index (`{prefix}-state`) with optimistic concurrency; no policy.

Reads are real-time GETs (no refresh needed) and return the document's
sequence number and primary term; writes are create-only or conditional on
them, and a conflict is an answer (`None`), not an error: someone else wrote
first, and the caller decides what that means (`secmon/lease.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from elasticsearch import ConflictError, Elasticsearch, NotFoundError

from secmon.store.client import reporting
from secmon.store.indices import Indices


@dataclass(frozen=True)
class Stored:
    doc: dict[str, Any]
    seq_no: int
    primary_term: int


def read(es: Elasticsearch, indices: Indices, doc_id: str) -> Stored | None:
    with reporting(es, f"read the scheduler state ({doc_id})"):
        try:
            found = es.get(index=indices.state, id=doc_id)
        except NotFoundError:  # the document, or the whole index, does not exist yet
            return None
    return Stored(found["_source"], found["_seq_no"], found["_primary_term"])


def read_many(es: Elasticsearch, indices: Indices, doc_ids: Sequence[str]) -> dict[str, Stored]:
    with reporting(es, "read the scheduler state"):
        if not es.indices.exists(index=indices.state):
            return {}
        docs = es.mget(index=indices.state, ids=list(doc_ids))["docs"]
    return {d["_id"]: Stored(d["_source"], d["_seq_no"], d["_primary_term"]) for d in docs if d.get("found")}


def create(es: Elasticsearch, indices: Indices, doc_id: str, doc: dict[str, Any]) -> Stored | None:
    """Write `doc` only if no document has this id; None if one does."""
    with reporting(es, f"write the scheduler state ({doc_id})"):
        try:
            answer = es.create(index=indices.state, id=doc_id, document=doc)
        except ConflictError:
            return None
    return Stored(doc, answer["_seq_no"], answer["_primary_term"])


def replace(es: Elasticsearch, indices: Indices, doc_id: str, doc: dict[str, Any], read_as: Stored
            ) -> Stored | None:
    """Overwrite the document only if it is still the version `read_as`; None if it changed since."""
    with reporting(es, f"write the scheduler state ({doc_id})"):
        try:
            answer = es.index(index=indices.state, id=doc_id, document=doc, if_seq_no=read_as.seq_no,
                              if_primary_term=read_as.primary_term)
        except ConflictError:
            return None
    return Stored(doc, answer["_seq_no"], answer["_primary_term"])
