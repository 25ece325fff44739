"""Deliver the outbox: claim, send, record, one document at a time.

Exactly once per message, whatever crashes: a document is claimed before it is sent
(pending -> sending, with an owner and a deadline, written with if_seq_no/if_primary_term, so of
two deliverers exactly one wins), and its outcome is written right after its own send. A process
killed between the SMTP server's "250" and that write leaves the document `sending`; once its
claim deadline passes, the next run sends it again with the same Message-ID, so at most the one
message in flight goes twice. One message's failure never touches another.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.errors import MessageError
from email.message import EmailMessage
from typing import Any

from elasticsearch import ConflictError, Elasticsearch, NotFoundError

from secmon.alert import overflow
from secmon.alert.message import build
from secmon.alert.outbox import create_docs, from_hit, new_doc, pages
from secmon.alert.render import RenderError, Templates
from secmon.alert.send import SendFailure, SmtpSession
from secmon.config import Settings
from secmon.errors import StoreUnavailable
from secmon.model import Delivery
from secmon.store.client import reporting
from secmon.store.indices import Indices
from secmon.types import iso, parse_duration, parse_iso

Send = Callable[[EmailMessage, str], str]  # (message, recipient) -> the server's reply; raises SendFailure
_BACKOFF_DOUBLINGS = 30  # 2**30 times retry_base is past any retry_max


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0  # accepted by the SMTP server in this run
    pending: int = 0  # attempted in this run and not accepted: retried later with backoff
    failed: int = 0  # given up in this run: older than alerts.max_age, or the document cannot become an email
    errors: tuple[str, ...] = ()  # the distinct reasons
    folded: int = 0  # alerts folded into an overflow digest by the hourly cap (marked sent)
    held: int = 0  # alerts kept for the next hour: that hour's overflow digest had already gone
    skipped: int = 0  # documents another deliverer claimed first
    outbox_pending: int = 0  # in the outbox after the run: pending or in flight (not yet due, or retrying)
    outbox_failed: int = 0  # in the outbox after the run: failed, until `secmon alerts retry`


@dataclass(frozen=True)
class _Claim:
    delivery: Delivery
    source: dict[str, Any]
    seq_no: int
    primary_term: int


def due_query(now: datetime, retry_now: bool = False) -> dict[str, Any]:
    """Pending and due (any pending with retry_now), or claimed by a deliverer that did not finish in time."""
    pending: list[dict[str, Any]] = [{"term": {"secmon.status": "pending"}}]
    if not retry_now:
        pending.append({"range": {"secmon.next_attempt": {"lte": iso(now)}}})
    return {"bool": {"should": [
        {"bool": {"filter": pending}},
        {"bool": {"filter": [{"term": {"secmon.status": "sending"}},
                             {"range": {"secmon.claim_deadline": {"lte": iso(now)}}}]}},
    ], "minimum_should_match": 1}}


def is_due(source: dict[str, Any], now: datetime, retry_now: bool = False) -> bool:
    """`due_query` for one document in hand."""
    s = source.get("secmon", {})
    if s.get("status") == "pending":
        return retry_now or (bool(s.get("next_attempt")) and parse_iso(s["next_attempt"]) <= now)
    return s.get("status") == "sending" and bool(s.get("claim_deadline")) and parse_iso(s["claim_deadline"]) <= now


def backoff(settings: Settings, attempts_before: int) -> timedelta:
    base, cap = parse_duration(settings.alerts.retry_base), parse_duration(settings.alerts.retry_max)
    return max(min(cap, base * 2 ** min(attempts_before, _BACKOFF_DOUBLINGS)), timedelta(seconds=1))


class _Run:
    def __init__(self, es: Elasticsearch, indices: Indices, settings: Settings, now: datetime, send: Send,
                 retry_now: bool = False) -> None:
        self.es, self.indices, self.settings, self.now, self.send = es, indices, settings, now, send
        self.retry_now = retry_now
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.claim_timeout = parse_duration(settings.alerts.claim_timeout)
        self._started = time.monotonic()
        self.max_age = parse_duration(settings.alerts.max_age)
        self.hour = overflow.hour_of(now)
        self.counts: Counter[str] = Counter()
        self.errors: dict[str, None] = {}
        self.this_hour: Counter[str] = Counter()  # emails per recipient this hour: read when the run starts
        self.over_cap: dict[str, list[dict[str, Any]]] = {}  # recipient -> due hits past the cap

    def clock(self) -> datetime:
        """`now` moved on by the time this run has taken. A claim's deadline counts from the moment it is
        made: a run that sends for longer than claim_timeout must not hand out claims that are already
        expired. Retry times and records use `now`, the run's (injectable) time."""
        return self.now + timedelta(seconds=time.monotonic() - self._started)

    # --- one document ---------------------------------------------------------------------------

    def _update(self, doc_id: str, seq_no: int, primary_term: int, fields: dict[str, Any], doing: str
                ) -> tuple[int, int] | None:
        """An optimistic-concurrency update of secmon.*; None when someone else changed the document first."""
        with reporting(self.es, doing):
            try:
                response = self.es.update(index=self.indices.alerts, id=doc_id, if_seq_no=seq_no,
                                          if_primary_term=primary_term,
                                          doc={"secmon": {**fields, "updated": iso(self.now)}})
            except (ConflictError, NotFoundError):
                return None
        return int(response["_seq_no"]), int(response["_primary_term"])

    def _update_many(self, items: list[tuple[dict[str, Any], dict[str, Any]]], doing: str
                     ) -> list[tuple[int, int] | None]:
        """`_update` for many documents in one bulk; each item keeps its own optimistic concurrency."""
        operations: list[dict[str, Any]] = []
        for hit, fields in items:
            operations += [{"update": {"_index": self.indices.alerts, "_id": hit["_id"], "if_seq_no": hit["_seq_no"],
                                       "if_primary_term": hit["_primary_term"]}},
                           {"doc": {"secmon": {**fields, "updated": iso(self.now)}}}]
        with reporting(self.es, doing):
            response = self.es.bulk(operations=operations)
        versions: list[tuple[int, int] | None] = []
        errors = []
        for item in response["items"]:
            result = item["update"]
            if result.get("status") in (200, 201):
                versions.append((int(result["_seq_no"]), int(result["_primary_term"])))
            else:
                versions.append(None)
                if result.get("status") not in (404, 409):  # changed or gone meanwhile: someone else has it
                    errors.append(result.get("error", {}))
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {"reason": str(errors[0])}
            raise StoreUnavailable(f"{len(errors)} of {len(items)} outbox updates failed ({doing}): "
                                   f"{first.get('type')}: {first.get('reason')}")
        return versions

    def claim(self, hit: dict[str, Any], digest_id: str | None = None) -> _Claim | None:
        fields = {"status": "sending", "claimed_by": self.owner, "claim_deadline": iso(self.clock() + self.claim_timeout),
                  "digest_id": digest_id}
        version = self._update(hit["_id"], hit["_seq_no"], hit["_primary_term"], fields, "claim an alert")
        if version is None:
            # A search sees the index as of its last refresh: read the document itself (real time) and
            # claim it if it is still due, e.g. a crashed deliverer's claim that the search had not seen yet.
            fresh = self._fresh(hit["_id"])
            if fresh is not None and is_due(fresh["_source"], self.now, self.retry_now):
                hit = fresh
                version = self._update(hit["_id"], hit["_seq_no"], hit["_primary_term"], fields, "claim an alert")
        if version is None:
            self.counts["skipped"] += 1
            return None
        return _Claim(from_hit(hit), hit["_source"], *version)

    def _fresh(self, doc_id: str) -> dict[str, Any] | None:
        with reporting(self.es, "read an alert"):
            try:
                return dict(self.es.get(index=self.indices.alerts, id=doc_id).body)
            except NotFoundError:
                return None

    def record(self, claim: _Claim, fields: dict[str, Any]) -> None:
        """The outcome of one message, written right after it, on that document alone."""
        done = {"claimed_by": None, "claim_deadline": None, **fields}
        if self._update(claim.delivery.id, claim.seq_no, claim.primary_term, done, "record an alert delivery") is None:
            # Our claim expired and another deliverer took the document over: its outcome will be recorded.
            self.errors[f"claim on {claim.delivery.id} expired before its outcome was recorded "
                        "(alerts.claim_timeout shorter than a send?)"] = None

    def deliver(self, claim: _Claim) -> None:
        d = claim.delivery
        try:
            message = build(d, self.settings.smtp.sender, self.clock())
        except (ValueError, TypeError, LookupError, MessageError) as exc:  # this document only
            reason = f"cannot build the message: {type(exc).__name__}: {exc}"
            self.record(claim, {"status": "failed", "last_error": reason, "attempts": d.attempts + 1})
            self.counts["failed"] += 1
            self.errors[reason] = None
            return
        try:
            reply = self.send(message, d.recipient)
        except SendFailure as failure:
            self.retry_or_give_up(claim, failure)
            return
        code = reply[:3]
        self.record(claim, {"status": "sent", "sent_at": iso(self.now), "smtp_reply": reply, "last_error": "",
                            "smtp_code": int(code) if code.isdigit() else None, "attempts": d.attempts + 1})
        self.counts["sent"] += 1
        if d.kind == "alert":
            self.this_hour[d.recipient] += 1

    def retry_or_give_up(self, claim: _Claim, failure: SendFailure) -> None:
        d = claim.delivery
        fields: dict[str, Any] = {"last_error": failure.reason, "smtp_code": failure.code, "attempts": d.attempts + 1}
        queued = d.queued or self.now
        if self.now - queued >= self.max_age:
            fields["status"] = "failed"
            self.counts["failed"] += 1
        else:
            # The last try falls at max_age exactly, then `failed`: never silently longer.
            retry_at = min(self.now + backoff(self.settings, d.attempts), queued + self.max_age)
            fields.update(status="pending", next_attempt=iso(retry_at))
            self.counts["pending"] += 1
        self.record(claim, fields)
        self.errors[failure.reason] = None

    # --- the run --------------------------------------------------------------------------------

    def visit(self, hit: dict[str, Any]) -> None:
        d = from_hit(hit)
        if d.status == "sending" and d.digest_id:  # a fold interrupted by a crash
            members = overflow.folded_by(self.es, self.indices, d.digest_id)
            if members is not None and d.id in members:
                claim = self.claim(hit, d.digest_id)
                if claim:
                    self.record(claim, {"status": "sent", "sent_at": iso(self.now)})
                    self.counts["folded"] += 1
                return
        if d.kind == "alert" and self.this_hour[d.recipient] >= self.settings.alerts.hourly_cap:
            self.over_cap.setdefault(d.recipient, []).append(hit)  # claimed together when folded: no SMTP between
            return
        claim = self.claim(hit)
        if claim:
            self.deliver(claim)

    def fold(self, templates: Templates, hits: list[dict[str, Any]]) -> None:
        """Fold one recipient's alerts over the cap into that hour's overflow digest, then send it.

        No email is sent between claiming and recording these, so both are one bulk each.
        """
        digest_id = overflow.overflow_id(from_hit(hits[0]).recipient, self.hour)
        claim_fields = {"status": "sending", "claimed_by": self.owner,
                        "claim_deadline": iso(self.clock() + self.claim_timeout), "digest_id": digest_id}
        claims = [_Claim(from_hit(hit), hit["_source"], *version) for hit, version in
                  zip(hits, self._update_many([(hit, claim_fields) for hit in hits], "claim alerts over the cap"))
                  if version is not None]
        self.counts["skipped"] += len(hits) - len(claims)
        if not claims:
            return
        first = claims[0].delivery
        agencies: dict[str, str] = {}
        for c in claims:
            for agency_id, name in zip(c.delivery.agencies, c.source.get("organization", {}).get("name", [])):
                agencies.setdefault(agency_id, name)
        try:
            rendered = overflow.render_overflow(templates, self.settings, first, self.hour,
                                                [c.source["secmon"].get("summary", {}) for c in claims])
        except RenderError as exc:
            reason = f"overflow digest: {type(exc).__name__}: {exc}"
            self.errors[reason] = None
            members: set[str] = set()  # nothing folded: all held for the next hour, sent one by one then
        else:
            doc = new_doc(kind="overflow", delivery_id=digest_id, agencies=agencies,
                          recipient=overflow.recipient_of(first), rendered=rendered, sender=self.settings.smtp.sender,
                          now=self.now, incident_ids=[i for c in claims for i in c.delivery.incident_ids],
                          extra={"folded": [c.delivery.id for c in claims]})
            created, _ = create_docs(self.es, self.indices.alerts, [(digest_id, doc)], "queue an overflow digest",
                                     refresh=False)
            members = {c.delivery.id for c in claims} if created else (
                overflow.folded_by(self.es, self.indices, digest_id) or set())
        folded = {"status": "sent", "sent_at": iso(self.now), "digest_id": digest_id, "claimed_by": None,
                  "claim_deadline": None}
        # This hour's digest went out already: the next hour has a fresh cap.
        held = {"status": "pending", "next_attempt": iso(self.hour + timedelta(hours=1)), "digest_id": None,
                "claimed_by": None, "claim_deadline": None}
        outcomes = [({"_id": c.delivery.id, "_seq_no": c.seq_no, "_primary_term": c.primary_term},
                     folded if c.delivery.id in members else held) for c in claims]
        recorded = self._update_many(outcomes, "record folded alerts")
        for (_, fields), version in zip(outcomes, recorded):
            if version is None:
                self.errors["a folded alert's claim expired before its outcome was recorded"] = None
            self.counts["folded" if fields is folded else "held"] += 1
        if members:
            self.deliver_by_id(digest_id)

    def deliver_by_id(self, doc_id: str) -> None:
        hit = self._fresh(doc_id)
        if hit is not None and is_due(hit["_source"], self.now, self.retry_now):
            claim = self.claim(hit)
            if claim:
                self.deliver(claim)

    def totals(self) -> tuple[int, int]:
        """(pending or in flight, failed) in the whole outbox after the run."""
        with reporting(self.es, "count the outbox"):
            self.es.indices.refresh(index=self.indices.alerts)
            response = self.es.search(index=self.indices.alerts, size=0,
                                      aggs={"status": {"terms": {"field": "secmon.status", "size": 10}}})
        by_status = {b["key"]: b["doc_count"] for b in response["aggregations"]["status"]["buckets"]}
        return by_status.get("pending", 0) + by_status.get("sending", 0), by_status.get("failed", 0)

    def report(self) -> DeliveryReport:
        outbox_pending, outbox_failed = self.totals()
        c = self.counts
        return DeliveryReport(sent=c["sent"], pending=c["pending"], failed=c["failed"], errors=tuple(self.errors),
                              folded=c["folded"], held=c["held"], skipped=c["skipped"],
                              outbox_pending=outbox_pending, outbox_failed=outbox_failed)


def deliver_pending(es: Elasticsearch, indices: Indices, settings: Settings, now: datetime,
                    send: Send | None = None, retry_now: bool = False) -> DeliveryReport:
    """Send every due outbox document (all of them, page by page), recording each outcome as it happens.

    `retry_now`: pending documents waiting for their next retry are due too (SMTP was just fixed).
    """
    with reporting(es, "read queued alerts"):
        if not es.indices.exists(index=indices.alerts):
            return DeliveryReport()
    templates = Templates.of(settings)  # before anything is claimed: a broken override stops nothing midway
    if send is not None:
        return _deliver(_Run(es, indices, settings, now, send, retry_now), templates)
    with SmtpSession(settings.smtp) as session:
        return _deliver(_Run(es, indices, settings, now, session.send, retry_now), templates)


def _deliver(run: _Run, templates: Templates) -> DeliveryReport:
    run.this_hour.update(overflow.sent_in_hour(run.es, run.indices, run.hour))
    for page in pages(run.es, run.indices.alerts, due_query(run.now, run.retry_now), "read queued alerts"):
        for hit in page:
            run.visit(hit)
    for hits in run.over_cap.values():
        run.fold(templates, hits)
    return run.report()
