"""Bulk-write events and dead letters with deterministic ids.

Ids come from the record's identity, and writes use `index` (not `create`), so
shipping the same record twice leaves one document. Documents are serialized
once, to NDJSON lines, so the same bytes go to Elasticsearch or to the spool.
Rejections are sorted per item: 429/5xx items are retried with backoff; an
item Elasticsearch cannot accept (a mapping conflict, say) becomes a dead
letter with the reason, never a loss.

`event.ingested` is the time a document was *sent*, stamped into the bytes at
each attempt (a placeholder until then): the scheduler scans by ingest time,
so a batch that waited in the spool through an outage must not carry the time
it was read, or a scan that already passed that time would never see it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import Any

import orjson
from elasticsearch import Elasticsearch

from secmon.errors import StoreUnavailable
from secmon.model import DeadLetter, Event
from secmon.store.client import reporting
from secmon.store.indices import Indices

RETRYABLE = {429, 502, 503, 504}
ITEM_OUTCOME = "items.*.status,items.*.error"
# What `serialize` writes for event.ingested; `send` replaces it with the time of each attempt. A key with
# quotes unescaped cannot come from inside a string value, and no real time looks like this.
INGESTED_PLACEHOLDER = "\u0000secmon-ingested\u0000"
_PLACEHOLDER_BYTES = b'"ingested":"\\u0000secmon-ingested\\u0000"'


@dataclass
class WriteStats:
    events: int = 0
    dead_letters: int = 0
    rejected: int = 0  # events Elasticsearch refused, now dead letters
    retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # blank lines, and records before the checkpoint when resuming
    spooled_batches: int = 0  # batches written to the spool while Elasticsearch was unreachable

    def add(self, other: WriteStats) -> None:
        self.events += other.events
        self.dead_letters += other.dead_letters
        self.rejected += other.rejected
        self.retries += other.retries
        self.skipped += other.skipped
        self.spooled_batches += other.spooled_batches
        for reason, count in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)  # ten times faster than json: serialization is a third of the hot path
    except TypeError:  # what orjson refuses (an integer beyond 64 bits, say) json writes, or names
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


class BulkWriter:
    def __init__(self, es: Elasticsearch, indices: Indices, *, chunk_size: int = 2000, max_attempts: int = 6,
                 unreachable_attempts: int | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 sleep: Callable[[float], None] = time.sleep):
        self._es = es
        self._indices = indices
        self._chunk_size = chunk_size
        self._max_attempts = max_attempts
        # With a spool, an unreachable cluster is not worth waiting for: the batch goes to disk.
        self._unreachable_attempts = unreachable_attempts or max_attempts
        self._now = now
        self._sleep = sleep
        self._index_names: dict[tuple[str, str], str] = {}

    def write(self, items: Iterable[Event | DeadLetter], agency: str) -> WriteStats:
        stats = WriteStats()
        iterator = iter(items)
        while chunk := list(islice(iterator, self._chunk_size)):
            stats.add(self.send(self.serialize(chunk, agency)))
        return stats

    def serialize(self, items: Iterable[Event | DeadLetter], agency: str) -> list[bytes]:
        """NDJSON bulk lines (action, document) for `items`; `send` stamps the ingest time."""
        read = _iso(self._now())
        lines: list[bytes] = []
        for item in items:
            head, doc = self._action(item, agency, read)
            lines += (_dumps(head), _dumps(doc))
        return lines

    def _action(self, item: Event | DeadLetter, agency: str, read: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if isinstance(item, Event):
            doc = dict(item.doc)
            doc["event"] = {**doc.get("event", {}), "ingested": INGESTED_PLACEHOLDER}
            index = self._event_index(agency, str(doc["@timestamp"]))
        else:
            doc = {
                "@timestamp": read,
                "organization": {"id": item.agency},
                "event": {"original": item.raw, "dataset": item.pipeline, "ingested": INGESTED_PLACEHOLDER},
                "error": {"message": item.reason},
                "secmon": {"pipeline": item.pipeline, "source": item.source, "offset": item.offset},
            }
            index = self._indices.deadletter(agency)
        return {"index": {"_index": index, "_id": item.id}}, doc

    def _event_index(self, agency: str, stamp: str) -> str:
        # Pipelines write UTC times ("...Z"): their month is the text's, so the index name is
        # looked up, not parsed and formatted, once an event. Other forms take the long way.
        if not (len(stamp) > 7 and stamp.endswith("Z") and stamp[4] == "-"):
            return self._indices.events(agency, _moment(stamp))
        key = (agency, stamp[:7])
        index = self._index_names.get(key)
        if index is None:
            index = self._index_names[key] = self._indices.events(agency, _moment(stamp))
        return index

    def send(self, lines: list[bytes]) -> WriteStats:
        """Write serialized lines; retry what can be retried. StoreUnavailable if it never goes through."""
        stats = WriteStats()
        pending = [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]
        unreachable = 0
        for attempt in range(self._max_attempts):
            if not pending:
                return stats
            if attempt:
                stats.retries += 1
                self._sleep(min(30.0, 0.5 * 2 ** attempt))
            stamp = b'"ingested":"' + _iso(self._now()).encode() + b'"'
            try:
                with reporting(self._es, "write events"):
                    # pre-serialized NDJSON lines: the client sends bytes as they are
                    # Only each item's status (and error): the full per-item answer is ~200 bytes an event
                    # that the node writes and the client parses for nothing.
                    response = self._es.bulk(operations=[part for head, body in pending  # type: ignore[misc]
                                                         for part in (head, body.replace(_PLACEHOLDER_BYTES, stamp))],
                                             filter_path=ITEM_OUTCOME)
            except StoreUnavailable:
                unreachable += 1
                if attempt + 1 == self._max_attempts or unreachable >= self._unreachable_attempts:
                    raise
                continue
            pending = self._sort(pending, response["items"], stats)
        raise StoreUnavailable(
            f"Elasticsearch kept refusing {len(pending)} documents after {self._max_attempts} attempts")

    def _sort(self, pending: list[tuple[bytes, bytes]], results: list[dict[str, Any]], stats: WriteStats
              ) -> list[tuple[bytes, bytes]]:
        """Count what was written; return what to send again (retryable, or rejected as dead letters)."""
        retry = []
        dead_marker = b'"_index":"' + self._indices.deadletter("").encode()  # our own action line says where it went
        for (head, body), result in zip(pending, results):
            outcome = result["index"]
            status = outcome.get("status", 500)
            is_dead = dead_marker in head
            if status < 300:
                if is_dead:
                    stats.dead_letters += 1
                else:
                    stats.events += 1
            elif status in RETRYABLE:
                retry.append((head, body))
            elif not is_dead:
                letter = self._rejected(head, body, outcome.get("error", {}))
                stats.rejected += 1
                stats.reasons[letter.reason] = stats.reasons.get(letter.reason, 0) + 1
                dead_head, dead_doc = self._action(letter, letter.agency, _iso(self._now()))
                retry.append((_dumps(dead_head), _dumps(dead_doc)))
            else:
                raise StoreUnavailable(f"the dead-letter index refused a record: {outcome.get('error')}")
        return retry

    @staticmethod
    def _rejected(head: bytes, body: bytes, error: dict[str, Any]) -> DeadLetter:
        doc = json.loads(body)
        event = doc.get("event", {})
        agency = str(doc.get("organization", {}).get("id", ""))
        reason = f"elasticsearch rejected the event: {error.get('type')}: {error.get('reason')}"
        return DeadLetter(id=json.loads(head)["index"]["_id"], raw=str(event.get("original", "")), reason=reason,
                          pipeline=str(event.get("dataset", "")), source="", offset=None, agency=agency)
