"""Apply a pipeline to one raw record: an ECS event, a dead letter with the reason, or a skip.

This is the ingest hot path: everything that can be prepared once (regular
expressions, dotted paths, converters) is prepared when the pipeline loads or
the stream opens, and a record is never deep-copied.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from datetime import timezone as dt_timezone
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from secmon.model import DeadLetter, Event, stable_id
from secmon.normalize.codegen import Apply, Patterns, Sets, compile_fields, compile_patterns
from secmon.normalize.convert import CONVERTERS, SYSLOG, YearlessClock, parse_timestamp, syslog_time
from secmon.normalize.formats import Parsed, Values, make_parser
from secmon.normalize.pipeline import Condition, FieldRule, Pattern, Pipeline
from secmon.normalize.urls import URL_PROBLEM_TAG, Decoded, decode_path, decode_query
from secmon.types import format_duration, iso, utcnow

_new_event = tuple.__new__  # Event is a NamedTuple: made without its Python-level constructor, once a line

# The regular-expression parser is private to `re` (sre_parse before 3.11): it only finds the literal
# text a pattern needs (`required_text`), a shortcut. A Python without it runs every search instead.
try:
    from re import _constants as re_constants  # type: ignore[attr-defined]
    from re import _parser as re_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised by a test that hides the modules
    re_parser = re_constants = None


def put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating the parents."""
    put_path(doc, dotted.split("."), value)


def put_path(doc: dict[str, Any], path: tuple[str, ...] | list[str], value: Any) -> None:
    if len(path) == 2:  # most ECS fields (source.ip, event.action): no loop
        child = doc.get(path[0])
        if not isinstance(child, dict):
            child = doc[path[0]] = {}
        child[path[1]] = list(value) if isinstance(value, list) else value
        return
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
    for part in dotted.split("."):  # (a dict first: isinstance(x, Mapping) is a slow ABC check)
        if (type(node) is not dict and not isinstance(node, Mapping)) or part not in node:
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


@dataclass(frozen=True)
class TimeBounds:
    """The event times a collector stores: none older than the agency's retention (the retention job
    would delete it at once, after it had created an index for a month long gone) and none further
    ahead than `future` (a wrong clock, or a crafted record). Every monthly index an agency can get
    is then inside this window, so hostile timestamps cannot create indices without end."""

    retention: timedelta
    future: timedelta = timedelta(days=1)
    clock: Callable[[], datetime] = field(default=utcnow, compare=False)

    def window(self) -> tuple[str, str]:
        """(oldest, newest) accepted, as the first 19 characters of an ISO time in UTC (they sort as text)."""
        now = self.clock()
        return iso(now - self.retention)[:19], iso(now + self.future)[:19]

    def refuse(self, stamp: str, window: tuple[str, str]) -> str:
        if stamp[:19] < window[0]:
            return (f"event time {stamp} is older than the agency's retention ({format_duration(self.retention)}, "
                    f"before {window[0]}Z): not stored (agencies[].retention keeps older logs)")
        return (f"event time {stamp} is more than {format_duration(self.future)} ahead of now "
                f"(after {window[1]}Z): a wrong clock or a crafted record; not stored")



URL_DECODERS: dict[str, Callable[[str], Decoded]] = {"url_path": decode_path, "url_query": decode_query}


def _holds(condition: Condition, values: Values) -> bool:
    return _holds_all(condition.tests, values)


def _holds_all(tests: tuple[tuple[str, frozenset[str]], ...], values: Values) -> bool:
    for name, allowed in tests:
        value = _value(values, name)
        if value is None:
            return False
        if (("true" if value else "false") if isinstance(value, bool) else str(value)) not in allowed:
            return False
    return True


def _apply_fields(doc: dict[str, Any], rules: tuple[FieldRule, ...], values: Values,
                  fallback: Values | None = None) -> None:
    """The interpreter of field rules (compiled pipelines inline its common cases: codegen.py)."""
    for rule in rules:
        _apply_rule(doc, rule, values, fallback, values.get(rule.source))


def _apply_rule(doc: dict[str, Any], rule: FieldRule, values: Values, fallback: Values | None, raw: Any) -> None:
    """One rule, given `raw`, the value it names in `values` (None when absent there)."""
    if rule.plain and raw.__class__ is str and raw:
        child = doc.get(rule.path[0])
        if not isinstance(child, dict):
            child = doc[rule.path[0]] = {}
        child[rule.path[1]] = raw
        return
    if raw is None and fallback is not None:
        raw = _value(fallback, rule.source)
    elif raw is None and "." in rule.source:
        raw = get(values, rule.source)
    if raw is None and rule.alternatives:
        raw = next((v for v in (_value(values, n) for n in rule.alternatives) if v is not None), None)
    if rule.map is not None and raw is not None:
        raw = rule.map.get(str(raw), raw)
    if raw is None or raw == "" or raw == []:
        return  # an empty capture (e.g. "rhost= ") or a value mapped to "" means "not present"
    if rule.prefix:
        raw = rule.prefix + str(raw)
    if rule.type == "string" and type(raw) is str:
        value = raw  # the common case, without a call
    elif rule.type in URL_DECODERS:
        decoded = URL_DECODERS[rule.type](str(raw))
        value = decoded.text
        if decoded.problems:  # never silent: such events are tagged, so they can be counted
            tags = doc.setdefault("tags", [])
            if isinstance(tags, list) and URL_PROBLEM_TAG not in tags:
                tags.append(URL_PROBLEM_TAG)
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


def _interpreted(rules: tuple[FieldRule, ...], *, before: Sets = (), after: Sets = ()) -> Apply:
    """What `compile_fields` compiles, interpreted: `put_path` for each `set:` pair, `_apply_fields`."""
    def apply(doc: dict[str, Any], values: Values, fallback: Values | None) -> None:
        for path, value in before:
            put_path(doc, path, value)
        _apply_fields(doc, rules, values, fallback)
        for path, value in after:
            put_path(doc, path, value)
    return apply


class Normalizer:
    """One pipeline applied to one stream (a file, a syslog peer) of one agency.

    It holds the stream's state: the year of yearless timestamps, the columns of
    a Zeek or W3C header, and how many records were skipped.
    """

    def __init__(self, pipeline: Pipeline, *, agency: str, timezone: str, source: str,
                 now: datetime, year: int | None = None, bounds: TimeBounds | None = None, compiled: bool = True):
        self.pipeline = pipeline
        self.agency = agency
        self.source = source
        self.skipped = 0
        self._bounds = bounds
        self._window = ("", "")
        self._window_until = 0.0  # monotonic time the window is recomputed (a follower runs for months)
        self._now = now.astimezone(dt_timezone.utc)
        stamp = pipeline.timestamp
        self._tz = ZoneInfo(stamp.timezone if stamp and stamp.timezone else timezone)
        self._clock = YearlessClock(year, now)
        self._event_digest = hashlib.sha256(f"event\x1f{agency}\x1f".encode("utf-8"))
        self._parse: Callable[[str], Parsed | None] = make_parser(pipeline.parse, _flattener(pipeline.format))
        self._last_stamp: tuple[Any, str] = (None, "")  # consecutive lines often share a second
        self._last_minute: tuple[str | None, str] = (None, "")  # and a minute: see `_minute`
        self._stamp_field = (stamp.fields[0] if stamp and not stamp.join and len(stamp.fields) == 1
                             and "." not in stamp.fields[0] else "")
        self._checked: str | None = None  # the last time found inside the bounds (the same object: cached)
        # Compiled once a stream: the pipeline's `set:` and `fields:` as one function, and each pattern's
        # `fields:` and `set:` as another (codegen.py), tried in the order `_dispatch` gives.
        # (`compiled=False`: the interpreter, what tests compare the compiled functions with)
        # (a line's document holds only its time when they run: `_to_doc`)
        fresh = frozenset({"@timestamp"}) if pipeline.parse.kind == "line" else None
        # A line's values are exactly its capture groups (`groupdict`: each one, a text or None), and a
        # pattern's fallback values are the record's.
        groups = (frozenset(pipeline.parse.regex.groupindex)
                  if pipeline.parse.kind == "line" and pipeline.parse.regex is not None else None)
        self._fields = (compile_fields(pipeline.fields, _apply_rule, before=pipeline.set, fresh=fresh,
                                       names=groups or frozenset()) if compiled
                        else _interpreted(pipeline.fields, before=pipeline.set))
        self._dispatch = _dispatch(_compiled_patterns(groups or frozenset()) if compiled else _interpreted_patterns,
                                   tuple(Step(pattern, pattern.when,
                                              compile_fields(pattern.fields, _apply_rule, after=pattern.set,
                                                             fallback_names=groups, names=_values_of(pattern, groups))
                                              if compiled else _interpreted(pattern.fields, after=pattern.set))
                                         for pattern in pipeline.patterns))
        self._patterns_for = self._dispatch.choose
        if compiled and pipeline.parse.kind == "line" and self._stamp_field and not (pipeline.drop or pipeline.keep):
            self._to_doc = self._line_to_doc()  # type: ignore[assignment]  # the same steps, written out

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
        if doc.__class__ is str:  # a skip's reason (a call of isinstance costs more, once a line)
            self.skipped += 1
            return Skipped(doc, offset)
        digest = self._event_digest.copy()  # = stable_id("event", agency, record_id), its prefix hashed once
        digest.update(record_id.encode() if record_id.__class__ is str else str(record_id).encode())
        return _new_event(Event, (digest.hexdigest()[:32], doc))  # = Event(id, doc) in one call, once a line

    # A stream's state, for normalizing its records in several processes (service/collect_workers.py):
    # the year clock's. A stream whose parser keeps state of its own (a Zeek or W3C header's columns)
    # has no `stateless_parser` and must be normalized in one process.
    @property
    def stateless_parser(self) -> bool:
        return not (self.pipeline.parse.kind == "csv" and self.pipeline.parse.header)

    def state(self) -> tuple[int | None, int | None]:
        return self._clock.state

    def restore(self, state: tuple[int | None, int | None]) -> None:
        """Continue as if the records before had left this state (forgetting the last timestamp's cache)."""
        self._clock.restore(state)
        self._last_stamp, self._last_minute = (None, ""), (None, "")

    @property
    def first_time(self) -> tuple[datetime, tzinfo, int] | None:
        """Since `restore`: the first yearless time, its zone and the year it got (None: there was none)."""
        return self._clock.first

    def consistent(self, first: tuple[datetime, tzinfo, int] | None, actual: tuple[int | None, int | None]) -> bool:
        """Whether records normalized from some assumed state, whose `first_time` was `first`, got the times
        they get after `actual`: only the first yearless time's year depends on the state before it (the
        clock's state after it, and so every later year, follows from that year and that time)."""
        if first is None:
            return True
        partial, zone, year = first
        return self._clock.year_after(actual, partial, zone) == year

    def refuse(self, raw: str, reason: str, offset: int | None, record_id: str, length: int | None = None
               ) -> DeadLetter:
        """A record that never reaches the pipeline (too long, unreadable): a dead letter with the reason."""
        return DeadLetter(id=stable_id("dead", self.agency, record_id), raw=raw.rstrip("\r\n"), reason=reason,
                          pipeline=self.pipeline.id, source=self.source, offset=offset, agency=self.agency,
                          length=length)

    def _check_time(self, stamp: str) -> None:
        bounds = self._bounds
        assert bounds is not None
        if time.monotonic() >= self._window_until:
            self._window, self._window_until = bounds.window(), time.monotonic() + 10
        if len(stamp) < 20 or stamp[4] != "-" or stamp[10] != "T":  # pipelines write iso(): 2005-06-14T15:16:01Z
            raise ValueError(f"event time {stamp[:80]!r} is not an ISO time")
        if not self._window[0] <= stamp[:19] <= self._window[1]:
            self._window = bounds.window()  # the edge moved with the clock: decide on the current one
            if not self._window[0] <= stamp[:19] <= self._window[1]:
                raise ValueError(bounds.refuse(stamp, self._window))

    def _to_doc(self, line: str) -> dict[str, Any] | str:
        """The ECS document, or the reason the record is skipped."""
        pipeline = self.pipeline
        parsed = self._parse(line)
        if parsed is None:
            return "header line"
        values, base = parsed
        if pipeline.drop and any(_holds(c, values) for c in pipeline.drop):
            return "dropped by the pipeline's drop condition"
        if pipeline.keep and not any(_holds(c, values) for c in pipeline.keep):
            return "not kept by the pipeline's keep conditions"
        doc: dict[str, Any] = base if base is not None else {}
        if pipeline.timestamp is not None or "@timestamp" not in doc:
            last = self._last_stamp  # consecutive lines often share a second: `_timestamp`'s cache, read here
            raw = values.get(self._stamp_field) if self._stamp_field else None
            doc["@timestamp"] = stamp = (last[1] if raw is not None and raw == last[0] and raw.__class__ is str
                                         else self._timestamp(values))
        else:
            stamp = doc["@timestamp"]
        if stamp is not self._checked and self._bounds is not None:  # the same object: checked already
            self._check_time(stamp)
            self._checked = stamp
        self._fields(doc, values, None)  # the pipeline's `set:`, then its `fields:`
        self._patterns_for(values)(doc, values)  # the first pattern that holds and matches, if any
        if pipeline.enrich:
            self._enrich(doc)
        event = doc.get("event")  # put_path(doc, ("event", "original"), line), written out: once a line
        if not isinstance(event, dict):
            event = doc["event"] = {}
        event["original"] = line
        organization = doc.get("organization")
        if not isinstance(organization, dict):
            organization = doc["organization"] = {}
        organization["id"] = self.agency
        return doc

    def _enrich(self, doc: dict[str, Any]) -> None:
        for lookup in self.pipeline.enrich:
            key = get(doc, lookup.field)
            for path, value in lookup.table.get(str(key), ()) if key is not None else ():
                put_path(doc, path, value)

    def _line_to_doc(self) -> Callable[[str], dict[str, Any] | str]:
        """`_to_doc` for a line pipeline whose time is one capture group and that keeps every line (the
        syslog sources): the same steps without those that cannot apply, what they read looked up once."""
        regex = self.pipeline.parse.regex
        assert regex is not None  # a line pipeline has one
        match, stamp_field, timestamp = regex.match, self._stamp_field, self._timestamp
        fields, enrich, agency = self._fields, bool(self.pipeline.enrich), self.agency
        # A line's values are texts or None: the table gives the patterns for the dispatch field's value.
        field, table, untested = self._dispatch.field, self._dispatch.table, self._dispatch.untested
        choose = self._dispatch.choose
        # Where no field, `set:` or lookup of the pipeline names `event` itself or anything under
        # `organization`, the `set:` has made `event` a dict by now and no `organization` is there.
        paths = [rule.path for rule in self.pipeline.fields] + [path for path, _ in self.pipeline.set]
        paths += [p for pattern in self.pipeline.patterns for p in (*(r.path for r in pattern.fields),
                                                                    *(path for path, _ in pattern.set))]
        paths += [path for lookup in self.pipeline.enrich for pairs in lookup.table.values() for path, _ in pairs]
        event_made = (any(len(path) > 1 and path[0] == "event" for path, _ in self.pipeline.set)
                      and not any(tuple(path) == ("event",) for path in paths))
        no_organization = not any(path[:1] == ("organization",) for path in paths)

        def to_doc(line: str) -> dict[str, Any] | str:
            found = match(line)
            if found is None:
                raise ValueError("line does not match the pipeline's format")
            values = found.groupdict()
            raw = values.get(stamp_field)
            last = self._last_stamp
            stamp = last[1] if raw is not None and raw == last[0] and raw.__class__ is str else timestamp(values)
            doc: dict[str, Any] = {"@timestamp": stamp}
            if stamp is not self._checked and self._bounds is not None:
                self._check_time(stamp)
                self._checked = stamp
            fields(doc, values, None)
            # (None, the value of a group that did not take part, is no key: `untested`, as `choose` says)
            (table.get(values.get(field), untested) if field else choose(values))(doc, values)  # type: ignore[arg-type]
            if enrich:
                self._enrich(doc)
            if event_made:
                doc["event"]["original"] = line
            else:
                event = doc.get("event")
                if not isinstance(event, dict):
                    event = doc["event"] = {}
                event["original"] = line
            if no_organization:
                doc["organization"] = {"id": agency}
            else:
                organization = doc.get("organization")
                if not isinstance(organization, dict):
                    organization = doc["organization"] = {}
                organization["id"] = agency
            return doc
        return to_doc

    def _timestamp(self, values: Values) -> str:
        stamp = self.pipeline.timestamp
        if stamp is None:
            raise ValueError("the record has no timestamp")
        if self._stamp_field:  # one field, not dotted: the common case
            raw: Any = values.get(self._stamp_field)
            if raw is not None and raw == self._last_stamp[0]:  # consecutive lines often share a second
                return self._last_stamp[1]
            if raw == "":
                raw = None
        elif stamp.join:
            parts = [_value(values, name) for name in stamp.join]
            raw = " ".join(str(p) for p in parts) if all(p not in (None, "") for p in parts) else None
        else:
            raw = None
            for name in stamp.fields:
                value = _value(values, name)
                if value is not None and value != "":
                    raw = value
                    break
        if raw is None:
            if stamp.optional:
                return self._now.isoformat().replace("+00:00", "Z")
            raise ValueError(f"no timestamp: {' / '.join(stamp.fields or stamp.join)} is missing")
        if raw == self._last_stamp[0]:
            return self._last_stamp[1]
        minute = self._last_minute
        if raw.__class__ is str and raw[:-2] == minute[0] and raw[-2:] in SECONDS:
            text = minute[1] + raw[-2:] + "Z"  # another second of the minute read last
        else:
            text = parse_timestamp(raw, stamp.formats, self._tz, self._clock).isoformat().replace("+00:00", "Z")
            self._last_minute = _minute(raw, text, stamp.formats)
        self._last_stamp = (raw, text)
        return text


SECONDS = frozenset(f"{second:02d}" for second in range(60))


def _minute(raw: Any, text: str, formats: tuple[str, ...]) -> tuple[str | None, str]:
    """(`raw` less its seconds, `text` less its seconds and Z) when the syslog format read `raw` ("Jun 14
    15:16:01", the first format) and its time in UTC kept those seconds (an offset of whole minutes), else
    (None, ""). Any other second of that minute, read next, gives the same text but for its seconds: the
    syslog format reads it too, and the clock, which has just given this month its year, gives it the same
    year and stays as it is (a year turns only when the month goes back)."""
    if (raw.__class__ is str and formats and formats[0] == SYSLOG and len(text) == 20 and raw[-3:-2] == ":"
            and text[17:19] == raw[-2:] and syslog_time(" ".join(raw.split())) is not None):
        return raw[:-2], text[:17]
    return None, ""


def _compiled_patterns(texts: frozenset[str]) -> Callable[[tuple[Tried, ...]], Patterns]:
    """`texts`: the names a record's values always hold, each a text or None (a line's groups)."""
    def make(candidates: tuple[Tried, ...]) -> Patterns:
        return compile_patterns(candidates, _holds_all, _value, texts)
    return make


def _values_of(pattern: Pattern, groups: frozenset[str] | None) -> frozenset[str]:
    """The names the values a pattern's fields are applied to always hold: its regex's groups (they are
    `found.groupdict()`), or without a regex the record's (a line's groups; of other formats none)."""
    if pattern.regex is not None:
        return frozenset(pattern.regex.groupindex)
    return groups or frozenset()


def _interpreted_patterns(candidates: tuple[Tried, ...]) -> Patterns:
    """The patterns `candidates` tried in order: the first whose tests hold and whose regex matches applies
    its fields (codegen.compile_patterns writes this loop out for each tuple of candidates)."""
    def run(doc: dict[str, Any], values: Values) -> None:
        searched, text = None, ""  # the field last searched and its text (patterns mostly search one field)
        for tests, name, search, needle, apply in candidates:
            if tests and not _holds_all(tests, values):
                continue
            if search is None:
                apply(doc, values, None)
            else:
                if name != searched:
                    searched, text = name, str(_value(values, name) or "")
                if needle not in text:
                    continue
                found = search(text)
                if found is None:
                    continue
                apply(doc, found.groupdict(), values)
            return
    return run


class Step(NamedTuple):
    """A pattern as tried: its condition (less what the dispatch already decided) and its compiled fields."""

    pattern: Pattern
    when: Condition
    apply: Apply

    @property
    def tried(self) -> Tried:
        """What the loop of `_to_doc` reads, looked up once (this runs several times a line)."""
        regex = self.pattern.regex
        return Tried(self.when.tests, self.pattern.field, regex.search if regex is not None else None,
                     required_text(regex) if regex is not None else "", self.apply)


class Tried(NamedTuple):
    tests: tuple[tuple[str, frozenset[str]], ...]  # the condition's tests still to make
    field: str  # the value `search` is given
    search: Callable[[str], re.Match[str] | None] | None  # None: the pattern has no regex
    needle: str  # text every match contains ("": none known): where it is absent, `search` is not run
    apply: Apply


def required_text(regex: re.Pattern[str]) -> str:
    """The longest text every match of `regex` contains, or "" (a case-insensitive pattern: none is taken).

    Most patterns of a source fail on most of its lines (an sshd line is tried against a dozen
    sshd patterns); a substring test in C is far cheaper than a failed search. Only literals
    that every match consumes count: those in the pattern's top-level sequence and in the plain
    groups of it; anything optional, repeated, alternated or a look-around ends a run.
    """
    if regex.flags & re.IGNORECASE or re_parser is None:
        return ""
    runs: list[str] = []

    def walk(items: Any) -> bool:
        run: list[str] = []
        for op, value in items:
            if op is re_constants.LITERAL:
                run.append(chr(value))
                continue
            runs.append("".join(run))
            run = []
            if op is re_constants.SUBPATTERN:
                _group, add_flags, _del_flags, inner = value
                if add_flags & re.IGNORECASE or not walk(inner):
                    return False
        runs.append("".join(run))
        return True

    try:
        whole = walk(re_parser.parse(regex.pattern, regex.flags))
    # It compiled, so it parses; should it not, or should the private parser's shapes have changed
    # (a tuple of another length), no text is required and every search runs.
    except (re.error, AttributeError, TypeError, ValueError):
        return ""
    return max(runs, key=len, default="") if whole else ""


class Dispatch(NamedTuple):
    """`choose(values)`: the function trying the patterns worth trying on a record; it is `table`'s entry
    for the text of value `field` (not dotted), `untested` for any other text or none."""

    choose: Callable[[Values], Patterns]
    field: str  # "" when no pattern has a condition, or the field is dotted: use `choose`
    table: dict[str, Patterns]
    untested: Patterns


def _dispatch(make: Callable[[tuple[Tried, ...]], Patterns], steps: tuple[Step, ...]) -> Dispatch:
    """The patterns worth trying on a record, in order, chosen by the value of the field that most
    `when` conditions test (linux-auth: the program). A pattern whose condition on that field
    cannot hold is left out; one that is chosen because its condition on that field holds is not
    tested on it again (`_holds` compares the same text the table is keyed by); every other test
    is still made by `_holds`. Each tuple of patterns is made into the function that tries them by
    `make`, once."""
    tested = Counter(name for step in steps for name, _ in step.when.tests)
    if not tested:
        every = make(tuple(step.tried for step in steps))
        return Dispatch(lambda values: every, "", {}, every)
    field = tested.most_common(1)[0][0]

    def allowed(step: Step) -> frozenset[str] | None:
        return next((texts for name, texts in step.when.tests if name == field), None)

    # Each step's regex is read once (`tried` parses it for its required text): the table below names
    # a step once for every text it allows, hundreds of times in all (a tenth of a second at start-up).
    prepared = [(step, allowed(step), step.tried) for step in steps]

    def decided(step: Step, tried: Tried) -> Tried:
        return tried._replace(tests=tuple(test for test in step.when.tests if test[0] != field))

    made: dict[tuple[Tried, ...], Patterns] = {}  # the same candidates (sshd, sshd-session): one function

    def runner(candidates: tuple[Tried, ...]) -> Patterns:
        if candidates not in made:
            made[candidates] = make(candidates)
        return made[candidates]

    untested = runner(tuple(tried for _, texts, tried in prepared if texts is None))
    table = {text: runner(tuple(tried if texts is None else decided(step, tried)
                                for step, texts, tried in prepared if texts is None or text in texts))
             for _, allowing, _ in prepared for text in allowing or ()}
    plain = "." not in field

    def candidates(values: Values) -> Patterns:
        value = values.get(field) if plain else _value(values, field)
        if value is None:
            return untested
        if value.__class__ is str:
            return table.get(value, untested)
        return table.get(("true" if value else "false") if isinstance(value, bool) else str(value), untested)
    return Dispatch(candidates, field if plain else "", table, untested)


def _flattener(fmt: str) -> Callable[[Mapping[str, Any]], dict[str, Any]] | None:
    if fmt not in ("evtx", "winlog", "xml"):
        return None
    # Imported here: only Windows pipelines need it, and it belongs to the Sigma engineer's module.
    from secmon.normalize import winlog

    # xml: the event XML is first turned into the evtx JSON shape (formats.py, winxml.py).
    return winlog.flatten_winlogbeat_like if fmt == "winlog" else winlog.flatten_evtx
