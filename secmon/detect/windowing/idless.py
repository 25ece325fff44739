"""A correlation's context fetched without ids, and the few ids its findings need: pure, no I/O.

Over an event.ingested window a correlation reads its matches one timespan around the new
ones (plan.context): thousands of hits a tick, each fetched with its `_id`. The id is a stored
field, read from the compressed blocks that hold the whole document, where the other fields
are doc values (columns): measured on the library benchmark's data, loading the ids was about
three quarters of the node's time for these fetches. Yet the windowing reads ids for three
things only, and the rest of a finding (its times, its count) comes from the hits' times and
fields:
- which hits are new: the window field's doc value says so (plan.new_event_ids), and the
  window's documents, already read in-process, give the ids of most new hits (`known`);
- the order of hits of one group at the same millisecond (findings.py sorts by time, then id);
- a finding's sample ids: the first SAMPLE_IDS events of its burst.

So the context is fetched without ids (`provisional` names each hit with a placeholder), and
`wanted` says the times whose hits need their real ids: the placeholders among a finding's
samples, and those that share their millisecond with another hit of their group. The scan
fetches every hit in those times (`spans`, plan.ids_query) and `fill` gives them their ids, after
checking that the hits it fetched are the ones it had (the index may have changed in between:
then it fetches the context with ids, as before). Findings are computed again until no
placeholder is left where an id is read; they are then the findings of the fetch with ids.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from secmon.detect.fields import IGNORED
from secmon.model import Finding
from secmon.types import parse_iso

PLACEHOLDER = "~unfetched:"  # no stored event id starts so (ids are hex digests or the collector's)

Hit = dict[str, Any]


def provisional(hits: Iterable[Mapping[str, Any]]) -> list[Hit]:
    """The hits, each named by a placeholder (they were fetched without their `_id`)."""
    return [{**hit, "_id": f"{PLACEHOLDER}{n:09d}"} for n, hit in enumerate(hits)]


def unnamed(ident: str) -> bool:
    return ident.startswith(PLACEHOLDER)


def _moment(stamp: Any) -> int:
    return _millis(str(stamp))


@functools.lru_cache(maxsize=1 << 16)  # the rules' contexts share most of their hits, and so their times
def _millis(text: str) -> int:
    """A doc value of @timestamp in epoch milliseconds, whether written so or as a date."""
    try:
        return round(float(text))  # epoch_millis, as the window search asks it
    except ValueError:
        return round(parse_iso(text).timestamp() * 1000)  # (a date without an offset is refused, not local)


def _values(hit: Mapping[str, Any], field: str) -> tuple[str, ...]:
    found = hit.get("fields", {}).get(field, ())
    return (str(found[0]),) if len(found) == 1 else tuple(sorted(str(v) for v in found))


def known(hits: Sequence[Hit], new: AbstractSet[str], documents: Iterable[Mapping[str, Any]], narrowing: str
          ) -> list[Hit]:
    """The new hits named by the window's documents that matched the rule (inwindow.match_documents,
    their @timestamp and narrowing-field doc values): where one document has the hit's millisecond
    and narrowing values, or several whose hits are alike in everything the windowing reads."""
    by_key: dict[tuple[int, tuple[str, ...]], list[str]] = {}
    for document in documents:
        stamps = document.get("fields", {}).get("@timestamp")
        if stamps:
            by_key.setdefault((_moment(stamps[0]), _values(document, narrowing)), []).append(str(document["_id"]))
    fresh: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for n, hit in enumerate(hits):
        if hit["_id"] in new and IGNORED not in hit["fields"]:  # that one needs its whole values, by id
            fresh.setdefault((_moment(hit["fields"]["@timestamp"][0]), _values(hit, narrowing)), []).append(n)
    named = list(hits)
    for key, positions in fresh.items():
        idents = sorted(by_key.get(key, ()))
        if len(idents) != len(positions) or len(positions) > 1 and len({_whole(hits[n]) for n in positions}) != 1:
            continue  # not one to one, or hits that differ: their real ids are fetched (`wanted`)
        for n, ident in zip(positions, idents):
            named[n] = {**hits[n], "_id": ident}
    return named


def _whole(hit: Mapping[str, Any]) -> tuple[Any, ...]:
    """Everything the windowing reads of a hit but its id."""
    fields = hit.get("fields", {})
    return (tuple(sorted((f, tuple(str(v) for v in values)) for f, values in fields.items())),
            tuple(sorted(hit.get("matched_queries", ()))))


def wanted(hits: Sequence[Hit], found: Iterable[Finding], new: AbstractSet[str], group_fields: Sequence[str]
           ) -> list[str]:
    """The @timestamp doc values of the hits still unnamed whose ids the findings read: samples, and
    ties within a group that has a new hit (their order is by id). Empty: the findings are final."""
    times: set[str] = set()
    at = {str(hit["_id"]): str(hit["fields"]["@timestamp"][0]) for hit in hits}
    for finding in found:
        times.update(at[i] for i in finding.sample_event_ids if unnamed(i))
    # A value too long to index: the hit is checked on its whole values (findings.py), read by id.
    times.update(at[str(hit["_id"])] for hit in hits if unnamed(str(hit["_id"])) and IGNORED in hit["fields"])
    stamps = Counter(at.values())
    tied = [hit for hit in hits if stamps[at[str(hit["_id"])]] > 1]  # at a millisecond with another hit
    if tied:
        # The group as findings.py keys it (the first value of each field), a missing field included.
        def group(hit: Hit) -> tuple[str | None, ...]:
            return tuple(str(hit["fields"][f][0]) if f in hit["fields"] else None for f in group_fields)
        groups = {group(hit) for hit in hits if hit["_id"] in new}
        shared = Counter((at[str(hit["_id"])], group(hit)) for hit in tied)
        times.update(at[str(hit["_id"])] for hit in tied
                     if unnamed(str(hit["_id"])) and (g := group(hit)) in groups and shared[(at[str(hit["_id"])], g)] > 1)
    return sorted(times)


GAP = 20  # asked times at most this many other times apart are asked as one range


def spans(hits: Sequence[Hit], times: Iterable[str]) -> list[tuple[str, str]]:
    """The asked times as few @timestamp ranges (first, last, both included): a node answers a few
    ranges at once, where a list of single dates costs it a query each. A sample is a run of
    consecutive hits, so most findings ask one range; hits of other groups inside come along."""
    asked = set(times)
    order = sorted({str(hit["fields"]["@timestamp"][0]) for hit in hits}, key=_moment)
    found: list[tuple[str, str]] = []
    last = 0
    for n, stamp in enumerate(order):
        if stamp not in asked:
            continue
        if found and n - last <= GAP:
            found[-1] = (found[-1][0], stamp)
        else:
            found.append((stamp, stamp))
        last = n
    return found


def fill(hits: Sequence[Hit], ranges: Sequence[tuple[str, str]], fetched: Iterable[Mapping[str, Any]]
         ) -> list[Hit] | None:
    """The hits, those in `ranges` (`spans`) named by `fetched` (every hit in them, with ids; a hit with
    a value too long to index with its whole values too). None when `fetched` is not the same hits
    (the index changed in between): the caller then fetches with ids."""
    bounds = [(_moment(first), _moment(last)) for first, last in ranges]
    ours: dict[tuple[Any, ...], list[int]] = {}
    for n, hit in enumerate(hits):
        at = _moment(hit["fields"]["@timestamp"][0])
        if any(first <= at <= last for first, last in bounds):
            ours.setdefault(_key(hit), []).append(n)
    theirs: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for one in fetched:
        theirs.setdefault(_key(one), []).append(one)
    if {k: len(v) for k, v in ours.items()} != {k: len(v) for k, v in theirs.items()}:
        return None
    named = list(hits)
    for key, positions in ours.items():
        if key[0] == IGNORED and len(positions) > 1:
            return None  # alike only in part: which is which is not known
        have = {str(hits[n]["_id"]) for n in positions if not unnamed(str(hits[n]["_id"]))}
        free = sorted((one for one in theirs[key] if str(one["_id"]) not in have), key=lambda one: str(one["_id"]))
        if not have <= {str(one["_id"]) for one in theirs[key]} or len(free) != len(positions) - len(have):
            return None
        spare = iter(free)
        for n in positions:
            if unnamed(str(hits[n]["_id"])):
                one = next(spare)  # its fields: the same doc values, and the whole long values
                named[n] = {**hits[n], "_id": str(one["_id"]), "fields": dict(one["fields"])}
    return named


def _key(hit: Mapping[str, Any]) -> tuple[Any, ...]:
    """What tells a hit from others at its time: everything the windowing reads; for a hit with a value
    too long to index, its time, leaves and fields named in `_ignored` (the whole values come by id)."""
    fields = hit.get("fields", {})
    if IGNORED in fields:
        return (IGNORED, str(fields["@timestamp"][0]), tuple(sorted(map(str, fields[IGNORED]))),
                tuple(sorted(hit.get("matched_queries", ()))))
    return _whole(hit)
