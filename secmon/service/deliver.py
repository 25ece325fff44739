"""The deliver flow: the outbox -> SMTP -> recorded outcomes; daily digests; the outbox admin commands."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from secmon.alert.daily import DigestReport, daily_digests as queue_daily_digests
from secmon.alert.dispatch import DeliveryReport, deliver_pending
from secmon.alert.manage import OutboxPage, RetryReport, list_outbox, requeue_failed
from secmon.alert.message import build
from secmon.alert.sample import sample_delivery
from secmon.alert.send import SendFailure, SmtpSession
from secmon.config import Agency, Settings
from secmon.errors import DeliveryError
from secmon.service.common import audit, indices_of, operator
from secmon.types import DEFAULT_TIMEZONE

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


def deliver(es: Elasticsearch, settings: Settings, now: datetime, retry_now: bool = False) -> DeliveryReport:
    return deliver_pending(es, indices_of(settings), settings, now, retry_now=retry_now)


def daily_digests(es: Elasticsearch, settings: Settings, now: datetime) -> DigestReport:
    """Queue the daily digests due at `now` (idempotent; the scheduler's cron job calls it)."""
    return queue_daily_digests(es, indices_of(settings), settings, now)


def outbox(es: Elasticsearch, settings: Settings, *, status: str | None, agency: str | None, limit: int
           ) -> OutboxPage:
    if agency:
        settings.agency(agency)
    return list_outbox(es, indices_of(settings), status=status, agency=agency, limit=limit)


def retry(es: Elasticsearch, settings: Settings, now: datetime, ids: tuple[str, ...] = ()) -> RetryReport:
    """Failed -> pending (the named ones, or all when none are named), audited."""
    indices = indices_of(settings)
    user = settings.operator or operator()
    report = requeue_failed(es, indices, now, user, ids)
    outcome = "success" if not (report.missing or report.changed) else "failure"
    audit(es, indices, "alerts-retry", outcome, now,
          {"requeued": len(report.requeued), "ids": list(report.requeued)[:1000], "missing": list(report.missing),
           "not_failed": [i for i, _ in report.not_failed], "changed": list(report.changed)},
          message=f"{len(report.requeued)} failed alerts re-queued", user=user)
    return report


def test_email(es: Elasticsearch, settings: Settings, to: str, agency_id: str | None, now: datetime) -> str:
    """A sample alert to `to` over the real SMTP path; the server's reply. Raises DeliveryError."""
    if agency_id:
        agency = settings.agency(agency_id)
    elif settings.agencies:
        agency = settings.agencies[0]
    else:
        agency = Agency(id="secmon", name="secmon", language="en", timezone=DEFAULT_TIMEZONE)
    indices = indices_of(settings)
    user = settings.operator or operator()
    delivery = sample_delivery(settings, agency, to, now)
    try:
        with SmtpSession(settings.smtp) as session:
            reply = session.send(build(delivery, settings.smtp.sender, now), to)
    except SendFailure as failure:
        audit(es, indices, "alerts-test-email", "failure", now, {"to": to, "error": failure.reason,
                                                                  "smtp_code": failure.code},
              agency=agency.id, message=f"test email to {to} failed", user=user)
        raise DeliveryError(f"test email to {to} failed: {failure.reason}") from None
    audit(es, indices, "alerts-test-email", "success", now, {"to": to, "reply": reply, "message_id": delivery.message_id},
          agency=agency.id, message=f"test email sent to {to}", user=user)
    return reply
