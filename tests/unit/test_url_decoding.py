"""URL decoding (normalize/urls.py) against `urllib.parse` as the oracle, and on hostile input."""

from __future__ import annotations

import random
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secmon.model import Event
from secmon.normalize.urls import URL_PROBLEM_TAG, decode_path, decode_query
from tests.unit.test_pipelines import PIPELINES, normalize

# Text a payload may hold, without the characters that start another layer of encoding.
plain = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="%&"), max_size=40)


def hex_case(encoded: str, seed: int) -> str:
    """`%3c` or `%3C` at random: servers accept either case of the hex digits."""
    rnd = random.Random(seed)
    out, i = [], 0
    while i < len(encoded):
        if encoded[i] == "%":
            digits = encoded[i + 1:i + 3]
            out.append("%" + (digits.upper() if rnd.random() < 0.5 else digits.lower()))
            i += 3
        else:
            out.append(encoded[i])
            i += 1
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(plain, st.integers(0, 2 ** 32))
def test_every_encoding_decodes_to_the_payload(payload: str, seed: int) -> None:
    # `+` is a space in the layer the server decodes; a `%2B` is a plus sign the application sees
    # (a search for `c%2B%2B`), so a second layer never turns `+` into a space.
    for encoded in (quote(payload, safe=""), quote_plus(payload, safe=""), quote(quote(payload, safe=""), safe=""),
                    quote(quote_plus(payload, safe="").replace("+", "%20"), safe="")):
        assert decode_query(hex_case(encoded, seed)).text == payload, (payload, encoded)
    assert decode_path(hex_case(quote(payload, safe=""), seed)).text == payload
    assert decode_path(quote(quote(payload, safe="/"), safe="/")).text == payload


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_one_layer_agrees_with_urllib(text: str) -> None:
    """Where one layer of decoding gives text with nothing left to decode, ours is urllib's."""
    decoded = decode_query(text)
    once = unquote_plus(text, errors="strict") if _utf8_escapes(text) else None
    if once is not None and "%" not in once and "&" not in once and not decoded.problems:
        assert decoded.text == once
        assert decode_path(text).text == unquote(text)


def _utf8_escapes(text: str) -> bool:
    try:
        unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("%25uU0aAfFgG7C0cE8+&#;x.-/\x00\r\n") + ["\udc80", "é"]), max_size=80))
def test_hostile_input_never_raises(text: str) -> None:
    for decode in (decode_path, decode_query):
        result = decode(text)
        assert isinstance(result.text, str)
        # no surrogate the decoding made up (one in the input itself is left as it was)
        assert all(c in text for c in result.text if "\ud800" <= c <= "\udfff")


@pytest.mark.parametrize("sent,path,problems", [
    ("/..%c0%af..%c0%afetc/passwd", "/../../etc/passwd", ("overlong UTF-8",)),
    ("/%u002e%u002e/win.ini", "/../win.ini", ()),
    ("/a%zz%", "/a%zz%", ("invalid percent escape",)),
    ("/%ff", "/\ufffd", ("invalid UTF-8",)),
    ("/%252525252e", "/%252e", ("encoded more than 3 times",)),
    ("/x%00.jpg", "/x\x00.jpg", ()),
    ("/a+b", "/a+b", ()),
])
def test_path_cases(sent: str, path: str, problems: tuple[str, ...]) -> None:
    assert decode_path(sent).text == path and decode_path(sent).problems == problems


def test_entities_only_where_an_application_decodes_them() -> None:
    assert decode_query("q=&#x3C;script&#62;&lt;b&gt;").text == "q=<script><b>"
    assert decode_query("a=1&copy=2&lt=3").text == "a=1&copy=2&lt=3"  # parameters, not entities


def test_the_pipeline_tags_what_it_cannot_decode() -> None:
    event = normalize(PIPELINES["nginx-access"],
                      '1.2.3.4 - - [08/Jun/2020:08:04:43 +0000] "GET /%ff?a=%zz HTTP/1.1" 404 0 "-" "-"')
    assert isinstance(event, Event)
    assert event.doc["tags"] == [URL_PROBLEM_TAG] and event.doc["url"]["original"] == "/%ff?a=%zz"
    clean = normalize(PIPELINES["nginx-access"],
                      '1.2.3.4 - - [08/Jun/2020:08:04:43 +0000] "GET /a%20b HTTP/1.1" 200 0 "-" "-"')
    assert isinstance(clean, Event)
    assert "tags" not in clean.doc and clean.doc["url"]["path"] == "/a b"
