"""The outbox: every alert is a document before it is an email.

An alert is queued (one document per incident and agency, created once, so a
re-run never queues it twice) and then delivered. When SMTP is down the
document stays `pending` with the error and is retried on the next run, by the
scheduler or by hand; nothing is lost with the process.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from elasticsearch import Elasticsearch

from secmon.alert.render import render
from secmon.config import Settings, SmtpSettings
from secmon.errors import StoreUnavailable
from secmon.model import Delivery, Notification, stable_id
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.types import iso

MAX_ATTEMPTS = 50  # ~ a day and a half at one try a minute; then `failed`, visible in Kibana


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    pending: int
    failed: int
    errors: tuple[str, ...]


def enqueue(es: Elasticsearch, indices: Indices, settings: Settings, notifications: list[Notification],
            now: datetime) -> int:
    """Queue one alert per notification and agency; ids derive from (incident, notification key, agency),
    so a re-run never queues the same alert twice. Any refusal other than "already queued" raises."""
    operations: list[dict[str, Any]] = []
    for notification in notifications:
        incident = notification.incident
        agency = settings.agency(incident.finding.agency)
        if not agency.recipients:
            continue
        subject, body = render(incident, agency)
        operations += [{"create": {"_index": indices.alerts, "_id": stable_id("alert", incident.id, notification.key,
                                                                              agency.id)}}, {
            "@timestamp": iso(now), "organization": {"id": agency.id, "name": agency.name},
            "secmon": {"incident_id": [incident.id], "recipients": list(agency.recipients),
                       "language": agency.language, "subject": subject, "body": body, "status": "pending",
                       "attempts": 0, "last_error": "", "updated": iso(now)},
        }]
    if not operations:
        return 0
    with reporting(es, "queue alerts"):
        response = es.bulk(operations=operations, refresh="wait_for")
    # 409 = already queued by an earlier run: exactly the deduplication we want.
    failed = [item["create"] for item in response["items"] if item["create"].get("status") not in (201, 409)]
    if failed:
        error = failed[0].get("error", {})
        raise StoreUnavailable(f"{len(failed)} alerts could not be queued: {error.get('type')}: {error.get('reason')}")
    return sum(1 for item in response["items"] if item["create"].get("status") == 201)


def _message(delivery: Delivery, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(delivery.recipients)
    message["Subject"] = delivery.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(idstring=delivery.id[:16], domain="secmon")
    message["X-Secmon-Incident"] = " ".join(delivery.incident_ids)
    message["Content-Language"] = delivery.language
    message.set_content(delivery.body)
    return message


def send_smtp(smtp: SmtpSettings, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    client_cls = smtplib.SMTP_SSL if smtp.ssl else smtplib.SMTP
    kwargs: dict[str, Any] = {"context": context} if smtp.ssl else {}
    with client_cls(smtp.host, smtp.port, timeout=smtp.timeout, **kwargs) as client:
        if smtp.starttls:
            client.starttls(context=context)
        if smtp.username_env:
            client.login(os.environ.get(smtp.username_env, ""), os.environ.get(smtp.password_env, ""))
        client.send_message(message)


def _from_hit(hit: dict[str, Any]) -> Delivery:
    s = hit["_source"]["secmon"]
    ids = s["incident_id"]
    return Delivery(id=hit["_id"], incident_ids=tuple(ids if isinstance(ids, list) else [ids]),
                    agency=hit["_source"]["organization"]["id"],
                    recipients=tuple(s["recipients"]), language=s["language"], subject=s["subject"],
                    body=s["body"], status=s["status"], attempts=s["attempts"], last_error=s["last_error"])


def deliver_pending(es: Elasticsearch, indices: Indices, smtp: SmtpSettings, now: datetime,
                    send: Callable[[SmtpSettings, EmailMessage], None] = send_smtp) -> DeliveryReport:
    with reporting(es, "read queued alerts"):
        if not es.indices.exists(index=indices.alerts):
            return DeliveryReport(0, 0, 0, ())
        hits = es.search(index=indices.alerts, query={"term": {"secmon.status": "pending"}}, size=500,
                         sort=[{"@timestamp": "asc"}])["hits"]["hits"]
    sent = failed = 0
    errors: list[str] = []
    operations: list[dict[str, Any]] = []
    for delivery in map(_from_hit, hits):
        update: dict[str, Any] = {"attempts": delivery.attempts + 1, "updated": iso(now)}
        try:
            send(smtp, _message(delivery, smtp.sender))
        except (OSError, smtplib.SMTPException) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            errors.append(reason)
            update["last_error"] = reason
            if delivery.attempts + 1 >= MAX_ATTEMPTS:
                update["status"] = "failed"
                failed += 1
        else:
            update.update(status="sent", sent_at=iso(now), last_error="")
            sent += 1
        operations += [{"update": {"_index": indices.alerts, "_id": delivery.id}}, {"doc": {"secmon": update}}]
    if operations:
        # One bulk write and one refresh for the whole run: a refresh per email costs a second each.
        with reporting(es, "record alert deliveries"):
            es.bulk(operations=operations, refresh="wait_for")
    return DeliveryReport(sent, len(hits) - sent - failed, failed, tuple(dict.fromkeys(errors)))
