"""The daily digest: per agency, at `alerts.daily_digest` agency-local time, a summary of its incidents
active over the past day (new, still open, closed), queued in the outbox for each of its recipients.

Idempotent and catching up by itself: the digest due at `now` is the one of the latest digest time
at or before now, its id is stable_id("daily", agency, local date, recipient), so calling this every
minute, twice at once, or once after a day of downtime queues each digest exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from secmon.alert.outbox import create_docs, new_doc
from secmon.alert.render import Rendered, RenderError, Templates, incident_view, local_time
from secmon.alert.safe import one_line
from secmon.alert.route import Recipient
from secmon.config import Agency, Settings
from secmon.incidents import records
from secmon.model import Incident, stable_id
from secmon.store.indices import Indices

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

MAX_INCIDENTS = 1000  # read per agency and day; more are counted as "more than"
MAX_LISTED = 100  # lines per section


@dataclass(frozen=True)
class DigestReport:
    queued: int  # new digest documents
    already: int  # queued by an earlier call for the same agency and day
    agencies: tuple[str, ...]  # the agencies whose digest is due now
    errors: tuple[str, ...] = ()  # a digest that could not be rendered (queued as failed, with the reason)


def due_window(agency: Agency, at: str, now: datetime) -> tuple[date, datetime, datetime]:
    """(local date, start, end) of the digest due at `now`: the day ending at the latest `at` <= now."""
    zone = ZoneInfo(agency.timezone)
    local_now = now.astimezone(zone)
    hour, minute = map(int, at.split(":"))
    end = datetime.combine(local_now.date(), time(hour, minute), zone)
    if end > local_now:
        end = datetime.combine(local_now.date() - timedelta(days=1), time(hour, minute), zone)
    return end.date(), end - timedelta(days=1), end


def _sections(incidents: list[Incident], start: datetime, end: datetime, language: str, timezone: str,
              settings: Settings) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rank = sorted(incidents, key=lambda i: (-i.finding.severity.rank, i.finding.first_seen))
    groups: dict[str, list[Incident]] = {"opened": [], "open": [], "closed": []}
    for incident in rank:
        if incident.created is not None and start <= incident.created < end:
            groups["opened"].append(incident)
        if incident.status == "closed":
            groups["closed"].append(incident)
        else:
            groups["open"].append(incident)
    sections = [{"name": name, "total": len(items),
                 "items": [{**incident_view(i, language, timezone, settings), "agency": "", "reason": ""}
                           for i in items[:MAX_LISTED]]}
                for name, items in groups.items()]
    return sections, {name: len(items) for name, items in groups.items()}


def daily_digests(es: Elasticsearch, indices: Indices, settings: Settings, now: datetime) -> DigestReport:
    at = settings.alerts.daily_digest
    if not at:
        return DigestReport(0, 0, ())
    templates = Templates.of(settings)
    docs: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    due: list[str] = []
    for agency in settings.agencies:
        if not agency.recipients:
            continue
        day, start, end = due_window(agency, at, now)
        due.append(agency.id)
        incidents = list(records.search(es, indices, agency=agency.id, since=start, until=end,
                                        limit=MAX_INCIDENTS).incidents)
        sections, counts = _sections(incidents, start, end, agency.language, agency.timezone, settings)
        context = {"kind": "daily", "timezone": agency.timezone, "date": day.isoformat(),
                   "agency": {"id": agency.id, "name": one_line(agency.name)},
                   "window_start": local_time(start, agency.timezone), "window_end": local_time(end, agency.timezone),
                   "sections": sections, "counts": counts}
        status, error = "pending", ""
        try:
            rendered = templates.render("daily", agency.language, context)
        except RenderError as exc:
            rendered = Rendered(f"[secmon] daily report {day.isoformat()}: {agency.id}", "", "")
            status, error = "failed", f"render: {type(exc).__name__}: {exc}"
            errors.append(f"daily digest of {agency.id}: {error}")
        for address in agency.recipients:
            digest_id = stable_id("daily", agency.id, day.isoformat(), address)
            docs.append((digest_id, new_doc(
                kind="daily", delivery_id=digest_id, agencies={agency.id: agency.name},
                recipient=Recipient(address, agency.language, agency.timezone, "agency"), rendered=rendered,
                sender=settings.smtp.sender, now=now, incident_ids=[i.id for i in incidents][:MAX_LISTED],
                extra={"digest_date": day.isoformat(), "counts": counts}, status=status, last_error=error)))
    queued, already = create_docs(es, indices.alerts, docs, "queue daily digests") if docs else (0, 0)
    return DigestReport(queued, already, tuple(due), tuple(errors))
