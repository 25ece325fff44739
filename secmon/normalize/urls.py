"""URL paths and queries as the application reads them: what web rules match (issue 10, item 6).

Attack traffic hides its payload in encodings the server or the application undoes:
percent-encoding (`%27%20OR%201%3D1`), `+` for a space in a query, double encoding (`%2527`,
decoded once by the server and once by the application), IIS `%uXXXX`, overlong UTF-8
(`%c0%ae` for `.`, which old IIS and Tomcat accepted) and HTML entities (`&#x27;`). A rule
written on the decoded text then catches every spelling. `url.original` keeps what was sent.

Log content is hostile: decoding never raises, whatever the input. What cannot be decoded
exactly (an invalid escape such as `%zz` or a lone `%`, bytes that are not UTF-8, overlong
UTF-8, more layers than MAX_ROUNDS) is left as it is or replaced by U+FFFD, and named in
`Decoded.problems`; the pipeline tags such events (URL_PROBLEM_TAG) so they are counted.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

MAX_ROUNDS = 3  # a payload encoded more often than this is left partly encoded (and said)
URL_PROBLEM_TAG = "url_undecodable"

_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+|%[uU][0-9A-Fa-f]{4}|%")
# Entities a browser or an application decodes: numeric with or without `;`, named only with `;`
# (so a query's `&copy=1` stays a parameter, not a copyright sign).
_ENTITY = re.compile(r"&(?:#[0-9]{1,7};?|#[xX][0-9A-Fa-f]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};)")
# Overlong UTF-8 (after surrogateescape): C0/C1 + one continuation byte, E0 + 80..9F + one.
_OVERLONG = re.compile("[\udcc0\udcc1][\udc80-\udcbf]|\udce0[\udc80-\udc9f][\udc80-\udcbf]")
_UNDECODED = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Decoded:
    text: str
    problems: tuple[str, ...] = ()


def decode_path(text: str) -> Decoded:
    """A URL path decoded (`+` is a plus sign in a path)."""
    return _decode(text, plus=False)


def decode_query(text: str) -> Decoded:
    """A query string decoded (`+` is a space, as forms send it)."""
    return _decode(text, plus=True)


def _decode(text: str, plus: bool) -> Decoded:
    problems: set[str] = set()
    current = text
    for n in range(MAX_ROUNDS):
        step = _percent(current.replace("+", " ") if plus and n == 0 else current, problems)
        step = _ENTITY.sub(lambda m: html.unescape(m.group()), step) if "&" in step else step
        if step == current:
            break
        current = step
    else:
        if _percent(current, set()) != current:
            problems.add(f"encoded more than {MAX_ROUNDS} times")
    return Decoded(current, tuple(sorted(problems)))


def _percent(text: str, problems: set[str]) -> str:
    if "%" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        escape = match.group()
        if escape == "%":
            problems.add("invalid percent escape")
            return escape
        if escape[1] in "uU":
            code = int(escape[2:], 16)
            if 0xD800 <= code <= 0xDFFF:
                problems.add("invalid %u escape")
                return "\ufffd"
            return chr(code)
        return _utf8(bytes.fromhex(escape.replace("%", "")), problems)
    return _ESCAPES.sub(one, text)


def _utf8(data: bytes, problems: set[str]) -> str:
    text = data.decode("utf-8", errors="surrogateescape")
    if not _UNDECODED.search(text):
        return text

    def overlong(match: re.Match[str]) -> str:
        problems.add("overlong UTF-8")
        raw = [ord(c) - 0xDC00 for c in match.group()]
        if len(raw) == 2:
            return chr(((raw[0] & 0x1F) << 6) | (raw[1] & 0x3F))
        return chr(((raw[1] & 0x3F) << 6) | (raw[2] & 0x3F))

    text = _OVERLONG.sub(overlong, text)
    if _UNDECODED.search(text):
        problems.add("invalid UTF-8")
        text = _UNDECODED.sub("\ufffd", text)
    return text
