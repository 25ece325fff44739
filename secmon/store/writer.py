"""Bulk-write events and dead letters with deterministic ids.

Ids come from the record's identity, and writes use `index` (not `create`), so
shipping the same record twice leaves one document. Rejections are sorted:
429/5xx items are retried with backoff; an item Elasticsearch cannot accept
(a mapping conflict, say) becomes a dead letter with the reason, never a loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import Any

from elasticsearch import Elasticsearch

from secmon.errors import StoreUnavailable
from secmon.model import DeadLetter, Event
from secmon.store.client import reporting
from secmon.store.indices import Indices

RETRYABLE = {429, 502, 503, 504}


@dataclass
class WriteStats:
    events: int = 0
    dead_letters: int = 0
    rejected: int = 0  # events Elasticsearch refused, now dead letters
    retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def event_timestamp(doc: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(doc["@timestamp"]).replace("Z", "+00:00"))


class BulkWriter:
    def __init__(self, es: Elasticsearch, indices: Indices, *, chunk_size: int = 2000, max_attempts: int = 6,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 sleep: Callable[[float], None] = time.sleep):
        self._es = es
        self._indices = indices
        self._chunk_size = chunk_size
        self._max_attempts = max_attempts
        self._now = now
        self._sleep = sleep

    def write(self, items: Iterable[Event | DeadLetter], agency: str) -> WriteStats:
        stats = WriteStats()
        iterator = iter(items)
        while chunk := list(islice(iterator, self._chunk_size)):
            self._write_chunk(chunk, agency, stats)
        return stats

    def _action(self, item: Event | DeadLetter, agency: str, ingested: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if isinstance(item, Event):
            doc = dict(item.doc)
            doc["event"] = {**doc.get("event", {}), "ingested": ingested}
            index = self._indices.events(agency, event_timestamp(doc))
        else:
            doc = {
                "@timestamp": ingested,
                "organization": {"id": item.agency},
                "event": {"original": item.raw, "dataset": item.pipeline, "ingested": ingested},
                "error": {"message": item.reason},
                "secmon": {"pipeline": item.pipeline, "source": item.source, "offset": item.offset},
            }
            index = self._indices.deadletter(agency)
        return {"index": {"_index": index, "_id": item.id}}, doc

    def _write_chunk(self, chunk: list[Event | DeadLetter], agency: str, stats: WriteStats) -> None:
        ingested = _iso(self._now())
        pending = [(item, *self._action(item, agency, ingested)) for item in chunk]
        for attempt in range(self._max_attempts):
            if not pending:
                return
            if attempt:
                stats.retries += 1
                self._sleep(min(30.0, 0.5 * 2 ** attempt))
            try:
                with reporting(self._es, "write events"):
                    response = self._es.bulk(operations=[part for _, head, body in pending for part in (head, body)])
            except StoreUnavailable:
                if attempt + 1 == self._max_attempts:
                    raise
                continue
            retry = []
            rejected: list[DeadLetter] = []
            for (item, head, body), result in zip(pending, response["items"]):
                outcome = result["index"]
                status = outcome.get("status", 500)
                if status < 300:
                    if isinstance(item, Event):
                        stats.events += 1
                    else:
                        stats.dead_letters += 1
                elif status in RETRYABLE:
                    retry.append((item, head, body))
                elif isinstance(item, Event):
                    rejected.append(self._rejected(item, agency, outcome.get("error", {})))
                else:
                    raise StoreUnavailable(f"the dead-letter index refused a record: {outcome.get('error')}")
            if rejected:
                stats.rejected += len(rejected)
                for letter in rejected:
                    stats.reasons[letter.reason] = stats.reasons.get(letter.reason, 0) + 1
                retry.extend((letter, *self._action(letter, agency, ingested)) for letter in rejected)
            pending = retry
        raise StoreUnavailable(f"Elasticsearch kept refusing {len(pending)} documents after {self._max_attempts} attempts")

    @staticmethod
    def _rejected(event: Event, agency: str, error: dict[str, Any]) -> DeadLetter:
        original = event.doc.get("event", {}).get("original", "")
        reason = f"elasticsearch rejected the event: {error.get('type')}: {error.get('reason')}"
        return DeadLetter(id=event.id, raw=str(original), reason=reason, pipeline=str(
            event.doc.get("event", {}).get("dataset", "")), source="", offset=None, agency=agency)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
