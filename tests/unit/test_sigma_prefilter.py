"""The prefilter never hides a match: whenever a query matches a document, its needles occur in it.

Queries and values are generated together (a value is an instance of the pattern, with
the case of some characters swapped), over an alphabet with the characters where case
folding is subtle: ASCII, letters with one other case (Å, Cyrillic), letters whose lower
case is two characters (İ), letters that fold to ASCII in Python (ſ, the Kelvin sign),
titlecase (ǅ) and characters without case (emoji, U+202E).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from secmon.detect.inprocess.match import compile_matcher
from secmon.detect.inprocess.prefilter import NeedleIndex, flatten, needles

ALPHABET = "abcXYZ09 \\/.-_" + "åÅаАİıſKkǅǄǆß😀\u202e"
FIELD = "winlog.event_data.CommandLine"
LUCENE_SPECIAL = set('.?+*|{}[]()"\\#@&<>~^$-')

chars = st.sampled_from(ALPHABET)
texts = st.text(ALPHABET, min_size=0, max_size=6)


def _case(draw: st.DrawFn, text: str) -> str:
    return "".join(c.swapcase() if draw(st.booleans()) else c for c in text)


@st.composite
def leaf(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A query on FIELD and a value that often matches it."""
    kind = draw(st.sampled_from(["term", "wildcard", "prefix", "regexp"]))
    insensitive = draw(st.booleans())
    pattern, value = [], []
    for _ in range(draw(st.integers(1, 5))):
        text = draw(texts)
        if kind == "term":
            pattern.append(text), value.append(text)
        elif kind in ("wildcard", "prefix"):
            token = draw(st.sampled_from(["lit", "*", "?"])) if kind == "wildcard" else "lit"
            if token == "lit":
                pattern.append(text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?"))
                value.append(text)
            else:
                pattern.append(token)
                value.append(draw(texts) if token == "*" else draw(chars))
        else:
            token = draw(st.sampled_from(["lit", ".*", "alt", "plus"]))
            escaped = "".join("\\" + c if c in LUCENE_SPECIAL else c for c in text)
            if token == "lit":
                pattern.append(escaped), value.append(text)
            elif token == ".*":
                pattern.append(".*"), value.append(draw(texts))
            elif token == "alt":
                other = draw(texts)
                pattern.append(f"({escaped}|{''.join(chr(92) + c if c in LUCENE_SPECIAL else c for c in other)})")
                value.append(draw(st.sampled_from([text, other])))
            elif text:
                pattern.append(f"({escaped})+"), value.append(text * draw(st.integers(1, 3)))
    joined = "".join(pattern)
    instance = "".join(value)
    if kind == "prefix":
        instance += draw(texts)
    if draw(st.booleans()):
        instance = _case(draw, instance)
    if kind == "wildcard" and draw(st.booleans()):
        return {"wildcard": {FIELD: {"value": joined, "case_insensitive": insensitive}}}, instance
    body = {"value": joined, "case_insensitive": insensitive}
    if kind == "regexp":
        body["flags"] = "NONE"
    return {kind: {FIELD: body}}, instance


@st.composite
def query_and_doc(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    leaves = draw(st.lists(leaf(), min_size=1, max_size=4))
    values = [value for _, value in leaves] + draw(st.lists(texts, max_size=2))
    queries = [query for query, _ in leaves]
    shape = draw(st.sampled_from(["one", "all", "any", "mixed"]))
    if shape == "one":
        query = queries[0]
    elif shape == "all":
        query = {"bool": {"filter": queries}}
    elif shape == "any":
        query = {"bool": {"should": queries, "minimum_should_match": 1}}
    else:
        query = {"bool": {"filter": queries[:1], "should": queries[1:], "must_not": queries[2:3],
                          "minimum_should_match": 1 if len(queries) > 1 else 0}}
    return query, {"winlog": {"event_data": {"CommandLine": values if len(values) > 1 else values[0]}}}


@settings(max_examples=1500, deadline=None)
@given(query_and_doc())
def test_a_match_always_has_its_needles(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    query, doc = case
    groups = needles(query)
    if not compile_matcher(query)(doc) or not groups:
        return
    assert NeedleIndex([(0, groups)]).hits(flatten(doc)) == [0], (groups, doc)


def test_needles_of_common_sigma_shapes() -> None:
    endswith = {"wildcard": {FIELD: {"value": "*\\\\Cmd.EXE", "case_insensitive": True}}}
    assert needles(endswith) == [frozenset({(FIELD, "\\cmd.exe\x03")})]
    # Both literal runs of a contains-all pattern must occur: two conditions, the longer first.
    both = {"wildcard": {FIELD: {"value": "*-enc*FromBase64String*", "case_insensitive": True}}}
    assert needles(both) == [frozenset({(FIELD, "frombase64string")}), frozenset({(FIELD, "-enc")})]
    # A must_not says nothing about what a match contains; a logsource term is the route's job.
    negated = {"bool": {"filter": [{"term": {"winlog.channel": {"value": "Security"}}}],
                        "must_not": [endswith]}}
    assert needles(negated) == []
    # A regexp gives a literal every match contains; an alternation, one needle per branch.
    regexp = {"regexp": {FIELD: {"value": "(invoke|downloadstring)-[a-z]+ ?", "case_insensitive": True, "flags": "NONE"}}}
    assert needles(regexp) == [frozenset({(FIELD, "invoke"), (FIELD, "downloadstring")})]


def test_flatten_is_field_values_for_every_path() -> None:
    from secmon.detect.fields import field_values

    doc = {"a": {"b": [1, {"c": "x"}, [2, None, {"c": ["y"]}]], "d.e": {"f": True}}, "a.b": {"c": 3},
           "n": None, "l": [[1, 2], []]}
    flat = flatten(doc)
    assert flat == {"a.b": [1, 2], "a.b.c": ["x", "y", 3], "a.d.e.f": [True], "l": [1, 2]}
    for path, values in flat.items():
        assert sorted(map(str, values)) == sorted(map(str, field_values(doc, path)))


def test_the_memo_of_scanned_values_is_bounded_over_all_fields(monkeypatch: Any) -> None:
    """Hostile logs: thousands of distinct short values in each of many fields a corpus names."""
    from secmon.detect.inprocess import prefilter

    monkeypatch.setattr(prefilter, "MEMO_VALUES", 50)
    monkeypatch.setattr(prefilter, "MEMO_TOTAL", 120)
    fields = [f"f{n}" for n in range(40)]
    index = NeedleIndex([(n, [frozenset({(field, "evil")})]) for n, field in enumerate(fields)])
    fresh = NeedleIndex([(n, [frozenset({(field, "evil")})]) for n, field in enumerate(fields)])
    for round_ in range(60):
        doc = {field: [f"v{round_}-{k}" for k in range(7)] + (["an evil one"] if round_ % 9 == n else [])
               for n, field in enumerate(fields)}
        flat = flatten(doc)
        assert sorted(index.hits(flat)) == sorted(fresh.hits(flat))  # what is remembered never changes a hit
        memos = index._memos.values()
        assert sum(map(len, memos)) <= 120 and max(map(len, memos)) <= 50
        assert index._memoized == sum(map(len, memos))
    assert sorted(index.hits(flatten({"f3": "EVIL"}))) == [3]  # remembered values still hit (casefolded scan)


def _flatten_plainly(doc: Any) -> dict[str, list[Any]]:
    """What `flatten` answers, written the plain way (no remembered paths)."""
    from collections.abc import Mapping

    out: dict[str, list[Any]] = {}

    def into(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                into(value, prefix + key + ".")
            elif isinstance(value, list):
                for item in value:
                    into({key: item}, prefix)
            elif value is not None:
                out.setdefault(prefix + key, []).append(value)
    if isinstance(doc, Mapping):
        into(doc, "")
    return out


KEYS = st.sampled_from(["a", "b", "a.b", "c", "", ".", "winlog", "event_data", "é"])
LEAVES = st.one_of(st.text(max_size=3), st.integers(-2, 2), st.booleans(), st.none(), st.just(1.5))
TREES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(KEYS, inner, max_size=4)), max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(KEYS, TREES, max_size=5), st.sampled_from([0, 1, 3, 20_000]))
def test_flatten_with_remembered_paths_is_the_plain_flatten(doc: dict[str, Any], kept: int) -> None:
    """The remembered dotted paths (forgotten every `kept` paths, here as often as every path) never
    change what `flatten` answers: the same paths, the same values in the same order."""
    import pytest

    from secmon.detect.inprocess import prefilter

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prefilter, "PATHS_KEPT", kept)
        for _ in range(2):  # the second time, the paths are remembered
            flat = flatten(doc)
            assert flat == _flatten_plainly(doc)
            assert [list(map(type, v)) for v in flat.values()] == [list(map(type, v)) for v in _flatten_plainly(doc).values()]


def test_remembered_paths_stay_bounded_when_new_keys_flood_a_known_prefix() -> None:
    """Keys are input: an attacker's thousands of new keys under one parent (event data) must not grow
    the remembered paths past their bound, in a scheduler that flattens every window's documents."""
    import pytest

    from secmon.detect.inprocess import prefilter

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prefilter, "PATHS_KEPT", 50)
        for n in range(40):
            doc = {"winlog": {"event_data": {f"k{n}_{i}": i for i in range(10)}}}
            assert flatten(doc) == _flatten_plainly(doc)
        assert sum(map(len, prefilter._PATHS.values())) <= 50 + 10
