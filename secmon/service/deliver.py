"""The deliver flow: queued alerts -> SMTP -> recorded outcomes."""

from __future__ import annotations

from datetime import datetime

from elasticsearch import Elasticsearch

from secmon.alert.outbox import DeliveryReport, deliver_pending
from secmon.config import Settings
from secmon.service.common import indices_of


def deliver(es: Elasticsearch, settings: Settings, now: datetime) -> DeliveryReport:
    return deliver_pending(es, indices_of(settings), settings.smtp, now)
