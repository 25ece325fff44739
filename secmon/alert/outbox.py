"""The outbox: every email is a document before it is sent.

One document per (notification, recipient), id = stable_id("alert", incident, notification key,
recipient), created once: a re-run, a second scan or a crash-and-retry meets the same id, and a
409 on create means "already queued", which is success. The email is rendered when queued
(subject, text, HTML, Message-ID), so a resend is the same email; only Date and the MIME boundary differ.
States: pending -> sending (claimed) -> sent | pending (retry later) | failed (older than max_age).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from secmon.alert.message import message_id
from secmon.alert.render import Rendered, RenderError, Templates, alert_context, summary
from secmon.alert.route import Recipient, recipients
from secmon.config import Settings
from secmon.errors import ConfigError, StoreUnavailable
from secmon.model import Delivery, Notification, stable_id
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.types import DeliveryKind, iso, parse_iso

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

BULK_DOCS = 200  # rendered documents carry a few kB of HTML each


@dataclass(frozen=True)
class EnqueueReport:
    queued: int  # new documents
    already: int  # documents an earlier run (or a concurrent scan) had queued: the same ids
    unrouted: tuple[str, ...] = ()  # notifications of an agency not in the config, and why
    below_floor: int = 0  # notifications no recipient takes at their severity (agency and route floors)
    render_failed: int = 0  # queued as `failed` with the reason: visible in the outbox, retried by hand


def new_doc(*, kind: DeliveryKind, delivery_id: str, agencies: dict[str, str], recipient: Recipient,
            rendered: Rendered, sender: str, now: datetime, incident_ids: Iterable[str] = (),
            extra: dict[str, Any] | None = None, status: str = "pending", last_error: str = "") -> dict[str, Any]:
    """The document of one email to one recipient. `agencies`: id -> name of the agencies it is about."""
    return {
        "@timestamp": iso(now),
        "organization": {"id": list(agencies), "name": list(agencies.values())},
        "secmon": {
            "id": delivery_id, "kind": kind, "recipient": recipient.address, "route": recipient.route,
            "language": recipient.language, "timezone": recipient.timezone,
            "subject": rendered.subject, "text": rendered.text, "html": rendered.html,
            "message_id": message_id(delivery_id, sender), "incident_id": list(incident_ids),
            "status": status, "attempts": 0, "created": iso(now), "queued": iso(now), "updated": iso(now),
            "next_attempt": iso(now), "last_error": last_error, **(extra or {}),
        },
    }


def from_hit(hit: dict[str, Any]) -> Delivery:
    s = hit["_source"]["secmon"]
    agencies = hit["_source"].get("organization", {}).get("id", [])
    return Delivery(
        id=hit["_id"], kind=s["kind"], agencies=tuple(agencies if isinstance(agencies, list) else [agencies]),
        recipient=s["recipient"], language=s["language"], timezone=s["timezone"], subject=s["subject"],
        text=s["text"], html=s["html"], message_id=s["message_id"], incident_ids=tuple(s.get("incident_id", ())),
        status=s["status"], attempts=int(s.get("attempts", 0)), queued=parse_iso(s.get("queued") or s["created"]),
        next_attempt=parse_iso(s["next_attempt"]) if s.get("next_attempt") else None,
        sent_at=parse_iso(s["sent_at"]) if s.get("sent_at") else None,
        last_error=s.get("last_error", ""), smtp_code=s.get("smtp_code"), digest_id=s.get("digest_id", ""))


def create_docs(es: Elasticsearch, index: str, docs: list[tuple[str, dict[str, Any]]], doing: str,
                refresh: bool = True) -> tuple[int, int]:
    """Create-only bulk: (created, already there). Any other item error raises StoreUnavailable.

    `refresh`: wait until a search sees them (a delivery follows); without it, a get by id still does.
    """
    created = already = 0
    for start in range(0, len(docs), BULK_DOCS):
        chunk = docs[start:start + BULK_DOCS]
        operations: list[dict[str, Any]] = []
        for doc_id, doc in chunk:
            operations += [{"create": {"_index": index, "_id": doc_id}}, doc]
        last = start + BULK_DOCS >= len(docs)
        with reporting(es, doing):
            # One wait_for on the last chunk makes every chunk searchable for the delivery that follows.
            response = es.bulk(operations=operations, refresh="wait_for" if refresh and last else False)
        errors = []
        for item in response["items"]:
            result = item["create"]
            if result.get("status") == 201:
                created += 1
            elif result.get("status") == 409:  # the same id: queued before, exactly what dedup means
                already += 1
            else:
                errors.append(result.get("error", {}))
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {"reason": str(errors[0])}
            raise StoreUnavailable(f"{len(errors)} of {len(chunk)} documents could not be written to {index} "
                                   f"({doing}): {first.get('type')}: {first.get('reason')}")
    return created, already


def enqueue(es: Elasticsearch, indices: Indices, settings: Settings, notifications: list[Notification],
            now: datetime) -> EnqueueReport:
    """Route, render and queue one document per (notification, recipient). Idempotent."""
    templates = Templates.of(settings)
    docs: list[tuple[str, dict[str, Any]]] = []
    unrouted: list[str] = []
    render_failed = below_floor = 0
    for notification in notifications:
        incident = notification.incident
        try:
            agency = settings.agency(incident.finding.agency)
        except ConfigError:
            unrouted.append(f"incident {incident.id}: agency {incident.finding.agency!r} is not in the config")
            continue
        routed = recipients(settings, incident.finding)
        if not routed:
            below_floor += 1
            continue
        for recipient in routed:
            delivery_id = stable_id("alert", incident.id, notification.key, recipient.address)
            context = alert_context(notification, agency.name, recipient.language, recipient.timezone, settings)
            status, error = "pending", ""
            try:
                rendered = templates.render("alert", recipient.language, context)
            except RenderError as exc:  # an override that uses a variable we do not have: this email only
                rendered = Rendered(f"[secmon] alert {incident.id}", "", "")
                status, error = "failed", f"render: {type(exc).__name__}: {exc}"
                render_failed += 1
            extra = {"notification": {"reason": notification.reason, "key": notification.key},
                     "severity": incident.finding.severity.value,
                     "summary": summary(context["incident"], context["agency"]["name"], notification.reason)}
            docs.append((delivery_id, new_doc(
                kind="alert", delivery_id=delivery_id, agencies={agency.id: agency.name}, recipient=recipient,
                rendered=rendered, sender=settings.smtp.sender, now=now, incident_ids=[incident.id], extra=extra,
                status=status, last_error=error)))
    queued, already = create_docs(es, indices.alerts, docs, "queue alerts") if docs else (0, 0)
    return EnqueueReport(queued, already, tuple(unrouted), below_floor, render_failed)


def pages(es: Elasticsearch, index: str, query: dict[str, Any], doing: str, size: int = 200
          ) -> Iterator[list[dict[str, Any]]]:
    """Every matching document, page by page, oldest first (search_after on created + id: stable while
    documents change state under us), with seq_no and primary_term for optimistic concurrency."""
    after: list[Any] | None = None
    while True:
        with reporting(es, doing):
            response = es.search(index=index, query=query, size=size, seq_no_primary_term=True,
                                 sort=[{"secmon.created": "asc"}, {"secmon.id": "asc"}], ignore_unavailable=True,
                                 search_after=after)
        hits = response["hits"]["hits"]
        if not hits:
            return
        yield hits
        after = hits[-1]["sort"]
