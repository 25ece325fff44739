"""How the bulk writer sorts what Elasticsearch refuses, with a scripted `_bulk` (a pure unit test).

The real node's 413 is in tests/integration/test_hostile_inputs.py; here, the splitting rules at
every size: a request refused for its content is halved until each part goes through or holds one
document; that document becomes a dead letter naming its file and offset; a refused item becomes
one too; every document is counted once, when stored; a dead letter the dead-letter index refuses
is cut down once, then the failure is said.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError

from secmon.errors import StoreUnavailable
from secmon.model import DeadLetter, Event
from secmon.store.indices import Indices
from secmon.store.writer import BulkWriter, Origin


def refused(status: int) -> ApiError:
    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0,
                           node=NodeConfig("http", "127.0.0.1", 9200))
    return ApiError("refused", meta=meta, body=None)


class ScriptedBulk:
    """`_bulk` that refuses (413) any request holding a document over `too_big` bytes with others or
    alone, and refuses as items (400) the documents whose body holds `bad`."""

    def __init__(self, too_big: int = 100_000, bad: bytes = b"BAD", dead_letter_index_refuses: bool = False):
        self.too_big = too_big
        self.bad = bad
        self.dead_letter_index_refuses = dead_letter_index_refuses
        self.requests: list[int] = []
        self.stored: dict[str, dict[str, Any]] = {}

    def bulk(self, operations: bytes, filter_path: str) -> dict[str, Any]:
        lines = operations.split(b"\n")  # one NDJSON body, each line ended by a newline (JSON escapes its own)
        assert lines.pop() == b""
        self.requests.append(len(lines) // 2)
        if sum(len(part) for part in lines) > self.too_big and any(len(p) > self.too_big for p in lines):
            raise refused(413)
        items = []
        for head, body in zip(lines[::2], lines[1::2]):
            action = json.loads(head)["index"]
            dead = "deadletter" in action["_index"]
            if (self.bad in body and not dead) or (self.dead_letter_index_refuses and dead):
                items.append({"index": {"status": 400, "error": {"type": "document_parsing_exception",
                                                                  "reason": "bad field"}}})
                continue
            self.stored[action["_id"]] = {"index": action["_index"], **json.loads(body)}
            items.append({"index": {"status": 201}})
        return {"errors": any(item["index"]["status"] >= 300 for item in items), "items": items}


def event(n: int, text: str = "ok") -> Event:
    return Event(id=f"e{n}", doc={"@timestamp": "2026-01-01T00:00:00Z", "message": text,
                                  "event": {"original": text}})


def write(es: ScriptedBulk, items: list[Event | DeadLetter]) -> Any:
    writer = BulkWriter(es, Indices("t"), sleep=lambda s: None)  # type: ignore[arg-type]
    origins = [Origin("event", "a", "/var/log/x.log", 100 * i, "linux-auth") for i in range(len(items))]
    return writer.send(writer.serialize(items, "a", origins))


def test_a_request_too_large_is_halved_until_the_document_is_alone() -> None:
    es = ScriptedBulk()
    items: list[Event | DeadLetter] = [event(i) for i in range(8)]
    items[5] = event(5, "x" * 200_000)
    stats = write(es, items)
    assert (stats.events, stats.dead_letters, stats.rejected) == (7, 0, 1)
    assert es.requests[0] == 8 and 1 in es.requests and stats.splits == 3
    letter = es.stored["e5"]
    assert letter["index"] == "t-deadletter-a" and "413" in letter["error"]["message"]
    assert letter["secmon"] == {"pipeline": "linux-auth", "source": "/var/log/x.log", "offset": 500,
                                "length": 200_000}
    assert letter["event"]["original"] == "x" * (64 << 10)  # the head a dead letter keeps
    assert all(es.stored[f"e{i}"]["index"] == "t-events-a-2026.01" for i in range(8) if i != 5)


def test_refused_items_become_dead_letters_counted_once_with_their_origin() -> None:
    es = ScriptedBulk()
    dead = DeadLetter(id="d1", raw="garbage", reason="line does not match", pipeline="linux-auth",
                      source="/var/log/x.log", offset=7, agency="a")
    stats = write(es, [event(0), event(1, "BAD"), dead])
    assert (stats.events, stats.dead_letters, stats.rejected, stats.retries) == (1, 1, 1, 0)
    assert es.stored["e1"]["secmon"]["offset"] == 100 and "document_parsing_exception" in \
        es.stored["e1"]["error"]["message"]
    assert stats.reasons == {"elasticsearch rejected the event: document_parsing_exception: bad field": 1}


def test_a_dead_letter_the_index_refuses_is_cut_down_once_then_said() -> None:
    es = ScriptedBulk(dead_letter_index_refuses=True)
    with pytest.raises(StoreUnavailable, match="refused even a cut-down record"):
        write(es, [event(0, "BAD")])
