"""What one entity-window looks like, computed two ways from one definition. Pure.

`aggregation` composes the request Elasticsearch answers with one paged composite aggregation
(entity x window, one sub-aggregation per feature); `parse_bucket` reads a bucket back. `in_process`
computes the very same `WindowStats` from ECS documents (offline files, benchmarks, and the template
detectors whose template ids exist only in Python). Either way the result is a `WindowStats`; turning
it into model inputs needs the vocabularies learned at training (`secmon.detect.anomaly.matrix`).

Semantics follow Elasticsearch so the two agree: a condition holds when any value of the field
equals one of the allowed values; keyword values longer than the field's `ignore_above` are not
indexed; terms are the `limit` most frequent values (count desc, then value asc).
"""

from __future__ import annotations

import calendar
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from secmon.detect.anomaly.detector import PAIR, RANGE, TEMPLATE_FIELD, Condition, Detector, Feature, WorkingHours
from secmon.detect.fields import as_keyword, field_types, field_values
from secmon.types import AGENCY_FIELD, iso

PAGE = 1000  # composite buckets per request: memory stays bounded whatever the window
SLICE_WINDOWS = 6  # windows per time slice: each slice's pages only visit that slice's events
DISTINCT_PRECISION = 3000  # cardinality is exact in practice below this many values
VALUE_KINDS = ("by", "new", "rare")  # features that keep the window's values (vocabularies come at training)


@dataclass(frozen=True)
class WindowStats:
    """One entity over one window, before vocabularies: what both computations must agree on."""

    agency: str
    entity: str
    start: datetime  # the window's start (aligned to the window length since the epoch, UTC)
    count: int  # events of the detector in the window
    first: datetime
    last: datetime
    scalars: Mapping[str, float] = field(default_factory=dict)  # count, ratio, distinct, sum/avg/max, off_hours, shape
    values: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # by/new/rare: the top values -> events
    other: Mapping[str, int] = field(default_factory=dict)  # by/new/rare: events of values beyond the top


# --- one definition, the Elasticsearch way -------------------------------------------------

def term_filter(condition: Condition) -> list[dict[str, Any]]:
    """One clause per field: its allowed values (terms) or number ranges ("400..499")."""
    out = []
    for name, values in condition:
        exact = [v for v in values if not RANGE.match(v)]
        spans = [RANGE.match(v) for v in values if RANGE.match(v)]
        should: list[dict[str, Any]] = [{"terms": {name: exact}}] if exact else []
        should += [{"range": {name: {"gte": float(m.group(1)), "lte": float(m.group(2))}}} for m in spans if m]
        out.append(should[0] if len(should) == 1 else {"bool": {"should": should, "minimum_should_match": 1}})
    return out


def events_query(detector: Detector, agency: str | None, start: datetime, end: datetime) -> dict[str, Any]:
    """The detector's events of one agency (None: every agency) in [start, end)."""
    filters: list[dict[str, Any]] = [
        {"range": {"@timestamp": {"gte": iso(start), "lt": iso(end), "format": "strict_date_optional_time"}}},
        {"exists": {"field": detector.entity}}, *term_filter(detector.events)]
    if agency is not None:
        filters.append({"term": {AGENCY_FIELD: agency}})
    return {"bool": {"filter": filters}}


def window_ms(detector: Detector) -> int:
    return int(detector.window.total_seconds() * 1000)


def slices(detector: Detector, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at window boundaries into slices of SLICE_WINDOWS windows. A composite
    aggregation visits every matching event for each page it returns, so paging over a month costs
    pages x events; per slice it costs about one pass over the events."""
    size = detector.window * SLICE_WINDOWS
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    cut = epoch + ((start - epoch) // size + 1) * size
    out = []
    while cut < end:
        out.append((start, cut))
        start, cut = cut, cut + size
    out.append((start, end))
    return out


def aggregation(detector: Detector, timezone_name: str, after: Mapping[str, Any] | None = None,
                page: int = PAGE) -> dict[str, Any]:
    """The `aggs` of one page: entity x window buckets with a sub-aggregation per feature."""
    sources = [{"entity": {"terms": {"field": detector.entity}}},
               {"window": {"date_histogram": {"field": "@timestamp", "fixed_interval": f"{window_ms(detector)}ms"}}}]
    composite: dict[str, Any] = {"size": page, "sources": sources}
    if after:
        composite["after"] = dict(after)
    subs: dict[str, Any] = {"first": {"min": {"field": "@timestamp"}}, "last": {"max": {"field": "@timestamp"}}}
    for feature in detector.features:
        subs.update(_feature_aggs(feature, detector.working_hours, timezone_name))
    return {"windows": {"composite": composite, "aggs": subs}}


def _filter(condition: Condition) -> dict[str, Any]:
    return {"filter": {"bool": {"filter": term_filter(condition)}}}


def _feature_aggs(feature: Feature, hours: WorkingHours, timezone_name: str) -> dict[str, Any]:
    name, kind = feature.name, feature.kind
    if kind == "count":
        return {name: _filter(feature.where)} if feature.where else {}
    if kind == "ratio":
        return {f"{name}.num": _filter(feature.where), **({f"{name}.den": _filter(feature.of)} if feature.of else {})}
    if kind == "distinct":
        return {name: {"cardinality": {"field": feature.field, "precision_threshold": DISTINCT_PRECISION}}}
    if kind in ("sum", "avg", "max"):
        return {name: {kind: {"field": feature.field}}}
    if kind == "off_hours":
        return {name: {"date_histogram": {"field": "@timestamp", "calendar_interval": "1h", "time_zone": timezone_name,
                                          "min_doc_count": 1}}}
    # by, new, rare, shape: the window's most frequent values, as terms order them
    order = [{"_count": "desc"}, {"_key": "asc"}]
    if feature.also:  # pairs: the top first values, and under each its top second values (no multi_terms:
        # it is an x-pack aggregation, absent from OSS-only nodes)
        return {name: {"terms": {"field": feature.field, "size": feature.limit, "order": order},
                       "aggs": {"also": {"terms": {"field": feature.also, "size": feature.limit, "order": order}}}}}
    return {name: {"terms": {"field": feature.field, "size": feature.limit, "order": order}}}


def parse_bucket(detector: Detector, agency: str, bucket: Mapping[str, Any], timezone_name: str) -> WindowStats:
    count = int(bucket["doc_count"])
    scalars: dict[str, float] = {}
    values: dict[str, dict[str, int]] = {}
    other: dict[str, int] = {}
    zone = ZoneInfo(timezone_name)
    for feature in detector.features:
        name, kind = feature.name, feature.kind
        if kind == "count":
            scalars[name] = float(bucket[name]["doc_count"] if feature.where else count)
        elif kind == "ratio":
            den = bucket[f"{name}.den"]["doc_count"] if feature.of else count
            scalars[name] = _share(bucket[f"{name}.num"]["doc_count"], den)
        elif kind in ("distinct", "sum", "avg", "max"):
            scalars[name] = float(bucket[name]["value"] or 0.0)
        elif kind == "off_hours":
            off = sum(b["doc_count"] for b in bucket[name]["buckets"]
                      if is_off_hours(datetime.fromtimestamp(b["key"] / 1000, zone), detector.working_hours))
            scalars[name] = _share(off, count)
        else:
            if feature.also:
                pairs = {f"{_key(b['key'])}{PAIR}{_key(c['key'])}": int(c["doc_count"])
                         for b in bucket[name]["buckets"] for c in b["also"]["buckets"]}
            else:
                pairs = {_key(b["key"]): int(b["doc_count"]) for b in bucket[name]["buckets"]}
            if kind == "shape":
                scalars[name] = shape(pairs, feature)
            else:
                values[name] = pairs
                other[name] = int(bucket[name].get("sum_other_doc_count", 0))
    return WindowStats(agency=agency, entity=_key(bucket["key"]["entity"]),
                       start=_from_ms(int(bucket["key"]["window"])), count=count,
                       first=_from_ms(int(bucket["first"]["value"])), last=_from_ms(int(bucket["last"]["value"])),
                       scalars=scalars, values=values, other=other)


def _key(value: Any) -> str:
    if isinstance(value, list):  # multi_terms: the two fields' values
        return PAIR.join(_key(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return as_keyword(value)


# --- the same definition, in-process -------------------------------------------------------

Template = Any  # a callable: message text -> template id (secmon.detect.anomaly.templates.Templates.id_of)


def in_process(detector: Detector, docs: Iterable[Mapping[str, Any]], timezone_name: str,
               start: datetime | None = None, end: datetime | None = None, agency: str | None = None,
               template_of: Template | None = None) -> Iterator[WindowStats]:
    """Every entity-window of `docs` (any order), as the aggregation would return them, in key order."""
    zone = ZoneInfo(timezone_name)
    groups: dict[tuple[str, str, int], list[_Seen]] = {}
    lo = _ms(start) if start else None
    hi = _ms(end) if end else None
    for doc in docs:
        stamp = _doc_ms(doc)
        if stamp is None or (lo is not None and stamp < lo) or (hi is not None and stamp >= hi):
            continue
        agencies = [str(a) for a in field_values(doc, AGENCY_FIELD)] or [""]
        if agency is not None and agency not in agencies:
            continue
        if not holds(detector.events, doc):
            continue
        seen = _Seen(doc, stamp, template_of(doc) if template_of else None)
        window = stamp - stamp % window_ms(detector)
        for entity in dict.fromkeys(keywords(doc, detector.entity)):
            groups.setdefault((agency if agency is not None else agencies[0], entity, window), []).append(seen)
    for (agency_id, entity, window) in sorted(groups, key=lambda k: (k[0], k[1], k[2])):
        yield _stats(detector, agency_id, entity, window, groups[(agency_id, entity, window)], zone)


@dataclass(frozen=True)
class _Seen:
    doc: Mapping[str, Any]
    ms: int
    template: str | None


def _stats(detector: Detector, agency: str, entity: str, window: int, seen: list[_Seen], zone: ZoneInfo
           ) -> WindowStats:
    count = len(seen)
    scalars: dict[str, float] = {}
    values: dict[str, dict[str, int]] = {}
    other: dict[str, int] = {}
    for feature in detector.features:
        name, kind = feature.name, feature.kind
        if kind == "count":
            scalars[name] = float(sum(1 for s in seen if holds(feature.where, s.doc)))
        elif kind == "ratio":
            den = sum(1 for s in seen if holds(feature.of, s.doc)) if feature.of else count
            scalars[name] = _share(sum(1 for s in seen if holds(feature.where, s.doc)), den)
        elif kind == "distinct":
            scalars[name] = float(len({v for s in seen for v in _values(s, feature.field)}))
        elif kind in ("sum", "avg", "max"):
            numbers = [n for s in seen for n in numbers_of(s.doc, feature.field)]
            scalars[name] = (float(sum(numbers)) if kind == "sum" else
                             (sum(numbers) / len(numbers) if kind == "avg" else float(max(numbers)))) if numbers else 0.0
        elif kind == "off_hours":
            off = sum(1 for s in seen if is_off_hours(datetime.fromtimestamp(s.ms / 1000, zone), detector.working_hours))
            scalars[name] = _share(off, count)
        else:
            ranked = _ranked(seen, feature.field)
            top = dict(ranked[: feature.limit])
            if feature.also:
                top = {f"{first}{PAIR}{second}": n for first in top
                       for second, n in _ranked([s for s in seen if first in _values(s, feature.field)],
                                                feature.also)[: feature.limit]}
            if kind == "shape":
                scalars[name] = shape(top, feature)
            else:
                values[name] = top
                other[name] = sum(c for _, c in ranked[feature.limit:])
    return WindowStats(agency=agency, entity=entity, start=_from_ms(window), count=count,
                       first=_from_ms(min(s.ms for s in seen)), last=_from_ms(max(s.ms for s in seen)),
                       scalars=scalars, values=values, other=other)


def _ranked(seen: list[_Seen], name: str) -> list[tuple[str, int]]:
    """Values by the number of events that have them, as terms order them (count desc, value asc)."""
    counts = Counter(v for s in seen for v in dict.fromkeys(_values(s, name)))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _values(seen: _Seen, name: str) -> list[str]:
    if name == TEMPLATE_FIELD:
        return [seen.template] if seen.template is not None else []
    return keywords(seen.doc, name)


def keywords(doc: Mapping[str, Any], name: str) -> list[str]:
    """The field's values as Elasticsearch indexes them (keywords past `ignore_above` are not)."""
    types = field_types()
    kind = types.type_of(name)
    out = []
    for value in field_values(doc, name):
        if kind == "long" or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            number = _number(value)
            if number is not None:
                out.append(_key(number))
            continue
        text = as_keyword(value)
        if len(text) <= types.limit(name):
            out.append(text)
    return out


def holds(condition: Condition, doc: Mapping[str, Any]) -> bool:
    """Every field of the condition has a value among the allowed ones (a term query on each)."""
    return all(_allowed(doc, name, allowed) for name, allowed in condition)


def _allowed(doc: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> bool:
    spans = [(float(m.group(1)), float(m.group(2))) for m in map(RANGE.match, allowed) if m]
    if any(v in allowed for v in keywords(doc, name)):
        return True
    return bool(spans) and any(lo <= n <= hi for n in numbers_of(doc, name) for lo, hi in spans)


def numbers_of(doc: Mapping[str, Any], name: str) -> list[float]:
    return [n for n in map(_number, field_values(doc, name)) if n is not None]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --- shared by both ------------------------------------------------------------------------

def is_off_hours(local: datetime, hours: WorkingHours) -> bool:
    return local.weekday() not in hours.days or not hours.start <= local.hour < hours.end


def shape(pairs: Mapping[str, int], feature: Feature) -> float:
    """The window's strings by `feature.measure`: mean over its events, or the max."""
    if not pairs:
        return 0.0
    measured = [(measure(value, feature.measure), n) for value, n in pairs.items()]
    if feature.stat == "max":
        return max(m for m, _ in measured)
    return sum(m * n for m, n in measured) / sum(n for _, n in measured)


def measure(text: str, how: str) -> float:
    if not text:
        return 0.0
    if how == "length":
        return float(len(text))
    if how == "nonalnum":
        return sum(1 for c in text if not c.isalnum()) / len(text)
    counts = Counter(text)  # entropy: bits per character
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _share(part: float, whole: float) -> float:
    return float(part) / whole if whole else 0.0


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, timezone.utc).replace(microsecond=(ms % 1000) * 1000)


def _ms(moment: datetime) -> int:
    return calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000


def _doc_ms(doc: Mapping[str, Any]) -> int | None:
    stamps = field_values(doc, "@timestamp")
    if not stamps:
        return None
    value = stamps[0]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return _ms(moment)
