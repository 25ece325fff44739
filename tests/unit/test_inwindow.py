"""The in-process probe keeps its compiled rules between scans, and only while the rules are the same."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from secmon.detect import inwindow
from secmon.detect.compiled import CompiledRule


def rule(rule_id: str, query: dict[str, Any]) -> CompiledRule:
    return CompiledRule(id=rule_id, title=rule_id, description="", severity="high", tags=(), path=f"{rule_id}.yml",
                        query=query, group_by=(), threshold=1, timespan=timedelta(0), kind="single")


def hit(message: str, at: int) -> dict[str, Any]:
    return {"_source": {"message": message}, "fields": {"@timestamp": [at]}}


def matched(rules: list[CompiledRule], hits: list[dict[str, Any]]) -> dict[int, bool]:
    return {n: fresh is not None for n, fresh in inwindow.probe_documents(rules, hits).items()}


def test_a_second_scan_with_the_same_rules_reuses_what_the_first_compiled() -> None:
    rules = [rule("a", {"term": {"message": "alpha"}}), rule("b", {"term": {"message": "beta"}})]
    assert matched(rules, [hit("alpha", 1000)]) == {0: True, 1: False}
    first = inwindow._compiled(rules)
    # The scan rebuilds the rules each time (exceptions.exclude_query), with the same queries.
    again = [dataclasses.replace(r) for r in rules]
    assert matched(again, [hit("beta", 2000)]) == {0: False, 1: True}
    assert inwindow._compiled(again) is first


def test_a_changed_rule_is_matched_as_it_now_reads() -> None:
    rules = [rule("a", {"term": {"message": "alpha"}})]
    assert matched(rules, [hit("alpha", 1000)]) == {0: True}
    edited = [rule("a", {"term": {"message": "gamma"}})]  # the file changed: load.py compiled it again
    assert matched(edited, [hit("alpha", 1000)]) == {0: False}
    assert matched(edited, [hit("gamma", 1000)]) == {0: True}
    with_exception = [dataclasses.replace(edited[0], query={"bool": {"filter": [edited[0].query], "must_not": [
        {"term": {"host.name": "web1"}}]}})]
    assert matched(with_exception, [{"_source": {"message": "gamma", "host": {"name": "web1"}},
                                     "fields": {"@timestamp": [1000]}}]) == {0: False}


def test_the_window_search_reads_the_fields_of_the_rules_it_is_given() -> None:
    from datetime import UTC, datetime

    from secmon.model import ScanWindow

    window = ScanWindow(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC), "event.ingested")
    body = inwindow.window_search([rule("a", {"term": {"message": "alpha"}})], window)
    assert body is not None and "message" in body["_source"]["includes"]
    body = inwindow.window_search([rule("a", {"term": {"user.name": "root"}})], window)
    assert body is not None and "user.name" in body["_source"]["includes"]
    assert "message" not in body["_source"]["includes"] or "message" in inwindow.ROUTE_FIELDS


def test_a_rule_grouped_by_a_text_field_or_refused_by_the_node_is_left_to_the_node() -> None:
    """A text field has no doc values (the node would refuse the whole window search for them) and a
    wildcard on a number is refused by the node: those rules are undecided, the others decided here."""
    from datetime import UTC, datetime

    from secmon.model import ScanWindow

    window = ScanWindow(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC), "event.ingested")
    plain = rule("a", {"term": {"message": "alpha"}})
    by_text = dataclasses.replace(plain, id="b", group_by=("message.text",))
    by_keyword = dataclasses.replace(plain, id="c", group_by=("host.name",))
    on_number = rule("d", {"wildcard": {"process.pid": "1*"}})
    rules = [plain, by_text, by_keyword, on_number]
    body = inwindow.window_search(rules, window)
    assert body is not None
    asked = [f if isinstance(f, str) else f["field"] for f in body["docvalue_fields"]]
    assert "message.text" not in asked and "host.name" in asked, asked
    assert inwindow.builds_hits(rules, window)
    hits = [{"_source": {"message": "alpha", "process": {"pid": 12}}, "fields": {"@timestamp": [1000]}}]
    assert matched(rules, hits) == {0: True, 2: True}  # 1 and 3: probed on the node, which refuses them
