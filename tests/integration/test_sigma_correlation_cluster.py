"""Correlations on the real node: service.rule_findings (aggregation + time-ordered search + named
queries) gives exactly the findings the in-process path gives for the same events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import helpers

from secmon.service import scan as service
from secmon.detect.windowing.findings import findings, hits_from_docs
from secmon.detect.sigma.load import load_rule_file
from secmon.store.indices import Indices
from secmon.store.templates import install_templates
from tests.unit.test_sigma_correlate import BASE  # the same base rules, so both sides test one thing

pytestmark = [pytest.mark.integration]


CORRELATIONS = {
    "temporal_ordered": "  type: temporal_ordered\n  rules: [r_fail, r_ok]\n  group-by: [source.ip]\n  timespan: 2m",
    "temporal": "  type: temporal\n  rules: [r_fail, r_ok]\n  group-by: [source.ip]\n  timespan: 2m",
    "value_count": "  type: value_count\n  rules: [r_fail]\n  group-by: [source.ip]\n  timespan: 5m\n"
                   "  condition: {gte: 3, field: user.name}",
    "event_count_lt": "  type: event_count\n  rules: [r_fail]\n  group-by: [source.ip]\n  timespan: 1m\n"
                      "  condition: {lt: 2}",
    "fieldref": None,
}


def event(minute: int, second: int, action: str, ip: str, user: str) -> dict[str, Any]:
    return {"@timestamp": f"2026-01-01T00:{minute:02d}:{second:02d}Z", "organization": {"id": "so-tttt"},
            "event": {"module": "system", "dataset": "system.auth", "action": action},
            "process": {"name": "sshd"}, "source": {"ip": ip}, "user": {"name": user},
            "host": {"hostname": user if action == "same" else "gw"}}


EVENTS = [
    event(0, 0, "fail", "1.1.1.1", "a"), event(0, 10, "fail", "1.1.1.1", "b"), event(0, 20, "fail", "1.1.1.1", "c"),
    event(0, 50, "ok", "1.1.1.1", "c"),  # failures then success from 1.1.1.1
    event(5, 0, "ok", "2.2.2.2", "x"), event(5, 30, "fail", "2.2.2.2", "x"),  # success then failure
    event(9, 0, "fail", "3.3.3.3", "y"),  # a lone failure
    event(12, 0, "same", "4.4.4.4", "4.4.4.4"), event(12, 1, "same", "4.4.4.4", "other"),
]


def rule_file(tmp_path: Path, kind: str) -> Path:
    if kind == "fieldref":  # the host name equals the source address: an in-process refinement of hits
        text = ("title: fieldref\nid: 21111111-2222-4333-8444-555555555555\nlogsource: {product: linux, service: sshd}\n"
                "detection:\n  sel:\n    host.hostname|fieldref: source.ip\n  condition: sel\nlevel: low\n"
                "secmon: {group-by: [source.ip]}\n")
    else:
        docs = [BASE.format(name="r_fail", action="fail"), BASE.format(name="r_ok", action="ok"),
                f"title: {kind}\nid: 11111111-2222-4333-8444-555555555555\ncorrelation:\n{CORRELATIONS[kind]}\n"
                "level: high\n"]
        text = "---\n".join(docs)
    path = tmp_path / f"{kind}.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_cluster_and_in_process_correlations_agree(tmp_path: Path, es, prefix: str) -> None:  # type: ignore[no-untyped-def]
    indices = Indices(prefix)
    install_templates(es, indices)
    index = indices.events("so-tttt", datetime(2026, 1, 1))
    actions = ({"_index": index, "_id": f"e{n}", "_source": doc} for n, doc in enumerate(EVENTS))
    helpers.bulk(es, actions, refresh=True)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    expected_groups = {"temporal_ordered": {"1.1.1.1"}, "temporal": {"1.1.1.1", "2.2.2.2"},
                       "value_count": {"1.1.1.1"}, "event_count_lt": {"2.2.2.2", "3.3.3.3"},
                       "fieldref": {"4.4.4.4"}}
    for kind, groups in expected_groups.items():
        ruleset = load_rule_file(rule_file(tmp_path, kind))
        assert not ruleset.problems, ruleset.problems
        rule = next(r for r in ruleset.rules if r.title == kind)
        on_node = service.rule_findings(es, indices, rule, start, end)
        local = findings(rule, hits_from_docs(rule, [(f"e{n}", doc) for n, doc in enumerate(EVENTS)]), start)
        assert {dict(f.group).get("source.ip") for f in on_node} == groups, (kind, on_node)
        assert [(f.group, f.first_seen, f.count, f.sample_event_ids) for f in on_node] == \
            [(f.group, f.first_seen, f.count, f.sample_event_ids) for f in local], kind
