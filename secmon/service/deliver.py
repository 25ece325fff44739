"""The deliver flow: queued alerts -> SMTP -> recorded outcomes."""

from __future__ import annotations

from datetime import datetime

from elasticsearch import Elasticsearch

from secmon.alert.outbox import DeliveryReport, deliver_pending
from secmon.config import Settings
from secmon.service.common import indices_of
from secmon.store.indices import Indices


def deliver(es: Elasticsearch, settings: Settings, now: datetime) -> DeliveryReport:
    return deliver_pending(es, indices_of(settings), settings.smtp, now)


def daily_digests(es: Elasticsearch, indices: Indices, settings: Settings, now: datetime) -> int:
    """Queue each agency's daily digest that is due at `now` (agency local time); the number queued.

    A stub with the agreed signature, so the scheduler's cron jobs can call it:
    the delivery work builds the digests themselves. It queues nothing yet.
    """
    return 0
