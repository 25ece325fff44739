"""Apply a pipeline to one raw record: an ECS event, a dead letter with the reason, or a skip.

This is the ingest hot path: everything that can be prepared once (regular
expressions, dotted paths, converters) is prepared when the pipeline loads or
the stream opens, and a record is never deep-copied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo

from secmon.model import DeadLetter, Event, stable_id
from secmon.normalize.convert import CONVERTERS, YearlessClock, parse_timestamp
from secmon.normalize.formats import Parsed, Values, make_parser
from secmon.normalize.pipeline import Condition, FieldRule, Pipeline


def put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating the parents."""
    put_path(doc, dotted.split("."), value)


def put_path(doc: dict[str, Any], path: tuple[str, ...] | list[str], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            # a scalar already sits where a parent must go (a flattener's `user` string
            # under a pipeline's `user.name`): the more specific field wins
            child = node[part] = {}
        node = child
    node[path[-1]] = list(value) if isinstance(value, list) else value  # never share a pipeline's list


def get(doc: Mapping[str, Any], dotted: str) -> Any:
    """Read `a.b.c` from a nested dict (flat dotted keys are accepted too); None when absent."""
    if dotted in doc:
        return doc[dotted]
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _value(values: Values, name: str) -> Any:
    value = values.get(name)
    if value is None and "." in name:
        value = get(values, name)
    return value


@dataclass(frozen=True)
class Skipped:
    """A record the pipeline drops on purpose (a drop/keep condition, a header line): counted, not stored."""

    reason: str
    offset: int | None


Result = Event | DeadLetter | Skipped


def _holds(condition: Condition, values: Values) -> bool:
    for name, allowed in condition.tests:
        value = _value(values, name)
        if value is None:
            return False
        if (("true" if value else "false") if isinstance(value, bool) else str(value)) not in allowed:
            return False
    return True


def _apply_fields(doc: dict[str, Any], rules: tuple[FieldRule, ...], values: Values,
                  fallback: Values | None = None) -> None:
    for rule in rules:
        raw = values.get(rule.source)
        if raw is None and fallback is not None:
            raw = _value(fallback, rule.source)
        elif raw is None and "." in rule.source:
            raw = get(values, rule.source)
        if raw is None and rule.alternatives:
            raw = next((v for v in (_value(values, n) for n in rule.alternatives) if v is not None), None)
        if rule.map is not None and raw is not None:
            raw = rule.map.get(str(raw), raw)
        if raw is None or raw == "" or raw == []:
            continue  # an empty capture (e.g. "rhost= ") or a value mapped to "" means "not present"
        if rule.prefix:
            raw = rule.prefix + str(raw)
        if rule.type == "string" and type(raw) is str:
            value = raw  # the common case, without a call
        else:
            try:
                value = CONVERTERS[rule.type](raw)
            except ValueError as exc:
                raise ValueError(f"{rule.target}: {exc}") from None
        if isinstance(value, dict) and rule.type == "address":  # expands into sibling fields
            for key, sub in value.items():
                put_path(doc, (*rule.path, key), sub)
        else:
            put_path(doc, rule.path, value)


class Normalizer:
    """One pipeline applied to one stream (a file, a syslog peer) of one agency.

    It holds the stream's state: the year of yearless timestamps, the columns of
    a Zeek or W3C header, and how many records were skipped.
    """

    def __init__(self, pipeline: Pipeline, *, agency: str, timezone: str, source: str,
                 now: datetime, year: int | None = None):
        self.pipeline = pipeline
        self.agency = agency
        self.source = source
        self.skipped = 0
        self._now = now.astimezone(dt_timezone.utc)
        stamp = pipeline.timestamp
        self._tz = ZoneInfo(stamp.timezone if stamp and stamp.timezone else timezone)
        self._clock = YearlessClock(year, now)
        self._parse: Callable[[str], Parsed | None] = make_parser(pipeline.parse, _flattener(pipeline.format))
        self._last_stamp: tuple[Any, str] = (None, "")  # consecutive lines often share a second

    def normalize(self, raw: str, offset: int | None, record_id: str) -> Result:
        """`record_id` identifies the record in its source (fingerprint + offset)."""
        line = raw.rstrip("\r\n")
        try:
            doc = self._to_doc(line)
        except ValueError as exc:
            return DeadLetter(
                id=stable_id("dead", self.agency, record_id), raw=line, reason=str(exc) or "invalid record",
                pipeline=self.pipeline.id, source=self.source, offset=offset, agency=self.agency,
            )
        if isinstance(doc, str):
            self.skipped += 1
            return Skipped(doc, offset)
        return Event(id=stable_id("event", self.agency, record_id), doc=doc)

    def _to_doc(self, line: str) -> dict[str, Any] | str:
        """The ECS document, or the reason the record is skipped."""
        pipeline = self.pipeline
        parsed = self._parse(line)
        if parsed is None:
            return "header line"
        values, base = parsed
        if any(_holds(c, values) for c in pipeline.drop):
            return "dropped by the pipeline's drop condition"
        if pipeline.keep and not any(_holds(c, values) for c in pipeline.keep):
            return "not kept by the pipeline's keep conditions"
        doc: dict[str, Any] = base if base is not None else {}
        if pipeline.timestamp is not None or "@timestamp" not in doc:
            doc["@timestamp"] = self._timestamp(values)
        for path, value in pipeline.set:
            put_path(doc, path, value)
        _apply_fields(doc, pipeline.fields, values)
        for pattern in pipeline.patterns:
            if pattern.when.tests and not _holds(pattern.when, values):
                continue
            if pattern.regex is None:
                _apply_fields(doc, pattern.fields, values)
            else:
                found = pattern.regex.search(str(_value(values, pattern.field) or ""))
                if found is None:
                    continue
                _apply_fields(doc, pattern.fields, found.groupdict(), values)
            for path, value in pattern.set:
                put_path(doc, path, value)
            break
        for lookup in pipeline.enrich:
            key = get(doc, lookup.field)
            for path, value in lookup.table.get(str(key), ()) if key is not None else ():
                put_path(doc, path, value)
        put_path(doc, ("event", "original"), line)
        put_path(doc, ("organization", "id"), self.agency)
        return doc

    def _timestamp(self, values: Values) -> str:
        stamp = self.pipeline.timestamp
        if stamp is None:
            raise ValueError("the record has no timestamp")
        if stamp.join:
            parts = [_value(values, name) for name in stamp.join]
            raw: Any = " ".join(str(p) for p in parts) if all(p not in (None, "") for p in parts) else None
        else:
            raw = next((v for v in (_value(values, n) for n in stamp.fields) if v not in (None, "")), None)
        if raw is None:
            if stamp.optional:
                return self._now.isoformat().replace("+00:00", "Z")
            raise ValueError(f"no timestamp: {' / '.join(stamp.fields or stamp.join)} is missing")
        if raw == self._last_stamp[0]:
            return self._last_stamp[1]
        text = parse_timestamp(raw, stamp.formats, self._tz, self._clock).isoformat().replace("+00:00", "Z")
        self._last_stamp = (raw, text)
        return text


def _flattener(fmt: str) -> Callable[[Mapping[str, Any]], dict[str, Any]] | None:
    if fmt not in ("evtx", "winlog"):
        return None
    # Imported here: only Windows pipelines need it, and it belongs to the Sigma engineer's module.
    from secmon.normalize import winlog

    return winlog.flatten_evtx if fmt == "evtx" else winlog.flatten_winlogbeat_like
