"""The deliver flow: queued alerts -> SMTP -> recorded outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from elasticsearch import Elasticsearch

from secmon.alert.outbox import DeliveryReport, deliver_pending
from secmon.config import Settings
from secmon.service.common import indices_of


def deliver(es: Elasticsearch, settings: Settings, now: datetime) -> DeliveryReport:
    return deliver_pending(es, indices_of(settings), settings.smtp, now)


@dataclass(frozen=True)
class DigestReport:
    queued: int  # new digest documents
    already: int  # queued by an earlier call for the same agency and day
    agencies: tuple[str, ...]  # the agencies whose digest is due now
    errors: tuple[str, ...] = ()


def daily_digests(es: Elasticsearch, settings: Settings, now: datetime) -> DigestReport:
    """Queue the daily digests due at `now` (idempotent; the scheduler's cron job calls it).

    A stub with the delivery work's signature and report, so the scheduler's cron
    jobs can call it before that work is merged: it queues nothing.
    """
    return DigestReport(0, 0, ())
