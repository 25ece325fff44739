"""What to ask the cluster for the rules over one scan window: pure query composition.

`store/` executes these queries and `service/scan.py` wires the two; nothing
here does I/O. A scan asks in two steps, so that its cost does not grow with
the number of rules:

1. The probe: one size-0 search per rule, `window AND rule`, all sent in one
   _msearch. Each says whether the rule has
   new matches, when they happened, and the values of the rule's first group-by
   field among them (the candidate groups). A rule with no new match costs
   nothing more. A window of few events skips these searches: its events are
   read once and matched in-process (inwindow.py), which gives the same answers.
   (Not one search with a filter aggregation per rule: the node
   builds every filter on every segment of every index, even where the window
   matches nothing, so a quiet window cost seconds of node time; a search whose
   window range cannot match a shard is rewritten to match nothing there.)
2. The fetch: for each rule that matched, its matches around the new ones
   (`context`), narrowed to the candidate groups. Grouping and windows then run
   in Python (`findings.py`) on whole groups: a finding needs an event of the
   window, so a group without a new match can never produce one. A single rule over
   an event.ingested window needs its new matches only (`window_only`): when the
   window was read in-process they are already here, and it fetches nothing. A correlation
   over an event.ingested window fetches its context without ids, then the few ids its
   findings read (`idless`, windowing/idless.py).

The per-rule path (`rule_window_query`, `candidate_groups`, `narrowed_query`)
asks rule by rule; the scan keeps it as the reference the batched path is
tested against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from secmon.detect.sigma.compile import Query, and_, or_, query_fields
from secmon.detect.compiled import CompiledRule
from secmon.model import ScanWindow
from secmon.types import AGENCY_FIELD, iso, parse_iso

MAX_NARROWING_GROUPS = 500  # beyond that the bool query costs more than it saves


def window_filter(start: datetime, end: datetime, field: str = "@timestamp") -> Query:
    return {"range": {field: {"gte": iso(start), "lt": iso(end), "format": "strict_date_optional_time"}}}


def matching(rule: CompiledRule) -> Query:
    """The rule's query, and the events with a value too long to index that it may miss (checked
    exactly later, compile.py "Long values")."""
    return rule.query if rule.long_query is None else or_([rule.query, rule.long_query])


def rule_window_query(rule: CompiledRule, start: datetime, end: datetime) -> Query:
    """The rule's matches in [start - timespan, end)."""
    return and_([window_filter(start - rule.timespan, end), matching(rule)])


def group_fields(rule: CompiledRule) -> tuple[str, ...]:
    return (AGENCY_FIELD, *rule.group_by)


def hit_fields(rule: CompiledRule) -> tuple[str, ...]:
    """Doc values each hit must carry for windowing (besides @timestamp)."""
    return (AGENCY_FIELD, *rule.fields)


def fetch_fields(rule: CompiledRule, window: ScanWindow) -> tuple[str, ...]:
    """`hit_fields`, plus the window's field when it is not @timestamp: it says which hits are new."""
    return hit_fields(rule) + (() if window.field == "@timestamp" else (window.field,))
def long_fields(rule: CompiledRule) -> tuple[str, ...]:
    """Fields a hit with a value too long to index needs whole, to be checked exactly (compile.py)."""
    if rule.long_query is None:
        return ()
    queries = [rule.query, rule.refine, *(q for leaf in (rule.correlation.leaves() if rule.correlation else [])
                                          for q in (leaf.query, leaf.refine))]
    return tuple(sorted(set().union(*(query_fields(q) for q in queries if q is not None))))


def candidate_groups(rule: CompiledRule, counts: Iterable[tuple[Mapping[str, Any], int]]) -> list[Mapping[str, Any]]:
    """Groups with enough matches in the window to possibly fire (a correlation's necessary condition)."""
    return [key for key, count in counts if count >= rule.threshold]


def narrowed_query(rule: CompiledRule, query: Query, candidates: list[Mapping[str, Any]]) -> Query:
    """`query` restricted to the candidate groups, unless there are too many for that to pay."""
    if len(candidates) > MAX_NARROWING_GROUPS:
        return query
    fields = group_fields(rule)
    return and_([query, {"bool": {"should": [and_([{"term": {f: key[f]}} for f in fields]) for key in candidates],
                                  "minimum_should_match": 1}}])


def in_groups(rule: CompiledRule, hits: Iterable[Mapping[str, Any]], candidates: list[Mapping[str, Any]]
              ) -> list[Mapping[str, Any]]:
    """The hits that belong to a candidate group (what a non-narrowed query also returned)."""
    fields = group_fields(rule)
    wanted = {tuple(str(key[f]) for f in fields) for key in candidates}
    return [hit for hit in hits
            if all(f in hit["fields"] for f in fields)
            and tuple(str(hit["fields"][f][0]) for f in fields) in wanted]


# --- the batched scan: probe, then fetch ---------------------------------------------------

def narrowing_field(rule: CompiledRule) -> str:
    """The field candidate groups are narrowed on: the first group-by field (else the agency).

    One field, not the whole group key: a `terms` query on it keeps every hit of the candidate
    groups, and a superset is exact (`findings` drops the groups without a new match), where
    whole keys would need a bool query of hundreds of clauses, with missing and multi-valued
    fields to spell out."""
    return (*rule.group_by, AGENCY_FIELD)[0]


def probe_search(rule: CompiledRule, window: ScanWindow) -> dict[str, Any]:
    """A size-0 search: the rule's new matches in the window, when they happened, their candidate groups.

    One per rule, even where rules share a query: a rule whose search the node refuses
    (say, a group-by field it cannot aggregate) must fail alone."""
    field = narrowing_field(rule)
    return {"size": 0, "track_total_hits": False,
            "query": and_([window_filter(window.start, window.end, window.field), matching(rule)]),
            "aggs": {"first": {"min": {"field": "@timestamp"}}, "last": {"max": {"field": "@timestamp"}},
                     # One bucket more than narrowing takes: a full list says "too many", never a silent cut.
                     "keys": {"terms": {"field": field, "size": MAX_NARROWING_GROUPS + 1}},
                     "lacking": {"missing": {"field": field}}}}


@dataclass(frozen=True)
class Fresh:
    """What the probe saw of one rule's new matches."""

    first: datetime  # @timestamp of the oldest and the newest new match
    last: datetime
    keys: tuple[Any, ...] | None  # narrowing-field values among them; None: too many to narrow on
    lacking: bool  # some new match has no narrowing-field value (a single rule groups it as "(none)")


def moment(value: float) -> datetime:
    """A date as the node's aggregations and epoch_millis doc values give it."""
    return datetime.fromtimestamp(value / 1000, timezone.utc)


def read_probe(rule: CompiledRule, aggregations: Mapping[str, Any]) -> Fresh | None:
    """What the rule's probe search found (None: no new match; no aggregations: no events index yet)."""
    if aggregations.get("first", {}).get("value") is None:
        return None
    buckets = aggregations["keys"]["buckets"]
    # key_as_string where the node formats the key (booleans, dates): what a terms query reads back.
    keys = tuple(b.get("key_as_string", b["key"]) for b in buckets)
    return Fresh(moment(aggregations["first"]["value"]), moment(aggregations["last"]["value"]),
                 keys if len(keys) <= MAX_NARROWING_GROUPS else None,
                 aggregations["lacking"]["doc_count"] > 0)


def worth_fetching(rule: CompiledRule, fresh: Fresh) -> bool:
    """False when no group can fire: a correlation only counts events that have every group-by field."""
    return rule.kind == "single" or fresh.keys is None or bool(fresh.keys)


def window_only(rule: CompiledRule, window: ScanWindow) -> bool:
    """Whether the rule's findings over this window need its new matches only, no context.

    A single rule over an event.ingested window (the scheduler's): each window's new matches
    make their own bursts, and the incident folds them into the bursts an earlier window
    found (a finding's `joins`, incidents/grouping.py): counts add up window by window
    (each event is new in one window only), and a burst cut by a window's edge is one
    occurrence again where its parts are less than the rule's timespan apart. So its hits come
    from the window's own documents (inwindow.rule_hits), or from a search of the window
    alone; never the timespan around them, which for a rule of a 6-hour suppression is
    thousands of hits re-read every five minutes. A correlation counts across windows and
    keeps its context; a @timestamp window (`secmon scan --from --to`) keeps the bursts that
    reach into it from before, as the per-rule path does."""
    return rule.kind == "single" and window.field != "@timestamp"


def context(rule: CompiledRule, window: ScanWindow, fresh: Fresh) -> Query:
    """The range a rule's bursts are evaluated over.

    A @timestamp window keeps the per-rule semantics: [start - timespan, end). A window-only
    rule searches the window itself. Otherwise an event.ingested window searches one timespan
    on both sides of its new matches: a correlation's window that holds a new match starts
    at most one timespan before it, and a late event (ingested now, stamped earlier) can
    complete a window with events ingested before it that are stamped up to one timespan after it."""
    if window_only(rule, window):
        return window_filter(window.start, window.end, window.field)
    if window.field == "@timestamp":
        return window_filter(window.start - rule.timespan, window.end)
    return {"range": {"@timestamp": {"gte": iso(fresh.first - rule.timespan), "lte": iso(fresh.last + rule.timespan),
                                     "format": "strict_date_optional_time"}}}


def fetch_query(rule: CompiledRule, window: ScanWindow, fresh: Fresh) -> Query:
    """The rule's matches in its context, narrowed to the groups that have a new match."""
    parts = [context(rule, window, fresh), matching(rule)]
    if fresh.keys is not None and not window_only(rule, window):  # every window match is new: all count
        field = narrowing_field(rule)
        either: list[Query] = [{"terms": {field: list(fresh.keys)}}] if fresh.keys else []
        if fresh.lacking and rule.kind == "single":
            either.append({"bool": {"must_not": [{"exists": {"field": field}}]}})
        parts.append({"bool": {"should": either, "minimum_should_match": 1}})
    return and_(parts)


def ids_query(rule: CompiledRule, window: ScanWindow, fresh: Fresh, spans: list[tuple[str, str]]) -> Query:
    """`fetch_query`'s hits in these @timestamp ranges (doc values, both ends included): those whose
    ids the findings read (windowing/idless.py)."""
    ranges: list[Query] = [{"range": {"@timestamp": {"gte": first, "lte": last, "format": "strict_date_optional_time"}}}
                           for first, last in spans]
    return and_([fetch_query(rule, window, fresh), {"bool": {"should": ranges, "minimum_should_match": 1}}])


def idless(rule: CompiledRule, window: ScanWindow) -> bool:
    """Whether the rule's context is fetched without ids first (windowing/idless.py): a correlation
    over an event.ingested window, whose new hits the window field's doc value tells apart."""
    return rule.kind != "single" and window.field != "@timestamp"


def findings_start(window: ScanWindow) -> datetime | None:
    """For a @timestamp window, a burst counts when it reaches the window (its last event is new)."""
    return window.start if window.field == "@timestamp" else None


def _millis(when: datetime) -> datetime:
    # Elasticsearch dates keep milliseconds and truncate the bounds of a range query the same way.
    return when - timedelta(microseconds=when.microsecond % 1000)


def new_event_ids(hits: Iterable[Mapping[str, Any]], window: ScanWindow) -> frozenset[str] | None:
    """Ids of the hits whose window field is in the window (None for a @timestamp window: see findings_start)."""
    if window.field == "@timestamp":
        return None
    low, high = _millis(window.start), _millis(window.end)
    new = set()
    for hit in hits:
        values = hit.get("fields", {}).get(window.field)
        if values and low <= parse_iso(str(values[0])) < high:
            new.add(str(hit["_id"]))
    return frozenset(new)
