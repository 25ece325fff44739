"""Look into the outbox and re-queue what was given up: `secmon alerts outbox | retry`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from elasticsearch import ConflictError, Elasticsearch, NotFoundError

from secmon.alert.outbox import from_hit, pages
from secmon.model import Delivery
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.types import AGENCY_FIELD, iso


@dataclass(frozen=True)
class OutboxPage:
    deliveries: tuple[Delivery, ...]  # newest first
    total: int  # how many match: more exist when it is larger than len(deliveries)


@dataclass(frozen=True)
class RetryReport:
    requeued: tuple[str, ...]
    not_failed: tuple[tuple[str, str], ...] = ()  # (id, its status): nothing to retry
    missing: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # changed by someone else while we re-queued it: run retry again


def list_outbox(es: Elasticsearch, indices: Indices, *, status: str | None = None, agency: str | None = None,
                limit: int = 50) -> OutboxPage:
    filters: list[dict[str, Any]] = []
    if status:
        filters.append({"term": {"secmon.status": status}})
    if agency:
        filters.append({"term": {AGENCY_FIELD: agency}})
    with reporting(es, "read the outbox"):
        response = es.search(index=indices.alerts, query={"bool": {"filter": filters}}, size=limit,
                             sort=[{"secmon.created": "desc"}, {"secmon.id": "asc"}], track_total_hits=True,
                             ignore_unavailable=True)
    hits = response["hits"]["hits"]
    return OutboxPage(tuple(from_hit(h) for h in hits), int(response["hits"]["total"]["value"]))


def _requeue(es: Elasticsearch, indices: Indices, hit: dict[str, Any], now: datetime, user: str) -> bool:
    """failed -> pending, attempts reset, due now; max_age counts again from now. False: it changed meanwhile."""
    fields = {"status": "pending", "attempts": 0, "next_attempt": iso(now), "queued": iso(now), "updated": iso(now),
              "retried_at": iso(now), "retried_by": user, "claimed_by": None, "claim_deadline": None}
    with reporting(es, "re-queue a failed alert"):
        try:
            es.update(index=indices.alerts, id=hit["_id"], doc={"secmon": fields}, if_seq_no=hit["_seq_no"],
                      if_primary_term=hit["_primary_term"])
        except (ConflictError, NotFoundError):
            return False
    return True


def requeue_failed(es: Elasticsearch, indices: Indices, now: datetime, user: str, ids: tuple[str, ...] = ()
                   ) -> RetryReport:
    """Re-queue the named failed documents, or every failed one when `ids` is empty."""
    requeued: list[str] = []
    changed: list[str] = []
    not_failed: list[tuple[str, str]] = []
    missing: list[str] = []
    if ids:
        with reporting(es, "read the outbox"):
            if not es.indices.exists(index=indices.alerts):
                return RetryReport((), missing=tuple(ids))
            docs = es.mget(index=indices.alerts, ids=list(ids))["docs"]
        candidates = []
        for doc in docs:
            if not doc.get("found"):
                missing.append(doc["_id"])
            elif doc["_source"]["secmon"]["status"] != "failed":
                not_failed.append((doc["_id"], doc["_source"]["secmon"]["status"]))
            else:
                candidates.append(doc)
    else:
        candidates = [hit for page in pages(es, indices.alerts, {"term": {"secmon.status": "failed"}},
                                            "read failed alerts") for hit in page]
    for hit in candidates:
        (requeued if _requeue(es, indices, hit, now, user) else changed).append(hit["_id"])
    if requeued:
        with reporting(es, "re-queue failed alerts"):
            es.indices.refresh(index=indices.alerts)
    return RetryReport(tuple(requeued), tuple(not_failed), tuple(missing), tuple(changed))
