"""The shortcuts the offline scan takes for speed answer exactly what the general road answers:
the evtx SystemTime fast path of winlog._utc, the length guard of long counted regexes, the one RE2
search of a `contains` list, the windowing shared out to forked processes, and the routes the router
looks up instead of making them for each event."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hypothesis import example, given, settings as hsettings, strategies as st

from secmon.detect.inprocess.linear import LENGTH_GUARD, compile_fullmatch, encode, least_width
from secmon.detect.inprocess.match import contains_any
from secmon.detect.inprocess.router import RuleRouter, findings_of, match_documents
from secmon.detect.sigma.load import load_rules
from secmon.normalize import winlog
from secmon.service import offline


def _either(call, *args):  # type: ignore[no-untyped-def]
    try:
        return call(*args)
    except ValueError as exc:
        return ("refused", str(exc))


@hsettings(max_examples=400, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), st.booleans())
@example(datetime(2019, 4, 25, 14, 2, 51), True)
def test_system_time_fast_path_is_the_datetime_road(moment: datetime, whole_second: bool) -> None:
    if whole_second:
        moment = moment.replace(microsecond=0)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f").rjust(26, "0") + "Z"
    assert winlog._utc(stamp) == winlog._utc_parsed(stamp)


def test_system_time_that_is_not_a_time_is_refused_alike() -> None:
    for stamp in ("2019-02-29T10:00:00.100000Z", "2019-13-01T00:00:00.000000Z", "0000-01-01T00:00:00.000001Z",
                  "2019-01-01T24:00:00.000000Z", "2019-01-01T23:60:00.000000Z", "2019-01-01T23:00:60.000000Z",
                  "\u0662019-01-01T00:00:00.000000Z", " 2019-01-01T00:00:00.000000Z", "2019-01-01 00:00:00.000001"):
        assert _either(winlog._utc, stamp) == _either(winlog._utc_parsed, stamp), stamp


SIZE = "(?:.)*(?:[^\\\\\n]){1000,}(?:.)*"  # Sigma's `CommandLine|re: '.*[^\n]{1000,}.*'`, translated


@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab\\\n\u00e9\u4e2d"), max_size=1300), st.integers(0, 1200))
@example("", 1000)
@example("", 999)
def test_the_length_guard_never_changes_an_answer(text: str, pad: int) -> None:
    value = encode("x" * pad + text)
    guarded = compile_fullmatch(SIZE)
    assert least_width(SIZE) == 1000 >= LENGTH_GUARD
    import re

    assert guarded.test(value) == (re.fullmatch(SIZE, value.decode("utf-8"), re.DOTALL) is not None)


def test_least_width_of_patterns() -> None:
    assert least_width("(?:x){1001}") == 1001
    assert least_width("a|bc") == 1
    assert least_width("a{3}b+") == 4
    assert least_width("(") == 0  # not readable: no guard


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=4), min_size=8, max_size=20),
       st.lists(st.binary(max_size=24), max_size=10))
def test_a_contains_list_searched_at_once_is_any_in(needles: list[bytes], values: list[bytes]) -> None:
    search = contains_any(tuple(needles))
    assert search is not None
    for value in values + [b"".join(needles[:2]), needles[-1] * 2]:
        assert search(value) == any(n in value for n in needles), (needles, value)


def test_windowing_shared_out_to_processes_finds_the_same(datasets: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The hits of a few EVTX samples with the repository's Windows rules, windowed in this process
    and in two forked ones: the same findings in the same order."""
    ruleset = load_rules([Path(__file__).parents[2] / "rules" / "windows"])
    files = sorted((datasets / "evtx_attack_samples" / "jsonl").rglob("*.jsonl"))[:40]
    job = offline.OfflineJob(inputs=tuple(files), rule_paths=(), agency="a1", timezone="UTC",
                             pipelines=(Path(__file__).parents[2] / "pipelines",))
    router = RuleRouter(ruleset.rules)
    matches = match_documents(router, offline._Reader(job, datetime.now(UTC)).documents())
    assert len(matches.hits) > 2
    alone = findings_of(router.rules, matches, [])
    monkeypatch.setattr(offline, "PARALLEL_FINDINGS", 0)
    failures: list[tuple[str, str]] = []
    shared = offline._findings(router.rules, matches, failures, 2)
    assert alone and shared == alone and failures == []
    assert json.dumps([f.incident_id for f in shared]) == json.dumps([f.incident_id for f in alone])


def test_a_predicate_answers_alike_before_and_after_its_search_is_compiled() -> None:
    from secmon.detect.inprocess.match import SEARCH_AFTER, View, compile_view_matcher

    words = ["mimikatz", "sekurlsa::", "lsadump::", " -nop ", "vssadmin delete", "dpapi::", "token::", "misc::",
             "rpc::"]
    query = {"bool": {"should": [{"wildcard": {"process.command_line": {"value": f"*{w}*"}}} for w in words],
                      "minimum_should_match": 1}}
    predicate = compile_view_matcher(query)
    assert predicate.__name__ == "searched"  # the list long enough to be searched at once
    values = [f"cmd /c {w} x" for w in words] + ["cmd /c whoami", "MIMIKATZ", "rpc:", ""]
    expected = [any(w in v for w in words) for v in values]
    for round_ in range(SEARCH_AFTER // len(values) + 3):
        answers = [predicate(View({"process": {"command_line": v}})) for v in values]
        assert answers == expected, round_


def test_without_re2s_private_api_the_plain_paths_answer_alike(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A google-re2 without the private bytes API (another version): it is detected, contains lists
    keep their `in` tests and whole-value patterns take the public API, with the same answers."""
    import types

    from secmon.detect.inprocess import linear
    from secmon.detect.inprocess.match import SEARCH_AFTER, compile_view_matcher

    assert linear.probe_raw(types.SimpleNamespace()) is None  # a module lacking _re2 and _Anchor
    assert linear.probe_raw(types.SimpleNamespace(_re2=types.SimpleNamespace(RE2=None))) is None
    words = ["mimikatz", "sekurlsa::", "lsadump::", " -nop ", "vssadmin delete", "dpapi::", "token::", "misc::",
             "rpc::"]
    query = {"bool": {"should": [{"wildcard": {"process.command_line": {"value": f"*{w}*"}}} for w in words]
                      + [{"regexp": {"process.command_line": {"value": "cmd .*who[a-z]+", "flags": "NONE"}}}],
                      "minimum_should_match": 1}}
    values = [f"cmd /c {w} x" for w in words] + ["cmd /c whoami", "cmd /c who", "MIMIKATZ", "rpc:", ""]
    patterns = [SIZE, "a.*b", "(?:x){1001}", "[\u00e9]+"]
    texts = [encode(t) for t in ("", "ab", "a\nb", "x" * 1001, "\u00e9\u00e9", "x" * 1000 + "a" * 5)]
    with_raw = [[compile_fullmatch(p).test(t) for t in texts] for p in patterns]
    refused = compile_fullmatch("(?:x){1001}").fallback
    expected = _answers(compile_view_matcher(query), values, SEARCH_AFTER)

    monkeypatch.setattr(linear, "RAW", None)
    assert contains_any(tuple(w.encode() for w in words)) is None
    assert [[compile_fullmatch(p).test(t) for t in texts] for p in patterns] == with_raw
    assert compile_fullmatch("(?:x){1001}").fallback == refused == "RE2 refuses it (invalid repetition size: {1001})"
    assert _answers(compile_view_matcher(query), values, SEARCH_AFTER) == expected
    assert expected == [[True]] * (len(words) + 1) + [[False]] * 4  # one answer each, before and after


def _answers(predicate, values: list[str], calls: int) -> list[list[bool]]:  # type: ignore[no-untyped-def]
    """Each value's answers, asked until the predicate has run well past `calls` (its search compiled,
    or not): one answer per value when they agree before and after."""
    from secmon.detect.inprocess.match import View

    seen: list[set[bool]] = [set() for _ in values]
    for _ in range(calls // len(values) + 3):
        for i, value in enumerate(values):
            seen[i].add(predicate(View({"process": {"command_line": value}})))
    return [sorted(s) for s in seen]


@pytest.fixture(scope="module")
def windows_router(datasets: Path) -> RuleRouter:
    """The threat-hunting Windows rules of the community corpus and ours: hundreds of rules, with
    and without needles, routed by channel and event id, by category, or not at all."""
    corpus = datasets / "sigma_rules" / "rules-threat-hunting" / "windows"
    if not corpus.is_dir():
        pytest.skip(f"{corpus} is absent (../shared/datasets/sigma_rules)")
    rules = load_rules([corpus, Path(__file__).parents[2] / "rules" / "windows"]).rules
    # And two without a logsource term (no route): one with needles, one without (tried on every event).
    anywhere = {"wildcard": {"winlog.event_data.CommandLine": {"value": "*whoami*", "case_insensitive": True}}}
    unnamed = {"bool": {"must_not": [{"exists": {"field": "winlog.event_data.CommandLine"}}]}}
    extra = [replace(rules[0], id=f"anywhere-{n}", query=query, refine=None) for n, query in enumerate((anywhere, unnamed))]
    return RuleRouter([*rules, *extra])


@pytest.fixture(scope="module")
def sample_docs(datasets: Path) -> list[dict[str, Any]]:
    files = sorted((datasets / "evtx_attack_samples" / "jsonl").rglob("*.jsonl"))[::7]
    job = offline.OfflineJob(inputs=tuple(files), rule_paths=(), agency="a1", timezone="UTC",
                             pipelines=(Path(__file__).parents[2] / "pipelines",))
    return [dict(doc) for _, doc in offline._Reader(job, datetime.now(UTC)).documents()]


ROUTE_VALUES = st.one_of(
    st.sampled_from(["Security", "security", "SECURITY", "Microsoft-Windows-Sysmon/Operational",
                     "microsoft-windows-sysmon/operational", "System", "Windows PowerShell", "Security",
                     "1", "4688", "4624", "13", "7045", "4104", "process", "windows", "windows.security", ""]),
    st.integers(0, 5000), st.booleans(), st.just(1.0), st.text(max_size=6))


@hsettings(max_examples=150, deadline=None)
@given(st.data())
def test_a_looked_up_route_gives_the_candidates_of_the_plain_road(windows_router: RuleRouter,
                                                                  sample_docs: list[dict[str, Any]],
                                                                  data: st.DataObject) -> None:
    """`candidates` (the route looked up by the logsource fields' values, the needle scan limited to
    the rules it admits) answers `candidates_unrouted` (every needle hit, each hit's route tested),
    for real events whose logsource fields are rewritten: other cases, other ids, numbers, booleans
    (1, 1.0 and True are equal keys with other texts), lists, fields removed."""
    doc = copy.deepcopy(data.draw(st.sampled_from(sample_docs)))
    for path in data.draw(st.lists(st.sampled_from(["winlog.channel", "winlog.event_id", "event.dataset",
                                                    "event.module", "event.category"]), max_size=4)):
        parent, name = path.split(".")
        value = data.draw(st.one_of(ROUTE_VALUES, st.lists(ROUTE_VALUES, max_size=3), st.none()))
        if value is None:
            doc.get(parent, {}).pop(name, None)
        else:
            doc.setdefault(parent, {})[name] = value
    view = windows_router.view(doc)
    expected = windows_router.candidates_unrouted(view)
    assert windows_router.candidates(view) == expected
    assert windows_router.candidates(windows_router.view(doc)) == expected  # the route now remembered


def test_every_sample_event_has_the_candidates_of_the_plain_road(windows_router: RuleRouter,
                                                                 sample_docs: list[dict[str, Any]],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from secmon.detect.inprocess import router

    monkeypatch.setattr(router, "ROUTES", 3)  # routes forgotten and made again, often
    tried = 0
    for doc in sample_docs * 2:
        view = windows_router.view(doc)
        found = windows_router.candidates(view)
        assert found == windows_router.candidates_unrouted(view)
        tried += len(found)
    assert tried > len(sample_docs)  # the rules were tried on many events, not none
    assert windows_router._needled.get(None) and windows_router._always  # rules without a route, both kinds


def test_equal_values_of_other_types_get_their_own_routes(windows_router: RuleRouter,
                                                          sample_docs: list[dict[str, Any]]) -> None:
    """1, 1.0 and True are equal dictionary keys; as route keys they are "1", "1.0" and "True"."""
    sysmon = next(d for d in sample_docs if d["winlog"]["event_id"] == "1" and "Sysmon" in d["winlog"]["channel"])
    for order in ([1, 1.0, True, "1"], ["1", True, 1.0, 1], [1.0, 1, "1", True]):
        router = RuleRouter(windows_router.rules)
        for value in order:
            doc = copy.deepcopy(sysmon)
            doc["winlog"]["event_id"] = value
            view = router.view(doc)
            assert router.candidates(view) == router.candidates_unrouted(view), (order, value)


REGEX_PIECES = st.sampled_from(["a", "b", "`", "-f", "\\$\\{", "\\\\", "é", "中", "[ab]", "[a]", "(a|b)", "(ab|`c)",
                                "(ab|.)", ".", ".*", "a+", "(xy)+", "b?", "[^a]", "\\s", "\\w+", "(?i:ab)", "^", "$",
                                "\\b", "(?:)", "x{2}", "(?=a)", "A", "\\."])


@hsettings(max_examples=400, deadline=None)
@given(st.lists(REGEX_PIECES, min_size=1, max_size=6), st.booleans(),
       st.lists(st.text(alphabet=st.sampled_from("ab`-f${}\\é中xyAB .\n"), max_size=12), min_size=1, max_size=8))
def test_a_value_without_the_required_texts_never_matches(pieces: list[str], insensitive: bool,
                                                          values: list[str]) -> None:
    """linear.required_literals: every value a pattern matches holds one of its texts (so a value
    holding none is passed over), here for values built from the pattern's own pieces too."""
    from secmon.detect.inprocess.linear import required_literals

    source = ("(?i)" if insensitive else "") + "".join(pieces)
    try:
        pattern = compile_fullmatch(source)
    except Exception:  # noqa: BLE001 - a piece sequence RE2 and Python both refuse is no case
        return
    needed = required_literals(source)
    if needed is None:
        return
    import re

    instances = [v for v in values]
    for text in values:
        try:
            if re.fullmatch(source, text, re.DOTALL):
                instances.append(text)
        except re.error:
            return
    for value in instances:
        encoded = encode(value)
        if pattern.test(encoded):
            assert any(n in encoded for n in needed), (source, value, needed)


def test_required_texts_of_the_costly_community_patterns() -> None:
    from secmon.detect.inprocess.linear import required_literals
    from secmon.detect.sigma.lucene_regexp import python_source

    obfuscation = python_source(".*\\w+\\`(\\w+|\\-|[^\n])\\`[\\w+|\\s].*")
    assert required_literals(obfuscation) == (b"`",)
    assert required_literals(python_source(".*\\\"(\\{\\d\\})+\\\"\\s*\\-f.*")) == (b"-f",)
    assert required_literals(python_source(".*\\$\\{\\`?e\\`?n\\`?v.*", True)) == (b"${",)  # [Ee]: not exact
    assert required_literals("(?:a|b.*)c") == (b"c",)
    assert required_literals("(?:ab|cd)x?") == (b"ab", b"cd")
    assert required_literals("(?i)abc") is None and required_literals("[ab]+") is None
    assert required_literals("(?:ab|.)") is None  # a branch without a text


@hsettings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["plain", "has ` tick", "-f x", "${env", "a`b`c", "", "é`中"]), min_size=1, max_size=4))
def test_a_regexp_predicate_answers_alike_before_and_after_its_texts_are_read(values: list[str]) -> None:
    from secmon.detect.inprocess.match import SEARCH_AFTER, View, compile_view_matcher

    query = {"bool": {"should": [
        {"regexp": {"process.command_line": {"value": ".*\\w+\\`(\\w+|\\-|[^\n])\\`[\\w+|\\s].*", "flags": "NONE"}}},
        {"regexp": {"process.command_line": {"value": ".*x\\-f.*", "flags": "NONE"}}}], "minimum_should_match": 1}}
    predicate = compile_view_matcher(query)
    import re

    plain = [re.compile(p, re.DOTALL) for p in ("(?:.)*[0-9A-Z_a-z]+`(?:[0-9A-Z_a-z]+|-|[^\n])`[0-9A-Z_a-z+| \t\n\x0b\f\r](?:.)*",
                                                   "(?:.)*x-f(?:.)*")]
    for round_ in range(SEARCH_AFTER + 2):
        for value in values:
            expected = any(p.fullmatch(value) for p in plain)
            assert predicate(View({"process": {"command_line": value}})) == expected, (round_, value)
