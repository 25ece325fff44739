"""The per-recipient hourly cap: past `alerts.hourly_cap` emails in a clock hour (UTC), the rest of
that recipient's due alerts are folded into ONE overflow digest, its own outbox document with
id stable_id("overflow", recipient, hour). The folded alerts are marked `sent` with `digest_id`,
so each is accounted for and none is silent.

Crash safety: a folded alert carries its planned `digest_id` from the moment it is claimed; the
digest lists the ids it folded (`secmon.folded`). An alert found `sending` with a digest_id after
a crash is folded if that digest lists it, and otherwise delivered as any other alert.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from elasticsearch import Elasticsearch, NotFoundError

from secmon.alert.route import Recipient
from secmon.alert.render import Rendered, Templates
from secmon.config import Settings
from secmon.model import Delivery, stable_id
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.types import Language, iso

MAX_LISTED = 200  # lines in one digest; the rest are counted ("... and N more")


def hour_of(now: datetime) -> datetime:
    return now.astimezone(ZoneInfo("UTC")).replace(minute=0, second=0, microsecond=0)


def overflow_id(recipient: str, hour: datetime) -> str:
    return stable_id("overflow", recipient, iso(hour))


def sent_in_hour(es: Elasticsearch, indices: Indices, hour: datetime) -> dict[str, int]:
    """Emails each recipient got since the start of the hour (alerts and overflow digests, not folded ones)."""
    query = {"bool": {"filter": [{"term": {"secmon.status": "sent"}}, {"terms": {"secmon.kind": ["alert", "overflow"]}},
                                 {"range": {"secmon.sent_at": {"gte": iso(hour)}}}],
                      "must_not": [{"exists": {"field": "secmon.digest_id"}}]}}
    with reporting(es, "count the emails sent this hour"):
        response = es.search(index=indices.alerts, size=0, query=query, ignore_unavailable=True,
                             aggs={"to": {"terms": {"field": "secmon.recipient", "size": 10_000}}})
    buckets = response.get("aggregations", {}).get("to", {}).get("buckets", [])
    return {b["key"]: b["doc_count"] for b in buckets}


def folded_by(es: Elasticsearch, indices: Indices, digest_id: str) -> set[str] | None:
    """The alert ids an existing overflow digest lists; None when it does not exist (yet)."""
    with reporting(es, "read an overflow digest"):
        try:
            doc = es.get(index=indices.alerts, id=digest_id, source_includes=["secmon.folded"])
        except NotFoundError:
            return None
    return set(doc["_source"].get("secmon", {}).get("folded", []))


def render_overflow(templates: Templates, settings: Settings, first: Delivery, hour: datetime,
                    summaries: list[dict[str, Any]]) -> Rendered:
    zone = ZoneInfo(first.timezone)
    span = f"{hour.astimezone(zone):%Y-%m-%d %H:%M}-{(hour + timedelta(hours=1)).astimezone(zone):%H:%M %Z}"
    items = sorted(summaries, key=lambda s: s.get("first_seen", ""))[:MAX_LISTED]
    context = {"kind": "overflow", "timezone": first.timezone, "cap": settings.alerts.hourly_cap, "hour": span,
               "sections": [{"name": "overflow", "items": items, "total": len(summaries)}]}
    return templates.render("overflow", first.language, context)


def recipient_of(first: Delivery) -> Recipient:
    return Recipient(first.recipient, cast(Language, first.language), first.timezone, "overflow")
