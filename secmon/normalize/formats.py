"""Record formats: split one raw record into named values a pipeline maps to ECS.

Each format is a small parser built once per stream from the validated `parse:`
section (regular expressions are compiled at load time, never per line). A
parser returns the record's values, or None for a line that is no record (a
Zeek or W3C header): such lines are skipped, not dead-lettered. A malformed
record raises ValueError with the reason.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Values = dict[str, Any]
Parsed = tuple[Values, dict[str, Any] | None]  # (values, base ECS doc from the Windows flattener)

FORMATS = ("line", "json", "kv", "csv", "cef", "leef", "evtx", "winlog", "xml")
LAYOUT_BY_COUNT = -2


@dataclass(frozen=True)
class FormatSpec:
    """The validated `parse:` section of a pipeline."""

    kind: str
    regex: re.Pattern[str] | None = None  # `line`: the record; other formats: an optional header before the payload
    payload: str = "payload"  # the header group the format parses
    separator: str = " "  # kv: between pairs; csv: between columns
    assign: str = "="  # kv: between key and value
    quote: str = '"'
    nested: tuple[str, ...] = ()  # kv: values that are key=value lists themselves (auditd msg='...')
    columns: tuple[str, ...] = ()  # csv: column names
    layout_column: int = -1  # csv: the column whose value selects one of `layouts`; LAYOUT_BY_COUNT: the number of columns
    layouts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    header: str = ""  # csv: "zeek" (#fields) or "w3c" (#Fields:) headers name the columns
    unset: tuple[str, ...] = ()  # csv: values meaning "absent" (Zeek "-", "(empty)")
    kv_regex: re.Pattern[str] | None = field(default=None, compare=False)


def kv_pattern(separator: str, assign: str, quote: str) -> re.Pattern[str]:
    sep = r"\s" if separator == " " else re.escape(separator)
    asg = re.escape(assign)
    quotes = "".join(re.escape(q) for q in quote)
    return re.compile(
        rf"(?P<key>[^{sep}{asg}{quotes}]+){asg}"
        rf"(?:\"(?P<dq>(?:[^\"\\]|\\.)*)\"|'(?P<sq>[^']*)'|(?P<bare>[^{sep}]*))"
    )


def _not_json(constant: str) -> Any:
    # Python reads NaN and Infinity; Elasticsearch does not, and one such value would fail a whole bulk request
    raise ValueError(f"{constant} is not valid JSON")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_not_json)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"not a JSON record: {exc}") from None
    except RecursionError:
        raise ValueError("not a JSON record: nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but a {type(value).__name__}")
    return value


def _kv(text: str, pattern: re.Pattern[str], nested: tuple[str, ...]) -> Values:
    values: Values = {}
    for found in pattern.finditer(text):
        dq, sq, bare = found.group("dq", "sq", "bare")
        value = dq.replace('\\"', '"') if dq is not None else sq if sq is not None else bare
        key = found.group("key").strip()
        values.setdefault(key, value)  # the first occurrence wins (iptables repeats LEN=)
    for key in nested:
        inner = values.get(key)
        if inner:
            for sub, value in _kv(inner, pattern, ()).items():
                values.setdefault(sub, value)
    return values


_CEF_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z0-9_.\[\]-]+)=")
_PIPE = re.compile(r"(?<!\\)\|")
_CEF_UNESCAPE = re.compile(r"\\([\\=|nr])")
_CEF_HEADER = ("cef.version", "observer.vendor", "observer.product", "observer.version",
               "cef.signature_id", "cef.name", "cef.severity")


def _unescape(text: str) -> str:
    return _CEF_UNESCAPE.sub(lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), text)


def _cef_extension(text: str) -> Values:
    """CEF extension: `k=v` pairs whose values may hold spaces; a value ends where the next key starts."""
    values: Values = {}
    keys = [m for m in _CEF_KEY.finditer(text) if text[m.start() - 1: m.start()] != "\\"]
    for i, found in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(text)
        values[found.group(1)] = _unescape(text[found.end():end].rstrip())
    return values


def parse_cef(text: str) -> Values:
    start = text.find("CEF:")
    body = text[start + 4:].lstrip() if start >= 0 else text
    parts = _PIPE.split(body, maxsplit=7)
    if len(parts) < 8 or not parts[0].strip().isdigit():
        raise ValueError("not a CEF record (CEF:Version|Vendor|Product|Version|SignatureID|Name|Severity|Extension)")
    values = _cef_extension(parts[7])
    for name, value in zip(_CEF_HEADER, parts):
        values[name] = _unescape(value.strip())
    return values


def parse_leef(text: str) -> Values:
    start = text.find("LEEF:")
    if start < 0:
        raise ValueError("not a LEEF record (no 'LEEF:')")
    parts = _PIPE.split(text[start + 5:], maxsplit=5)
    if len(parts) < 6:
        raise ValueError("not a LEEF record (LEEF:Version|Vendor|Product|Version|EventID|attributes)")
    version, rest, delimiter = parts[0], parts[5], "\t"
    if version.startswith("2"):  # LEEF 2.0 names its attribute delimiter: a character or hex (x09, ^)
        head, _, tail = rest.partition("|")
        if head and tail:
            delimiter, rest = _leef_delimiter(head), tail
    values: Values = {}
    for pair in rest.split(delimiter):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            values[key.strip()] = value
    values.update({"leef.version": version, "observer.vendor": parts[1], "observer.product": parts[2],
                   "observer.version": parts[3], "leef.event_id": parts[4]})
    return values


def _leef_delimiter(text: str) -> str:
    """LEEF 2.0's delimiter field: one character, or its code in hex (x09, 0x5E)."""
    digits = text[2:] if text[:2].lower() == "0x" else text[1:] if text[:1] in "xX" else ""
    if digits:
        try:
            return chr(int(digits, 16))
        except (ValueError, OverflowError):  # not hex, or beyond Unicode: take the text as it is
            pass
    return text


class _Columns:
    """csv: fixed columns, layouts chosen by one column, or names from a Zeek / W3C header."""

    def __init__(self, spec: FormatSpec):
        self.spec = spec
        self.columns = spec.columns
        self.layouts = dict(spec.layouts)
        self.separator = "\t" if spec.header == "zeek" else spec.separator
        self.constants: Values = {}

    def header(self, text: str) -> None:
        if self.spec.header == "zeek":
            name, _, rest = text[1:].partition(self.separator if not text.startswith("#separator") else " ")
            if name == "separator":
                self.separator = rest.strip().encode("ascii", "replace").decode("unicode_escape")
            elif name == "fields":
                self.columns = tuple(rest.split(self.separator))
            elif name == "path":
                self.constants = {"_path": rest.strip()}
        elif self.spec.header == "w3c" and text.startswith("#Fields:"):
            self.columns = tuple(text[len("#Fields:"):].split())

    def parse(self, text: str) -> Values | None:
        if self.spec.header and text.startswith("#"):
            self.header(text)
            return None
        if self.spec.header:
            cells = text.split(self.separator)
        else:
            try:
                cells = next(csv.reader([text], delimiter=self.separator, quotechar=self.spec.quote or '"'))
            except csv.Error as exc:
                raise ValueError(f"malformed CSV: {exc}") from None
        columns = self.columns
        if self.layouts and not (self.spec.header and self.columns):
            if self.spec.layout_column == LAYOUT_BY_COUNT:
                key = str(len(cells))
            else:
                key = cells[self.spec.layout_column].strip() if len(cells) > self.spec.layout_column else ""
            columns = self.layouts.get(key) or self.layouts.get("default") or ()
            if not columns:
                raise ValueError(f"no column layout for {key!r}; layouts: {', '.join(self.layouts)}")
        if not columns:
            raise ValueError("no column names yet (the #fields header has not been read)")
        unset = self.spec.unset
        values = dict(self.constants)
        for name, cell in zip(columns, cells):
            if cell not in unset:
                values[name] = cell
        return values


def make_parser(spec: FormatSpec, flatten: Callable[[Mapping[str, Any]], dict[str, Any]] | None
                ) -> Callable[[str], Parsed | None]:
    """A parser for one stream (csv headers are stream state)."""
    kind = spec.kind
    if kind == "line":
        regex = spec.regex
        assert regex is not None  # the loader requires it

        def line(text: str) -> Parsed | None:
            found = regex.match(text)
            if found is None:
                raise ValueError("line does not match the pipeline's format")
            return found.groupdict(), None
        return line
    body: Callable[[str], Values | None]
    if kind == "json":
        body = _json_object
    elif kind == "kv":
        pattern, nested = spec.kv_regex, spec.nested
        assert pattern is not None

        def body(text: str) -> Values | None:
            return _kv(text, pattern, nested)
    elif kind == "csv":
        body = _Columns(spec).parse
    elif kind == "cef":
        body = parse_cef
    elif kind == "leef":
        body = parse_leef
    elif kind == "xml":  # Windows event XML, optionally after a header (a syslog prefix)
        assert flatten is not None
        return _windows_xml(flatten, spec.regex, spec.payload)
    else:  # evtx, winlog: JSON records that the Windows flattener turns into ECS
        assert flatten is not None
        return _windows(flatten)
    header, payload = spec.regex, spec.payload
    if header is None:
        def plain(text: str) -> Parsed | None:
            values = body(text)
            return None if values is None else (values, None)
        return plain

    def with_header(text: str) -> Parsed | None:
        found = header.match(text)
        if found is None:
            raise ValueError("line does not match the pipeline's header")
        groups = found.groupdict()
        values = body(groups.get(payload) or "")
        if values is None:
            return None
        groups.update(values)
        return groups, None
    return with_header


def _windows(flatten: Callable[[Mapping[str, Any]], dict[str, Any]],
             read: Callable[[str], dict[str, Any]] = _json_object) -> Callable[[str], Parsed | None]:
    def windows(text: str) -> Parsed | None:
        record = read(text)
        try:
            doc = flatten(record)
        # The flattener meets whatever JSON arrives; a record of the wrong shape is a
        # bad record (dead letter), not a crash of the whole collection.
        except ValueError as exc:  # the flattener's own words (a time out of range)
            raise ValueError(f"Windows event record: {exc}") from None
        except (TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
            raise ValueError(f"not a Windows event record: {type(exc).__name__}: {str(exc)[:200]}") from None
        # Conditions and fields may name raw record keys or the flattened fields
        # (winlog.channel, winlog.event_data.X): a shallow merge, no copy of the tree.
        values = {**record, **doc}
        return values, doc
    return windows


def _windows_xml(flatten: Callable[[Mapping[str, Any]], dict[str, Any]], header: re.Pattern[str] | None,
                 payload: str) -> Callable[[str], Parsed | None]:
    from secmon.normalize.winxml import event_record, refuse_declarations

    def read(text: str) -> dict[str, Any]:
        refuse_declarations(text)
        if header is not None:
            found = header.match(text)
            if found is None:
                raise ValueError("line does not match the pipeline's header")
            text = found.group(payload) or ""
        return event_record(text)

    parse = _windows(flatten, read)

    def windows_xml(text: str) -> Parsed | None:
        parsed = parse(text)
        if parsed is None:
            return None
        values, doc = parsed
        message = (values.get("Event") or {}).get("Message")
        if doc is not None and isinstance(message, str):  # RenderingInfo: the rendered message text
            doc["message"] = message
        return values, doc
    return windows_xml
