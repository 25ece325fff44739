"""Apply a pipeline to one raw record: an ECS event, or a dead letter with the reason."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from secmon.model import DeadLetter, Event, stable_id
from secmon.normalize.convert import CONVERTERS, YearlessClock, parse_timestamp
from secmon.normalize.pipeline import FieldRule, Pipeline


def put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating the parents."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[leaf] = value


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


def _apply_fields(doc: dict[str, Any], rules: tuple[FieldRule, ...], groups: Mapping[str, str | None]) -> None:
    for rule in rules:
        raw = groups.get(rule.source)
        if raw is None or raw == "":
            continue  # an empty capture (e.g. "rhost= ") means "not present"
        try:
            value = CONVERTERS[rule.type](raw)
        except ValueError as exc:
            raise ValueError(f"{rule.target}: {exc}") from None
        if isinstance(value, dict):  # `address` expands into sibling fields
            for key, sub in value.items():
                put(doc, f"{rule.target}.{key}", sub)
        else:
            put(doc, rule.target, value)


class Normalizer:
    """One pipeline applied to one stream (a file, a syslog peer) of one agency.

    It holds the stream's state: the year of yearless timestamps.
    """

    def __init__(self, pipeline: Pipeline, *, agency: str, timezone: str, source: str,
                 now: datetime, year: int | None = None):
        self.pipeline = pipeline
        self.agency = agency
        self.source = source
        self._tz = ZoneInfo(timezone)
        self._clock = YearlessClock(year, now)

    def normalize(self, raw: str, offset: int | None, record_id: str) -> Event | DeadLetter:
        """`record_id` identifies the record in its source (fingerprint + offset)."""
        line = raw.rstrip("\r\n")
        try:
            doc = self._to_doc(line)
        except ValueError as exc:
            return DeadLetter(
                id=stable_id("dead", self.agency, record_id), raw=line, reason=str(exc),
                pipeline=self.pipeline.id, source=self.source, offset=offset, agency=self.agency,
            )
        return Event(id=stable_id("event", self.agency, record_id), doc=doc)

    def _to_doc(self, line: str) -> dict[str, Any]:
        pipeline = self.pipeline
        match = pipeline.header.match(line)
        if match is None:
            raise ValueError(f"line does not match the {pipeline.id} format")
        groups = match.groupdict()
        doc: dict[str, Any] = {}
        stamp = parse_timestamp(groups[pipeline.timestamp_field] or "", pipeline.timestamp_formats, self._tz, self._clock)
        doc["@timestamp"] = stamp.isoformat().replace("+00:00", "Z")
        for key, value in pipeline.set:
            put(doc, key, value)
        _apply_fields(doc, pipeline.fields, groups)
        for pattern in pipeline.patterns:
            if any(groups.get(key) != value for key, value in pattern.when):
                continue
            found = pattern.regex.search(groups.get(pattern.field) or "")
            if found is None:
                continue
            _apply_fields(doc, pattern.fields, found.groupdict())
            for key, value in pattern.set:
                put(doc, key, value)
            break
        put(doc, "event.original", line)
        put(doc, "organization.id", self.agency)
        return doc
