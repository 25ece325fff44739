"""Bulk-write events and dead letters with deterministic ids.

Ids come from the record's identity, and writes use `index` (not `create`), so
shipping the same record twice leaves one document. Documents are serialized
once, to NDJSON lines, so the same bytes go to Elasticsearch or to the spool.
Beside its two lines each document keeps its `Origin` (file, offset, pipeline),
which is never sent: a document Elasticsearch refuses becomes a dead letter
that names where it came from.

Refusals are sorted. 429/5xx items are retried with backoff. An item
Elasticsearch cannot accept (a mapping conflict, say) becomes a dead letter with
the reason, never a loss. A whole request refused for its content (413: too
large; 400: malformed) is split in halves until each part goes through or holds
one document, which then becomes a dead letter too: one bad document never holds
back the others, the spool, or the checkpoints. Each document is counted once,
when it is stored: as an event, a dead letter, or an event Elasticsearch refused.

`event.ingested` is the time a document was *sent*, stamped into the bytes at
each attempt (a placeholder until then): the scheduler scans by ingest time,
so a batch that waited in the spool through an outage must not carry the time
it was read, or a scan that already passed that time would never see it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain, islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import orjson

from secmon.errors import RequestRefused, StoreUnavailable
from secmon.model import DeadLetter, Event
from secmon.store.client import UNAVAILABLE, reporting
from secmon.store.indices import Indices
from secmon.types import add_counts

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

# `errors`: false when every item was stored, which spares sorting the items one by one
ITEM_OUTCOME = "errors,items.*.status,items.*.error"
# What `serialize` writes for event.ingested; `send` replaces it with the time of each attempt. A key with
# quotes unescaped cannot come from inside a string value, and no real time looks like this.
INGESTED_PLACEHOLDER = "\u0000secmon-ingested\u0000"
_PLACEHOLDER_BYTES = b'"ingested":"\\u0000secmon-ingested\\u0000"'
_PLACEHOLDER_COMMA = _PLACEHOLDER_BYTES + b","
RAW_HEAD = 64 << 10  # characters of a refused document's original line its dead letter keeps
LAST_RESORT_RAW = 1024  # ... and of a dead letter the dead-letter index refused

Kind = Literal["event", "dead_letter", "rejected"]
_NO_STAMP: tuple[Any, ...] = (None, None)  # `_stamp_parts` of a stamp in another form: matches no stamp
_new_tuple = tuple.__new__
_orjson_dumps = orjson.dumps
_LINES = itemgetter(0, 1)  # a Doc's (head, body)
_END = (b"",)


class Origin(NamedTuple):  # NamedTuples: one Origin and one Doc are made per document, cheaper than dataclasses
    """Where a document came from; kept beside its bulk lines, never sent."""

    kind: Kind = "event"  # what it counts as once stored; `rejected`: the dead letter of a refused event
    agency: str = ""
    source: str = ""  # file path, syslog peer
    offset: int | None = None
    pipeline: str = ""
    last_resort: bool = False  # a dead letter cut down because the dead-letter index refused it whole

    def encode(self) -> bytes:
        return orjson.dumps(self._asdict())

    @staticmethod
    def decode(data: bytes) -> Origin:
        try:
            fields = orjson.loads(data)
            return Origin(**{k: v for k, v in fields.items() if k in Origin._fields})
        except (orjson.JSONDecodeError, AttributeError, TypeError):  # damaged: the document still goes out
            return Origin()


class Doc(NamedTuple):
    """One document as sent: its bulk action line, its body, and where it came from."""

    head: bytes
    body: bytes
    origin: Origin


@dataclass
class WriteStats:
    events: int = 0
    dead_letters: int = 0
    rejected: int = 0  # events Elasticsearch refused, stored as dead letters (not counted in dead_letters)
    retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # blank lines, and records before the checkpoint when resuming
    spooled_batches: int = 0  # batches written to the spool while Elasticsearch was unreachable
    splits: int = 0  # requests refused for their size or content, sent again in halves

    def add(self, other: WriteStats) -> None:
        add_counts(self, other)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)  # ten times faster than json: serialization is a third of the hot path
    except TypeError:  # what orjson refuses (an integer beyond 64 bits, say) json writes, or names
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


class _Refused(Exception):
    """A request refused for its content: these documents must be sent another way."""

    def __init__(self, docs: list[Doc], reason: str):
        super().__init__(reason)
        self.docs = docs
        self.reason = reason


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
        self._heads: dict[str, bytes] = {}  # index -> its action line up to the id
        self._stamp: tuple[Any, ...] = _NO_STAMP  # the last @timestamp's parts (`_stamp_parts`)

    def write(self, items: Iterable[Event | DeadLetter], agency: str) -> WriteStats:
        stats = WriteStats()
        iterator = iter(items)
        while chunk := list(islice(iterator, self._chunk_size)):
            stats.add(self.send(self.serialize(chunk, agency)))
        return stats

    def serialize(self, items: Iterable[Event | DeadLetter], agency: str,
                  origins: Sequence[Origin] | None = None) -> list[Doc]:
        """Bulk documents for `items` (`origins[i]` says where event i came from); `send` stamps the ingest
        time. A dead letter carries its own origin."""
        read = _iso(self._now())
        default = Origin("event", agency)
        document = self.document
        return [document(item, agency, origins[i] if origins is not None else default, read)
                for i, item in enumerate(items)]

    def document(self, item: Event | DeadLetter, agency: str, origin: Origin, read: str | None = None) -> Doc:
        """The bulk lines of one item (`origin`: where an event came from; a dead letter carries its own),
        the ingest time a placeholder that `send` stamps. `read`: a dead letter's @timestamp (default: now).
        The collector calls this once a line, as each record is normalized (service/collect.py Batcher)."""
        if item.__class__ is Event:  # the common case, `_action` written out
            ident, doc = item[0], item[1]  # (id, doc): a NamedTuple's fields by position
            stamp = doc.get("@timestamp")
            parts = self._stamp
            if stamp is not parts[0] or agency is not parts[1]:  # the normalizer hands one str for one second
                parts = self._stamp_parts(agency, stamp)
            event = doc.get("event")
            if parts is not _NO_STAMP and event.__class__ is dict and "ingested" not in event:
                # The placeholder is spliced into the bytes as the first key of the top-level `event`,
                # neither copying the document (`_action`) nor touching the caller's (frozen) Event.
                # Our normalizers write @timestamp then event; the prefix proves it is the top-level
                # one (a stamp that needed escaping would not match it). Else: `_action`'s copy.
                try:
                    body = _orjson_dumps(doc)
                except TypeError:  # what orjson refuses: `_action` and `_dumps` write it another way
                    body = b""
                if body.startswith(parts[3]):
                    # the id as orjson writes a JSON string (quoted, escaped): cheaper than proving it needs no
                    # escaping. The body's start is replaced by concatenation (a slice and one copy): `replace`
                    # searched for it twice, a count and a find, each preparing its 40-byte pattern anew.
                    return _new_tuple(Doc, (parts[2] + _orjson_dumps(ident) + b"}}",
                                            (parts[4] if event else parts[5]) + body[len(parts[3]):], origin))
        head, body_doc = self._action(item, agency, read or _iso(self._now()))
        if isinstance(item, DeadLetter):
            origin = Origin("dead_letter", item.agency, item.source, item.offset, item.pipeline)
        try:
            return Doc(orjson.dumps(head), orjson.dumps(body_doc), origin)
        except TypeError:  # what orjson refuses: `_dumps` writes it another way
            return Doc(_dumps(head), _dumps(body_doc), origin)

    def _stamp_parts(self, agency: str, stamp: Any) -> tuple[Any, ...]:
        """For a UTC @timestamp ("2005-06-14T15:16:01Z", as pipelines write it): (stamp, agency, the action
        line of its index up to the id's opening quote, the body's bytes up to the first key of its `event`,
        the same with the placeholder spliced in before a key, and into an empty `event`). Consecutive lines
        mostly share a second, so the last stamp's are kept. Another form: no parts (`_action`'s road)."""
        if stamp.__class__ is not str or not (len(stamp) > 7 and stamp[-1] == "Z" and stamp[4] == "-"):
            return _NO_STAMP
        last = self._stamp
        if stamp == last[0] and agency == last[1]:  # equal, but another object: the same parts
            parts: tuple[Any, ...] = (stamp, agency, *last[2:])
        else:
            start = b'{"@timestamp":"' + stamp.encode() + b'","event":{'
            parts = (stamp, agency, self._head(self._event_index(agency, stamp))[:-1], start,
                     start + _PLACEHOLDER_COMMA, start + _PLACEHOLDER_BYTES)
        self._stamp = parts
        return parts

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
            if item.length is not None:
                doc["secmon"]["length"] = item.length
            index = self._indices.deadletter(agency)
        return {"index": {"_index": index, "_id": item.id}}, doc

    def _head(self, index: str) -> bytes:
        """The action line of `index` up to its document id (`{"index":{"_index":"...","_id":"`)."""
        head_line = self._heads.get(index)
        if head_line is None:
            head_line = self._heads[index] = orjson.dumps({"index": {"_index": index, "_id": ""}})[:-3]
        return head_line

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

    def send(self, docs: list[Doc]) -> WriteStats:
        """Write documents; retry what can be retried, split what is refused for its content.
        StoreUnavailable if it never goes through (nothing is counted then: the caller sends it again)."""
        stats = WriteStats()
        parts = [docs]
        while parts:
            try:
                self._send_part(parts.pop(), stats)
            except _Refused as refused:
                if len(refused.docs) > 1:
                    half = len(refused.docs) // 2
                    parts += [refused.docs[half:], refused.docs[:half]]  # the first half goes first
                    stats.splits += 1
                else:
                    parts.append([self._instead(refused.docs[0], f"a bulk request of it alone was refused: "
                                                                 f"{refused.reason}", stats)])
        return stats

    def _send_part(self, docs: list[Doc], stats: WriteStats) -> None:
        pending = docs
        unreachable = 0
        wait = False  # only a retry waits: refused documents go again at once, as dead letters
        for attempt in range(self._max_attempts):
            if not pending:
                return
            if wait:
                stats.retries += 1
                self._sleep(min(30.0, 0.5 * 2 ** attempt))
            stamp = b'"ingested":"' + _iso(self._now()).encode() + b'"'
            try:
                with reporting(self._es, "write events"):
                    # pre-serialized NDJSON lines: the client sends bytes as they are
                    # Only each item's status (and error): the full per-item answer is ~200 bytes an event
                    # that the node writes and the client parses for nothing.
                    # One NDJSON body, stamped with one `replace` (the placeholder cannot be in an action line).
                    # (head, body) of each document and a last b"" (the body ends with its newline without
                    # another copy to add it), chained in C
                    body = b"\n".join(chain(chain.from_iterable(map(_LINES, pending)), _END))
                    response = self._es.bulk(operations=body.replace(_PLACEHOLDER_BYTES, stamp),  # type: ignore[arg-type]
                                             filter_path=ITEM_OUTCOME)
            except RequestRefused as exc:
                raise _Refused(pending, exc.message.removeprefix("Elasticsearch refused to write events: ")) from None
            except StoreUnavailable:
                unreachable += 1
                if attempt + 1 == self._max_attempts or unreachable >= self._unreachable_attempts:
                    raise
                wait = True
                continue
            if "errors" in response and response["errors"] is False:  # every item stored: none to sort
                events = 0
                for doc in pending:
                    if doc[2][0] == "event":  # doc.origin.kind, read once a document
                        events += 1
                    else:
                        self._stored(doc.origin, stats)
                stats.events += events
                return
            pending, wait = self._sort(pending, response["items"], stats)
        if pending:
            raise StoreUnavailable(
                f"Elasticsearch kept refusing {len(pending)} documents after {self._max_attempts} attempts")

    def _sort(self, pending: list[Doc], results: list[dict[str, Any]], stats: WriteStats) -> tuple[list[Doc], bool]:
        """Count what was written; return what to send again (retryable, or refused: as dead letters), and
        whether any of it is a retry (which waits first)."""
        retry = []
        retryable = False
        events = 0
        for doc, result in zip(pending, results):
            outcome = result["index"]
            status = outcome.get("status", 500)
            if status < 300:
                if doc.origin.kind == "event":  # the common case, `_stored` written out (once a document)
                    events += 1
                else:
                    self._stored(doc.origin, stats)
            elif status in UNAVAILABLE:
                retry.append(doc)
                retryable = True
            else:
                error = outcome.get("error", {})
                reason = (f"{error.get('type')}: {error.get('reason')}" if isinstance(error, dict) else str(error))
                retry.append(self._instead(doc, reason, stats))
        stats.events += events
        return retry, retryable

    @staticmethod
    def _stored(origin: Origin, stats: WriteStats) -> None:
        if origin.kind == "event":
            stats.events += 1
        elif origin.kind == "dead_letter":
            stats.dead_letters += 1
        else:
            stats.rejected += 1

    def _instead(self, doc: Doc, reason: str, stats: WriteStats) -> Doc:
        """What to store in place of a document Elasticsearch refused: a refused event becomes a dead letter
        naming its origin; a refused dead letter, a cut-down one. A cut-down one refused: the index is broken."""
        origin = doc.origin
        if origin.last_resort:
            raise StoreUnavailable(f"the dead-letter index refused even a cut-down record: {reason}")
        try:
            body = orjson.loads(doc.body)
            raw = str((body.get("event") or {}).get("original", ""))
        except (orjson.JSONDecodeError, AttributeError):  # a damaged spool line: keep what there is
            body, raw = {}, doc.body.decode("utf-8", "replace")
        ident = _document_id(doc.head)
        if origin.kind == "event":
            why = f"elasticsearch rejected the event: {reason}"
            stats.reasons[why] = stats.reasons.get(why, 0) + 1
            letter = DeadLetter(id=ident, raw=raw[:RAW_HEAD], reason=why, pipeline=origin.pipeline,
                                source=origin.source, offset=origin.offset, agency=origin.agency,
                                length=len(raw.encode()) if len(raw) > RAW_HEAD else None)
            kind: Kind = "rejected"
        else:
            previous = str((body.get("error") or {}).get("message", "")) if isinstance(body, dict) else ""
            letter = DeadLetter(id=ident, raw=raw[:LAST_RESORT_RAW],
                                reason=f"{previous[:1000]}; the dead-letter index refused the record: {reason[:1000]}",
                                pipeline=origin.pipeline, source=origin.source, offset=origin.offset,
                                agency=origin.agency, length=len(raw.encode()))
            kind = origin.kind
        head, letter_doc = self._action(letter, origin.agency, _iso(self._now()))
        return Doc(_dumps(head), _dumps(letter_doc), Origin(kind, origin.agency, origin.source, origin.offset,
                                                            origin.pipeline, last_resort=origin.kind != "event"))


def _document_id(head: bytes) -> str:
    try:
        return str(orjson.loads(head)["index"]["_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):  # a damaged spool line: named by its bytes
        return "unreadable-" + hashlib.sha256(head).hexdigest()[:32]
