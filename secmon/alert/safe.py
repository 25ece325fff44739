"""Make log content safe for email headers and terminals.

Every value an email shows (host names, user names, rule titles of community rules,
descriptions, group values) can come from an attacker: CR/LF to forge headers, ANSI
escapes to repaint a terminal, bidi overrides to reverse what a reader sees, RFC 2047
encoded words so that a mail client decodes a fake "Bcc:" in the Subject, megabytes.
Addresses never come from here: they come from the config only.
"""

from __future__ import annotations

import re
import unicodedata

# Control (C0, DEL, C1), format (bidi overrides and isolates, zero-width, BOM), lone
# surrogates (cannot be encoded at all), line and paragraph separators (U+2028/2029).
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SPACES = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")
ELLIPSIS = "\u2026"


def _visible(text: str, keep_newlines: bool) -> str:
    out = []
    for char in text:
        if keep_newlines and char == "\n":
            out.append(char)
        elif char in "\t\r\n\v\f\x85\u2028\u2029":
            out.append(" ")  # a separator stays a separator, so words do not run together
        elif unicodedata.category(char) not in _DROPPED_CATEGORIES:
            out.append(char)
    return "".join(out)


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def one_line(value: object, limit: int = 200) -> str:
    """One line of visible text, at most `limit` characters: for values in subjects, tables and lists."""
    text = unicodedata.normalize("NFC", str(value)[: limit * 4])  # bound the work on a megabyte value first
    return _cap(_SPACES.sub(" ", _visible(text, keep_newlines=False)).strip(), limit)


def paragraph(value: object, limit: int = 4000) -> str:
    """Visible text that keeps its line breaks (descriptions): no control or format characters."""
    text = str(value)[: limit * 4].replace("\r\n", "\n").replace("\r", "\n")
    text = _visible(unicodedata.normalize("NFC", text), keep_newlines=True)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _cap(_BLANK_LINES.sub("\n\n", "\n".join(lines)).strip(), limit)


def no_encoded_words(text: str) -> str:
    """Break every `=?` and `?=`, so no mail client can decode an RFC 2047 word that came from a log."""
    while "=?" in text or "?=" in text:
        text = text.replace("=?", "= ?").replace("?=", "? =")
    return text


def header_text(value: object, limit: int = 200) -> str:
    """A header value: one line, no control characters, no encoded words, at most `limit` characters."""
    return _cap(no_encoded_words(one_line(value, limit)), limit)


def body_text(value: str) -> str:
    """A whole rendered text part: line breaks kept, no control or format character left."""
    return _visible(value.replace("\r\n", "\n").replace("\r", "\n"), keep_newlines=True)
