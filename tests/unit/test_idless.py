"""detect/windowing/idless.py: which ids a correlation's findings read, and naming hits fetched without."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from secmon.detect.windowing import idless
from secmon.detect.windowing.findings import SAMPLE_IDS
from secmon.model import Finding, Severity
from secmon.types import parse_iso

GROUP = ("organization.id", "source.ip")


def hit(ms: int, ip: str = "10.0.0.1", ingested: str = "old", ident: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"fields": {"@timestamp": [f"2026-11-29T08:00:{ms // 1000:02d}.{ms % 1000:03d}Z"],
                                        "organization.id": ["so-tttt"], "source.ip": [ip],
                                        "event.ingested": [ingested]}}
    return found if ident is None else {**found, "_id": ident}


def finding(samples: tuple[str, ...]) -> Finding:
    at = parse_iso("2026-11-29T08:00:00Z")
    return Finding("r", "r", Severity("high"), "so-tttt", (("source.ip", "10.0.0.1"),), at, at + timedelta(1),
                   len(samples), samples)


def test_only_unnamed_samples_and_ties_of_a_group_with_a_new_hit_are_wanted() -> None:
    hits = idless.provisional([hit(0), hit(10), hit(10), hit(20), hit(30, "10.0.0.2"), hit(30, "10.0.0.2"),
                               hit(40, ingested="new")])
    ids = [h["_id"] for h in hits]
    hits[6]["_id"] = "known-new"  # named by the window's documents
    found = [finding((ids[0], "known-new"))]
    times = idless.wanted(hits, found, frozenset({"known-new"}), GROUP)
    # ids[0]: a sample; 10 ms: two hits of the new hit's group; not the tie of a group without a new hit
    assert times == [hits[0]["fields"]["@timestamp"][0], hits[1]["fields"]["@timestamp"][0]]
    assert idless.wanted(hits, [], frozenset(), GROUP) == []  # nothing found, no new hit: nothing to ask
    assert SAMPLE_IDS == 20


def test_fill_names_the_hits_at_the_times_asked_or_says_the_index_changed() -> None:
    hits = idless.provisional([hit(0), hit(10), hit(10), hit(20)])
    ranges = idless.spans(hits, [hits[1]["fields"]["@timestamp"][0]])
    assert ranges == [(hits[1]["fields"]["@timestamp"][0],) * 2]
    named = idless.fill(hits, ranges, [hit(10, ident="b"), hit(10, ident="a")])
    assert named is not None and [h["_id"] for h in named][1:3] == ["a", "b"]
    assert idless.unnamed(named[0]["_id"]) and idless.unnamed(named[3]["_id"])
    assert idless.fill(hits, ranges, [hit(10, ident="a")]) is None  # one went away
    assert idless.fill(hits, ranges, [hit(10, ident="a"), hit(10, "10.9.9.9", ident="b")]) is None  # another came


def test_spans_ask_near_times_as_one_range() -> None:
    hits = idless.provisional([hit(ms) for ms in range(0, 30000, 500)])  # 60 times, 500 ms apart
    stamps = [h["fields"]["@timestamp"][0] for h in hits]
    assert idless.spans(hits, [stamps[0], stamps[5], stamps[59]]) == [(stamps[0], stamps[5]), (stamps[59],) * 2]
    named = idless.fill(hits, [(stamps[0], stamps[5])], [hit(ms, ident=f"i{ms}") for ms in range(0, 3000, 500)])
    assert named is not None and [h["_id"] for h in named[:6]] == [f"i{ms}" for ms in range(0, 3000, 500)]


def test_known_names_new_hits_from_the_window_documents_only_one_to_one() -> None:
    hits = idless.provisional([hit(0, ingested="new"), hit(10, ingested="new"), hit(10, ingested="new2"),
                               hit(20, ingested="new")])
    new = frozenset(h["_id"] for h in hits)
    documents = [{"_id": ident, "fields": {"@timestamp": [str(1795939200000 + ms)], "source.ip": ["10.0.0.1"]}}
                 for ident, ms in (("d0", 0), ("d10a", 10), ("d10b", 10))]
    named = idless.known(hits, new, documents, "source.ip")
    # 0 ms: one document; 10 ms: two documents for two hits that differ (their event.ingested): left
    # unnamed, fetched by id; 20 ms: no document
    assert named[0]["_id"] == "d0" and all(idless.unnamed(h["_id"]) for h in named[1:])
