"""Whole-value regular expression matching in linear time, as Elasticsearch's automata match.

The in-process matcher turns every string query (term, prefix, wildcard, regexp) into a
regular expression over the field's values. Python's `re` backtracks: a crafted rule
`(a+)+$`, or a wildcard `*a*a*a*a*b`, takes time exponential (polynomial) in the length of a
value that attackers write into logs, while the cluster, which runs Lucene automata, is
immune. RE2 (`google-re2`) compiles to automata too, so both paths cost time linear in the
value and agree by construction on what they accept.

RE2 cannot express every pattern the Lucene translation produces: counted repeats above
1,000 (`x{2000}`, which Lucene accepts) and programs past its memory budget. Those patterns,
and only those, run on the `regex` module (Python's `re` dialect, with a timeout): a
value that takes longer than FALLBACK_TIMEOUT raises RegexTimeout, which the caller counts
and reports, never a silent "no match". `rules validate` lists the rules concerned
(`CompiledRule.notes`).

Values are matched as UTF-8 bytes (RE2's native input; no per-call decoding). A lone
surrogate, which JSON can carry and Python keeps, is matched as U+FFFD: Elasticsearch
indexes it so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from re import _parser as sre  # type: ignore[attr-defined]  # Python's own regex parser: a pattern's least width
from typing import Any

import re2

from secmon.detect.inprocess.literals import required_runs

FALLBACK_TIMEOUT = 1.0  # seconds one value may take on the fallback engine
_OPTIONS = re2.Options()
_OPTIONS.dot_nl = True  # `.` matches a newline, as in Lucene (and re.DOTALL)
_OPTIONS.log_errors = False  # a refused pattern is reported by us, not logged to stderr by RE2
_OPTIONS.max_mem = 64 << 20  # merged per-field alternatives of large rules need more than the 8 MiB default
_SURROGATE = re.compile("[\ud800-\udfff]")
# A pattern that needs at least this many characters is tested for length first: Sigma's "a command
# line of 1,000 characters or more" (`.*[^\n]{1000,}.*`) has a counted repeat RE2 cannot make a DFA of,
# so its NFA runs ~1,000 states per byte (6 ms on a 200-byte value), on every candidate value.
LENGTH_GUARD = 256
_LARGE_COUNT = re.compile(r"\{[0-9]{3,}")  # x{100}, x{1000,}: a counted repeat of 100 or more


class RegexTimeout(RuntimeError):
    """A fallback pattern took longer than FALLBACK_TIMEOUT on one value."""

    def __init__(self, source: str):
        super().__init__(f"a regular expression outside RE2 ran over {FALLBACK_TIMEOUT:g} s on one value: "
                         f"{source[:120]!r}")
        self.source = source


def encode(text: str) -> bytes:
    """The UTF-8 bytes a value is matched as (lone surrogates as U+FFFD, as Elasticsearch indexes them)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


@dataclass(frozen=True)
class FullMatch:
    """One compiled pattern: `test(value bytes)` says whether it matches the whole value."""

    source: str  # Python-dialect source (re.DOTALL semantics)
    test: Callable[[bytes], bool]
    fallback: str | None = None  # why RE2 refused it (None: it runs on RE2)


@dataclass(frozen=True)
class RawRE2:
    """google-re2's bytes-level API (`re2._re2.RE2(pattern, options).Match(anchor, value, start, end)`):
    called directly, it skips the public wrapper's per-call bookkeeping (a generator and a match object
    per test). It is private, so another version may lack it or change it."""

    compile: Callable[[bytes, re2.Options], Any]
    unanchored: Any
    anchor_both: Any


def probe_raw(module: Any) -> RawRE2 | None:
    """`module`'s RawRE2 if it has one that answers a probe as expected, else None (then the public
    API is used, or the plain path: match.contains_any)."""
    try:
        raw = RawRE2(module._re2.RE2, module._Anchor.UNANCHORED, module._Anchor.ANCHOR_BOTH)
        probe = raw.compile(b"b", _OPTIONS)
        works = bool(probe.ok() and probe.Match(raw.unanchored, b"ab", 0, 2)[0][0] == 1
                     and probe.Match(raw.anchor_both, b"ab", 0, 2)[0][0] < 0)
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    return raw if works else None


RAW = probe_raw(re2)  # decided once, at import (read as linear.RAW at compile time, so a test can remove it)


def compile_fullmatch(source: str) -> FullMatch:
    """A Python-dialect pattern (as lucene_regexp.python_source writes them) for whole-value matching."""
    found = _re2_fullmatch(source)
    if not isinstance(found, str):
        # Only a large counted repeat makes such a program (long literals run fast): reading the width
        # of every merged alternation with Python's parser would cost more than the guard saves.
        shortest = least_width(source) if _LARGE_COUNT.search(source) else 0
        if shortest >= LENGTH_GUARD:
            test = found

            def guarded(value: bytes) -> bool:
                # A UTF-8 value has at least as many bytes as characters: one shorter in bytes than the
                # pattern's least width in characters cannot match it.
                return len(value) >= shortest and test(value)
            return FullMatch(source, guarded)
        return FullMatch(source, found)
    reason = found
    import regex  # the rare pattern RE2 refuses: most runs never import it

    slow = regex.compile(source, regex.DOTALL)

    def bounded(value: bytes) -> bool:
        try:
            return slow.fullmatch(value.decode("utf-8"), timeout=FALLBACK_TIMEOUT) is not None
        except TimeoutError:
            raise RegexTimeout(source) from None
    return FullMatch(source, bounded, f"RE2 refuses it ({reason})")


def _re2_fullmatch(source: str) -> Callable[[bytes], bool] | str:
    """RE2's whole-value test of `source` over UTF-8 bytes, or why RE2 refuses it."""
    raw = RAW
    if raw is None:
        try:
            fullmatch = re2.compile(source.encode("utf-8"), _OPTIONS).fullmatch
        except re2.error as exc:
            return _text(exc.args[0] if exc.args else exc)

        def public(value: bytes) -> bool:
            return fullmatch(value) is not None
        return public
    compiled = raw.compile(source.encode("utf-8"), _OPTIONS)
    if not compiled.ok():
        return _text(compiled.error())
    match, anchor = compiled.Match, raw.anchor_both

    def test(value: bytes) -> bool:
        return bool(match(anchor, value, 0, len(value))[0][0] >= 0)
    return test


def _text(reason: object) -> str:
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


def least_width(source: str) -> int:
    """The fewest characters a match of `source` (Python dialect, DOTALL) has; 0 when it cannot be read."""
    try:
        width = sre.parse(source, re.DOTALL).getwidth()[0]
    except (re.error, RecursionError, OverflowError):  # RE2 took it; Python's parser need not: no guard
        return 0
    return int(width) if width < sre.MAXREPEAT else 0


def required_literals(source: str) -> tuple[bytes, ...] | None:
    """Texts (UTF-8) one of which every match of `source` (Python dialect, DOTALL) contains, or None
    when none is known: a value holding none of them cannot match, without running the pattern.

    Only exact characters count (a literal, or a class of one character): a class of several, a
    case-insensitive part, anything optional, repeated zero times or alternated without a text
    in every branch ends a run. RE2 reads these characters as Python does (the translator writes
    one source for both); a pattern Python's parser cannot read gives None."""
    try:
        parsed = sre.parse(source, re.DOTALL)
    except (re.error, RecursionError, OverflowError):
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    runs = required_runs(parsed, _exact_char, exact_case=True)
    if not runs:
        return None
    try:
        return tuple(sorted(run.encode("utf-8") for run in runs))
    except UnicodeEncodeError:  # a lone surrogate: values carry it as U+FFFD (encode), not as itself
        return None


def _exact_char(op: Any, arg: Any) -> str | None:
    """The one exact character a regex item stands for (a literal, or a class of one literal)."""
    if op is sre.LITERAL:
        return chr(arg)
    if op is sre.IN and len(arg) == 1 and arg[0][0] is sre.LITERAL:
        return chr(arg[0][1])
    return None
