"""The retention flow: delete each agency's monthly event indices once all they hold is past its retention.

An index holds one month (UTC) of one agency's events, so retention is deleting
whole indices: it works on every cluster, with or without ILM (the local node
has none), and it never rewrites documents. An index goes only when the whole
month is older than `agency.retention`; each deletion is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from secmon.config import Settings
from secmon.service.common import audit, indices_of
from secmon.store.event_indices import delete_index, event_indices
from secmon.types import iso, parse_duration

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


def _month_after(first: datetime) -> datetime:
    return first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)


def retention(es: Elasticsearch, settings: Settings, now: datetime) -> list[str]:
    """Delete the expired event indices of every agency; their names."""
    indices = indices_of(settings)
    deleted = []
    for agency in settings.agencies:
        cutoff = now - parse_duration(agency.retention)
        for name in event_indices(es, indices, agency.id):
            month = indices.events_month(name, agency.id)
            if month is None or _month_after(month) > cutoff:
                continue  # another agency's index, or it still holds events within the retention
            delete_index(es, name)
            deleted.append(name)
            audit(es, indices, "retention", "success", now,
                  {"index": name, "retention": agency.retention, "cutoff": iso(cutoff)}, agency=agency.id,
                  message=f"deleted {name}: every event in it is older than {agency.retention}")
    return deleted
