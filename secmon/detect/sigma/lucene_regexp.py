"""Lucene regular expressions (the `regexp` query's syntax) <-> Python `re`.

Two directions, both needed because a Sigma rule's regex is PCRE-like and
Elasticsearch speaks Lucene's dialect:

- `from_sigma`: a Sigma `|re` pattern -> a Lucene pattern that accepts exactly the
  same strings (Sigma regexes search; Lucene's are anchored, so `.*` is added at
  an open end). Constructs Lucene cannot express (look-around, back-references,
  word boundaries, lazy quantifiers that change what is captured are fine, but
  anchors in the middle are not) raise UnsupportedRegex with the reason.
- `python_source`: a Lucene pattern (flags NONE) -> the same language in Python's dialect,
  which the in-process matcher runs on RE2 (linear.py) for whole-value matches.

Lucene semantics followed (org.apache.lucene.util.automaton.RegExp): `.` is any
character including newline, `"..."` quotes a literal string, `\\x` is a literal x
except `\\d \\D \\s \\S \\w \\W`, classes `[^a-z]`, repeats `? * + {n} {n,} {n,m}`,
union `|`, groups `( )`; no anchors (a whole-value match), no lazy quantifiers.
Case-insensitive matching (Elasticsearch's `case_insensitive`) folds every single character,
also inside classes, by Unicode case folding (case_class); ranges are not folded.
"""

from __future__ import annotations

import re
from functools import lru_cache

DIGIT = "0-9"
WORD = "0-9A-Z_a-z"
SPACE = " \\t\\n\\x0b\\f\\r"
_SHORTHAND = {"d": (DIGIT, False), "D": (DIGIT, True), "w": (WORD, False), "W": (WORD, True),
              "s": (SPACE, False), "S": (SPACE, True)}


class UnsupportedRegex(ValueError):
    """The pattern uses something the other dialect cannot express."""


# --- Lucene -> Python ---------------------------------------------------------------------

class _LuceneParser:
    def __init__(self, pattern: str, fold_ascii: bool):
        self.s = pattern
        self.i = 0
        self.fold = fold_ascii

    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def take(self) -> str:
        ch = self.s[self.i]
        self.i += 1
        return ch

    def parse(self) -> str:
        out = self.union()
        if self.i != len(self.s):
            raise UnsupportedRegex(f"unexpected {self.s[self.i]!r} at position {self.i} in {self.s!r}")
        return out

    def union(self) -> str:
        branches = [self.concat()]
        while self.peek() == "|":
            self.take()
            branches.append(self.concat())
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    def concat(self) -> str:
        parts = []
        while self.peek() not in (None, "|", ")"):
            parts.append(self.repeat())
        return "".join(parts)

    def repeat(self) -> str:
        atom = self.simple()
        while True:
            ch = self.peek()
            if ch in ("?", "*", "+"):
                self.take()
                atom = f"(?:{atom}){ch}"
            elif ch == "{":
                end = self.s.find("}", self.i)
                body = self.s[self.i + 1:end] if end > 0 else ""
                if not re.fullmatch(r"\d+(,\d*)?", body):
                    raise UnsupportedRegex(f"bad repeat {{{body}}} in {self.s!r}")
                self.i = end + 1
                atom = f"(?:{atom}){{{body}}}"
            else:
                return atom

    def simple(self) -> str:
        ch = self.take()
        if ch == ".":
            return "."
        if ch == "(":
            if self.peek() == ")":
                self.take()
                return ""
            inner = self.union()
            if self.peek() != ")":
                raise UnsupportedRegex(f"unclosed group in {self.s!r}")
            self.take()
            return f"(?:{inner})"
        if ch == '"':
            end = self.s.find('"', self.i)
            if end < 0:
                raise UnsupportedRegex(f"unclosed string in {self.s!r}")
            text = self.s[self.i:end]
            self.i = end + 1
            return "".join(self.char(c) for c in text)
        if ch == "[":
            return self.char_class()
        if ch in ("*", "+", "?", "{", ")", "|"):
            raise UnsupportedRegex(f"unexpected {ch!r} in {self.s!r}")
        if ch == "\\":
            return self.escape(in_class=False)
        return self.char(ch)

    def escape(self, in_class: bool) -> str:
        if self.peek() is None:
            raise UnsupportedRegex(f"trailing backslash in {self.s!r}")
        ch = self.take()
        if ch in _SHORTHAND:
            body, negated = _SHORTHAND[ch]
            if in_class:
                if negated:
                    raise UnsupportedRegex(f"negated shorthand \\{ch} inside a class in {self.s!r}")
                return body
            return f"[{'^' if negated else ''}{body}]"
        return re.escape(ch) if in_class else self.char(ch)

    def char(self, ch: str) -> str:
        if self.fold:
            equivalents = case_class(ch)
            if len(equivalents) > 1:
                return "[" + "".join(re.escape(c) for c in sorted(equivalents)) + "]"
        return re.escape(ch)

    def char_class(self) -> str:
        negated = self.peek() == "^"
        if negated:
            self.take()
        items = []
        while self.peek() != "]":
            if self.peek() is None:
                raise UnsupportedRegex(f"unclosed class in {self.s!r}")
            first = self.class_char()
            if self.peek() == "-" and self.i + 1 < len(self.s) and self.s[self.i + 1] != "]":
                self.take()
                last = self.class_char()
                items.append(f"{first}-{last}")
            else:
                items.append(self.fold_class_char(first) if self.fold else first)
        self.take()
        return f"[{'^' if negated else ''}{''.join(items)}]"

    def class_char(self) -> str:
        ch = self.take()
        if ch == "\\":
            return self.escape(in_class=True)
        return re.escape(ch)

    @staticmethod
    def fold_class_char(escaped: str) -> str:
        """A single character of a class, with its case equivalents (ranges are not folded)."""
        ch = escaped[1:] if escaped.startswith("\\") and len(escaped) == 2 else escaped
        if len(ch) != 1:
            return escaped
        return "".join(re.escape(c) for c in sorted(case_class(ch) | {ch}))


@lru_cache(maxsize=1)
def _case_classes() -> dict[str, frozenset[str]]:
    """Characters grouped by their Unicode case folding (Python's casefold), for the cased planes."""
    groups: dict[str, set[str]] = {}
    for code in range(0x20000):
        ch = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        key = ch.casefold()
        if key != ch or ch.upper() != ch or ch.lower() != ch:
            groups.setdefault(key, set()).add(ch)
    return {ch: frozenset(group) for group in groups.values() if len(group) > 1 for ch in group}


def case_class(ch: str) -> frozenset[str]:
    """The characters a case-insensitive `regexp` matches for `ch`: Lucene's RegExp folds by Unicode
    case folding (`k` also matches the Kelvin sign, `s` the long s, `σ` both sigmas; checked on the
    node), unlike term/prefix/wildcard queries, which fold ASCII letters only. Ranges are not folded."""
    if ch.isascii():
        return frozenset({ch.lower(), ch.upper()}) | _case_classes().get(ch, frozenset())
    return _case_classes().get(ch, frozenset({ch}))


# Translations made so far (and those the rule cache kept from earlier runs, cache.py): the parser is
# pure Python and a large corpus has hundreds of patterns. Bounded by the patterns of the rules loaded.
TRANSLATED: dict[tuple[str, bool], str] = {}


def python_source(pattern: str, case_insensitive: bool = False) -> str:
    """A Lucene `regexp` pattern (flags NONE) -> Python-dialect source for a whole-value match with
    `.` matching newlines (re.DOTALL); RE2 reads the same source (secmon.detect.inprocess.linear)."""
    key = (pattern, case_insensitive)
    found = TRANSLATED.get(key)
    if found is None:
        found = TRANSLATED[key] = _LuceneParser(pattern, case_insensitive).parse()
    return found


def to_python(pattern: str, case_insensitive: bool = False) -> re.Pattern[str]:
    """A Lucene `regexp` pattern (flags NONE) compiled with Python's `re` for `fullmatch`."""
    return re.compile(python_source(pattern, case_insensitive), re.DOTALL)


# --- Sigma (PCRE-like) -> Lucene ------------------------------------------------------------

_LUCENE_SPECIAL = set('.?+*|{}[]()"\\#@&<>~^$-')


def _literal(ch: str) -> str:
    return "\\" + ch if ch in _LUCENE_SPECIAL or not ch.isalnum() and ch.isascii() and ch != " " else ch


class _SigmaParser:
    """Translates a Python/PCRE regex; `dotall` says whether `.` matches a newline."""

    def __init__(self, pattern: str, dotall: bool, multiline: bool):
        self.s = pattern
        self.i = 0
        self.dotall = dotall
        self.multiline = multiline
        self.depth = 0
        self.branch_start = 0  # where the current top-level branch began

    def peek(self, ahead: int = 0) -> str | None:
        j = self.i + ahead
        return self.s[j] if j < len(self.s) else None

    def take(self) -> str:
        ch = self.s[self.i]
        self.i += 1
        return ch

    def fail(self, what: str) -> UnsupportedRegex:
        return UnsupportedRegex(f"{what} at position {self.i} of {self.s!r} cannot be expressed in Elasticsearch's "
                                f"regexp syntax (no scripts): rewrite the rule without it")

    def translate(self) -> str:
        start_anchored = end_anchored = False
        body = self.union(top=True)
        if self.i != len(self.s):
            raise self.fail(f"unbalanced {self.s[self.i]!r}")
        start_anchored, end_anchored, body = self._anchors(body)
        return ("" if start_anchored else ".*") + body + ("" if end_anchored else ".*")

    def _anchors(self, body: str) -> tuple[bool, bool, str]:
        start = body.startswith(("\x00^", "\x01"))
        if start:
            body = body[1:] if body.startswith("\x01") else body[2:]
        end = body.endswith(("\x00$", "\x02"))
        if end:
            body = body[:-1] if body.endswith("\x02") else body[:-2]
        if "\x00" in body:
            raise self.fail("an anchor (^ or $) inside the pattern or in one branch of an alternation")
        return start, end, body

    def union(self, top: bool = False) -> str:
        branches = [self.concat()]
        while self.peek() == "|":
            self.take()
            if top:
                self.branch_start = self.i
            branches.append(self.concat())
        if len(branches) == 1:
            return branches[0]
        if not top and "" in branches:  # Lucene has no empty branch: `(a|)` is `(a)?`
            rest = [b for b in branches if b]
            return f"({'|'.join(rest)})?" if rest else ""
        if top:
            # `^a|b$`: anchors per branch -> each branch gets its own open ends
            fixed = []
            for branch in branches:
                s, e, b = self._anchors(branch)
                fixed.append(("" if s else ".*") + b + ("" if e else ".*"))
            return "\x00^(" + "|".join(fixed) + ")\x00$"
        return "|".join(branches)

    def group_branches(self) -> list[str]:
        branches = [self.concat()]
        while self.peek() == "|":
            self.take()
            branches.append(self.concat())
        return branches

    def resolve_group(self, branches: list[str], leading: bool, trailing: bool) -> str:
        """A group; at the start (end) of a top-level branch its branches may carry ^ ($):
        `(^a|b)x` is `(a|.*b)x` anchored at the start. \x01 / \x02 mark such resolved ends."""
        starts = leading and any(b.startswith("\x00^") for b in branches)
        ends = trailing and any(b.endswith("\x00$") for b in branches)
        fixed = []
        for branch in branches:
            if starts:
                branch = branch[2:] if branch.startswith("\x00^") else ".*" + branch
            if ends:
                branch = branch[:-2] if branch.endswith("\x00$") else branch + ".*"
            fixed.append(branch)
        if "" in fixed:  # Lucene has no empty branch: `(a|)` is `(a)?`
            rest = [b for b in fixed if b]
            inner = f"({'|'.join(rest)})?" if rest else ""
        else:
            inner = f"({'|'.join(fixed)})"
        return ("\x01" if starts else "") + inner + ("\x02" if ends else "")

    def concat(self) -> str:
        parts = []
        while self.peek() not in (None, "|", ")"):
            parts.append(self.repeat())
        return "".join(parts)

    def repeat(self) -> str:
        atom = self.atom()
        while True:
            ch = self.peek()
            if ch in ("?", "*", "+"):
                if atom.startswith("\x00"):
                    raise self.fail("a repeated anchor")
                self.take()
                atom = f"({atom}){ch}" if len(atom) > 1 and not _single(atom) else atom + ch
            elif ch == "{" and re.match(r"\{\d+(,\d*)?\}", self.s[self.i:]):
                found = re.match(r"\{\d+(,\d*)?\}", self.s[self.i:])
                assert found is not None
                self.i += found.end()
                atom = (f"({atom})" if len(atom) > 1 and not _single(atom) else atom) + found.group(0)
            else:
                break
            if self.peek() in ("?", "+"):  # lazy/possessive: same set of matched strings for a search
                self.take()
        return atom

    def atom(self) -> str:
        ch = self.take()
        if ch == "^":
            if self.multiline:
                raise self.fail("'^' with the m flag")
            return "\x00^"
        if ch == "$":
            if self.multiline:
                raise self.fail("'$' with the m flag")
            return "\x00$"
        if ch == ".":
            return "." if self.dotall else "[^\n]"
        if ch == "(":
            leading = self.depth == 0 and self.i - 1 == self.branch_start
            if self.peek() == "?":
                self.take()
                named = re.match(r"P?<([A-Za-z_]\w*)>", self.s[self.i:])
                if named:  # a named group matches what a plain one does
                    self.i += named.end()
                elif self.take() != ":":
                    raise self.fail("a look-around or inline-flag group")
            elif self.peek() == "?" or self.s.startswith("*", self.i):
                raise self.fail("a special group")
            self.depth += 1
            branches = self.group_branches()
            self.depth -= 1
            if self.peek() != ")":
                raise self.fail("an unclosed group")
            self.take()
            trailing = self.depth == 0 and self.peek() in (None, "|")
            return self.resolve_group(branches, leading, trailing)
        if ch == "[":
            return self.char_class()
        if ch == "\\":
            return self.escape(in_class=False)
        if ch in ")*+?{":
            if ch == "{":
                return "\\{"
            raise self.fail(f"an unexpected {ch!r}")
        return _literal(ch)

    def escape(self, in_class: bool) -> str:
        if self.peek() is None:
            raise self.fail("a trailing backslash")
        ch = self.take()
        if ch in "dDwWsS":
            if in_class and ch in "DWS":
                raise self.fail(f"\\{ch} inside a class")
            return "\\" + ch
        simple = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "e": "\x1b", "0": "\x00"}
        if ch in simple:
            return _class_literal(simple[ch]) if in_class else _literal(simple[ch])
        if ch == "x":
            code = self.s[self.i:self.i + 2]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", code):
                raise self.fail("a malformed \\x escape")
            self.i += 2
            return _class_literal(chr(int(code, 16))) if in_class else _literal(chr(int(code, 16)))
        if ch == "u":
            code = self.s[self.i:self.i + 4]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", code):
                raise self.fail("a malformed \\u escape")
            self.i += 4
            return _class_literal(chr(int(code, 16))) if in_class else _literal(chr(int(code, 16)))
        if ch.isalnum():
            raise self.fail(f"the escape \\{ch} (word boundary, back-reference or class Lucene lacks)")
        return _class_literal(ch) if in_class else _literal(ch)

    def char_class(self) -> str:
        out = "["
        if self.peek() == "^":
            self.take()
            out += "^"
        first = True
        while True:
            ch = self.peek()
            if ch is None:
                raise self.fail("an unclosed class")
            if ch == "]" and not first:
                self.take()
                break
            first = False
            self.take()
            if ch == "[" and self.peek() == ":":
                raise self.fail("a POSIX class")
            item = self.escape(in_class=True) if ch == "\\" else _class_literal(ch)
            if self.peek() == "-" and self.peek(1) not in (None, "]"):
                self.take()
                nxt = self.take()
                last = self.escape(in_class=True) if nxt == "\\" else _class_literal(nxt)
                out += f"{item}-{last}"
            else:
                out += item
        if out in ("[", "[^"):
            raise self.fail("an empty class")
        return out + "]"


def _class_literal(ch: str) -> str:
    return "\\" + ch if ch in "\\]-^[" else ch


def _single(atom: str) -> bool:
    """One Lucene atom: a char, an escape, a class, or a group."""
    if len(atom) == 1 or (len(atom) == 2 and atom[0] == "\\"):
        return True
    if atom.startswith("[") and atom.endswith("]") and "]" not in atom[1:-1].replace("\\]", ""):
        return True
    if atom.startswith("(") and atom.endswith(")"):
        depth = 0
        for k, c in enumerate(atom):
            if c == "\\":
                continue
            depth += c == "("
            depth -= c == ")"
            if depth == 0 and k < len(atom) - 1:
                return False
        return True
    return False


def from_sigma(pattern: str, dotall: bool = False, multiline: bool = False) -> str:
    """A Sigma `|re` value -> an anchored Lucene pattern accepting the same values."""
    inline = re.match(r"\(\?([imsx]+)\)", pattern)
    flags = set(inline.group(1)) if inline else set()
    body = pattern[inline.end():] if inline else pattern
    if "x" in flags:
        raise UnsupportedRegex(f"the x (verbose) flag in {pattern!r} is not supported")
    return _SigmaParser(body, dotall or "s" in flags, multiline or "m" in flags).translate()


def inline_ignorecase(pattern: str) -> bool:
    inline = re.match(r"\(\?([imsx]+)\)", pattern)
    return bool(inline and "i" in inline.group(1))
