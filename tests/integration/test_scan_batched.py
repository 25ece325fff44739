"""The batched rule executor (`service.scan.run_rules`) on the real node.

It must give exactly the findings of the per-rule path (`rule_findings`, one rule at a
time) for our whole library, in a handful of requests. The data: the real loghub Linux.log
for one agency (and its failed logins for a second), every rule's own examples as stored
events, and edge cases: a single rule with more candidate groups than narrowing takes, a
match without its group-by field, multi-valued group-by fields, and a burst with more hits
than one search answers (paged through a point in time). Most events were ingested
on OLD; a slice of them LATE, for scans by arrival time as the scheduler runs them.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from secmon.collect.files import read_records
from secmon.detect import inwindow, plan
from secmon.detect.windowing.findings import findings
from secmon.detect.sigma.compile import and_
from secmon.detect.inprocess.examples import examples_of
from secmon.detect.sigma.load import CompiledRule, load_rules
from secmon.detect.plan import window_filter
from secmon.model import Event, Finding, ScanWindow
from secmon.normalize.engine import Normalizer, put
from secmon.normalize.pipeline import load_pipelines
from secmon.service.scan import rule_findings, run_rules
from secmon.store.indices import Indices
from secmon.store.search import AGGREGATIONS_PER_MSEARCH, sorted_matches
from secmon.store.templates import install_templates
from tests.conftest import drop_prefix

pytestmark = [pytest.mark.integration, pytest.mark.dataset]

ROOT = Path(__file__).resolve().parents[2]
OLD = datetime(2026, 1, 1, tzinfo=UTC)
LATE = datetime(2026, 1, 2, tzinfo=UTC)
LATE_WINDOW = ScanWindow(LATE, LATE + timedelta(hours=1), "event.ingested")
QUIET_WINDOW = ScanWindow(LATE + timedelta(hours=1), LATE + timedelta(hours=2), "event.ingested")
EXAMPLES_AT = datetime(2005, 7, 1, tzinfo=UTC)  # the rule examples that carry no time of their own
EDGES_AT = datetime(2005, 7, 20, tzinfo=UTC)
FAN_OUT = 600  # hosts of one single rule's new matches: more candidate groups than narrowing takes
BURST_AT = EDGES_AT + timedelta(hours=2)
BURST = 5200  # root password changes on one host in 17 minutes: more hits than one search answers (FETCH)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


WINDOWS = {  # @timestamp windows, as `secmon scan --from --to` runs them
    "a busy month": ScanWindow(at(2005, 11, 1), at(2005, 12, 1)),
    "cutting the examples' bursts": ScanWindow(at(2005, 7, 1, 0, 20), at(2005, 7, 1, 3)),
    "cutting the correlations' examples": ScanWindow(at(2026, 11, 20, 2, 30), at(2026, 11, 23, 21, 30)),
    "edge cases": ScanWindow(EDGES_AT + timedelta(minutes=5), BURST_AT + timedelta(minutes=30)),
    "nothing": ScanWindow(at(2004, 1, 1), at(2004, 1, 2)),
}
ONE_DAY = ScanWindow(at(2005, 6, 15), at(2005, 6, 16))


class Counted:
    """The real client with every HTTP request it sends counted at the transport."""

    def __init__(self, url: str):
        self.es = Elasticsearch(url, request_timeout=60)
        self.sent: list[str] = []
        inner = self.es.transport.perform_request

        def counted(method: str, target: str, *args: Any, **kwargs: Any) -> Any:
            self.sent.append(f"{method} {target.split('?', 1)[0]}")
            return inner(method, target, *args, **kwargs)

        self.es.transport.perform_request = counted  # type: ignore[method-assign]

    def run(self, indices: Indices, rules: tuple[CompiledRule, ...], window: ScanWindow, in_process: bool = True
            ) -> tuple[Any, list[str]]:
        self.sent = []
        outcome = run_rules(self.es, indices, rules, window, in_process)
        return outcome, list(self.sent)


def probes(rules: tuple[CompiledRule, ...]) -> int:
    """Requests of the probe step: whatever the window holds, a handful per thousand rules."""
    return -(-len(rules) // AGGREGATIONS_PER_MSEARCH)


@pytest.fixture(scope="module")
def library() -> tuple[CompiledRule, ...]:
    ruleset = load_rules([ROOT / "rules"])
    assert not ruleset.problems and len(ruleset.rules) >= 200, (ruleset.problems, len(ruleset.rules))
    return ruleset.rules


@pytest.fixture(scope="module")
def counted(es_url: str) -> Iterator[Counted]:
    client = Counted(es_url)
    yield client
    client.es.close()


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def linux_events(datasets: Path) -> Iterator[tuple[str, dict[str, Any], datetime]]:
    """Linux.log through the linux-auth pipeline for so-tttt; its failed logins for portal."""
    path = datasets / "loghub_linux_full" / "Linux" / "Linux.log"
    pipeline = load_pipelines([ROOT / "pipelines"])["linux-auth"]
    normalizer = Normalizer(pipeline, agency="so-tttt", timezone="Asia/Ho_Chi_Minh", source=str(path), now=OLD,
                            year=2005)
    for n, record in enumerate(read_records(path)):
        item = normalizer.normalize(record.text, record.offset, record.record_id)
        if not isinstance(item, Event):
            continue
        # Late: every 7th event of two days (a collector that spooled, then caught up).
        late = n % 7 == 0 and "2005-06-15" <= str(item.doc["@timestamp"]) < "2005-06-17"
        yield item.id, dict(item.doc), LATE if late else OLD
        if item.doc.get("event", {}).get("action") == "ssh-login-failed":
            yield f"portal:{item.id}", {**copy.deepcopy(dict(item.doc)), "organization": {"id": "portal"}}, OLD


def nested(example: Mapping[str, Any], agency: str, when: datetime) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in example.items():
        put(doc, key, value)
    doc.setdefault("@timestamp", stamp(when))
    put(doc, "organization.id", agency)
    return doc


def example_events() -> Iterator[tuple[str, dict[str, Any], datetime]]:
    """Every rule's examples as stored events of agency `lab`; a single rule's match example three
    times, 25 minutes apart (one burst under an hour's suppression, for windows to cut)."""
    n = 0
    for path in sorted((ROOT / "rules").rglob("*.yml")):
        examples = examples_of(path) or {}
        for kind in ("match", "nomatch"):
            for e, example in enumerate(examples.get(kind) or []):
                n += 1
                base = EXAMPLES_AT + timedelta(minutes=7 * n)
                if isinstance(example, list):
                    for i, event in enumerate(example):
                        yield (f"ex:{path.stem}:{kind}:{e}:{i}", nested(event, "lab", base + timedelta(seconds=i)),
                               OLD)
                    continue
                for again in range(3 if kind == "match" else 1):
                    yield (f"ex:{path.stem}:{kind}:{e}:c{again}",
                           nested(example, "lab", base + timedelta(minutes=25 * again)), OLD)


def edge_events() -> Iterator[tuple[str, dict[str, Any], datetime]]:
    """SSH root login accepted (group-by host.hostname, source.ip), ingested LATE: FAN_OUT hosts, then
    matches lacking a group-by field, and with multi-valued ones. Then BURST failed logins."""
    example = dict((examples_of(ROOT / "rules/linux/ssh-root-login-accepted.yml") or {})["match"][0])
    for n in range(FAN_OUT):
        yield f"edge:fan:{n}", nested({**example, "host.hostname": f"h{n:03d}"}, "lab",
                                      EDGES_AT + timedelta(seconds=n)), LATE
    variants = [{k: v for k, v in example.items() if k != "host.hostname"},
                {k: v for k, v in example.items() if k != "source.ip"},
                {**example, "host.hostname": ["combo", "zz-other"]},
                {**example, "host.hostname": ["aa-first", "combo"]},
                {**example, "source.ip": ["10.0.0.9", "220.135.151.1"]},
                example]
    for n, variant in enumerate(variants):
        for again in range(2):
            when = EDGES_AT + timedelta(minutes=30 + 20 * again + n)
            yield f"edge:var:{n}:{again}", nested(variant, "lab", when), LATE if again else OLD
    # A web shell's path too long to index (url.path keeps 1,024 characters): only the rules' long-value
    # part finds it on the node, and the in-process probe must too (by the value's length, not its text).
    shell = dict((examples_of(ROOT / "rules/web/web-shell-accessed.yml") or {})["match"][0])
    padded = "/" + "a" * 1100 + str(shell["url.path"])
    yield "edge:long", nested({**shell, "url.path": padded, "url.original": padded}, "lab",
                              EDGES_AT + timedelta(minutes=10)), OLD
    # A single rule, which no correlation reads: the correlations' windowing is not what is tested here.
    changed = dict((examples_of(ROOT / "rules/linux/root-password-changed.yml") or {})["match"][0])
    for n in range(BURST):
        yield (f"edge:burst:{n}", nested({**changed, "process.pid": n}, "lab", BURST_AT + n * timedelta(
            milliseconds=200)), OLD)


@pytest.fixture(scope="module")
def loaded(es: Elasticsearch, datasets: Path) -> Iterator[Indices]:  # type: ignore[misc]
    indices = Indices(f"t{uuid.uuid4().hex[:10]}")
    install_templates(es, indices)

    def actions() -> Iterator[dict[str, Any]]:
        for ident, doc, ingested in [*linux_events(datasets), *example_events(), *edge_events()]:
            event = doc.setdefault("event", {})
            event["ingested"] = stamp(ingested)
            when = datetime.fromisoformat(str(doc["@timestamp"]).replace("Z", "+00:00"))
            yield {"_index": indices.events(doc["organization"]["id"], when), "_id": ident, "_source": doc}

    ok, errors = helpers.bulk(es, actions(), chunk_size=5000, raise_on_error=False)
    assert not errors, errors[:3]
    es.indices.refresh(index=indices.events_pattern())
    yield indices
    drop_prefix(es, indices.prefix)


REFERENCE: dict[str, list[Finding]] = {}  # the per-rule findings of each window, for both probes


def ordered(findings: Any) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.rule_id, f.agency, f.group, f.first_seen, f.sample_event_ids))


def per_rule(es: Elasticsearch, indices: Indices, rules: tuple[CompiledRule, ...], window: ScanWindow
             ) -> list[Finding]:
    """The reference: every rule on its own, as `rule_findings` runs it."""
    if window.field == "@timestamp":
        return [f for rule in rules for f in rule_findings(es, indices, rule, window.start, window.end)]
    found = []
    for rule in rules:
        if plan.window_only(rule, window):  # a single rule: its matches in the window, all new
            hits = list(sorted_matches(es, indices.events_pattern(),
                                       and_([window_filter(window.start, window.end, window.field),
                                             plan.matching(rule)]), plan.hit_fields(rule), plan.long_fields(rule)))
            found += findings(rule, hits, None, new=frozenset(str(h["_id"]) for h in hits))
            continue
        # a correlation by arrival: around the rule's own new matches, one timespan either side
        response = es.search(index=indices.events_pattern(), size=0,
                             query=and_([window_filter(window.start, window.end, window.field), rule.query]),
                             aggs={"first": {"min": {"field": "@timestamp"}}, "last": {"max": {"field": "@timestamp"}}})
        if response["aggregations"]["first"]["value"] is None:
            continue
        first = datetime.fromtimestamp(response["aggregations"]["first"]["value"] / 1000, UTC)
        last = datetime.fromtimestamp(response["aggregations"]["last"]["value"] / 1000, UTC)
        found += rule_findings(es, indices, rule, first, last + rule.timespan + timedelta(milliseconds=1),
                               ingested=window)
    return found


@pytest.mark.parametrize("probe", ["in-process", "too many for in-process"])
@pytest.mark.parametrize("name", [*WINDOWS, "arrived LATE"])
def test_batched_findings_equal_rule_by_rule(name: str, probe: str, es: Elasticsearch, loaded: Indices,
                                             counted: Counted, library: tuple[CompiledRule, ...],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Both probes (the window's events matched in-process, or a size-0 search per rule on the node
    when the window holds more than WINDOW_LIMIT events) give the findings of the per-rule path
    (computed once per window). `in_process=False` (node probes only) is tested below."""
    window = WINDOWS.get(name, LATE_WINDOW)
    if probe == "too many for in-process":
        monkeypatch.setattr(inwindow, "WINDOW_LIMIT", 10)
    outcome, sent = counted.run(loaded, library, window)
    assert outcome.failures == ()
    if name not in REFERENCE:
        REFERENCE[name] = ordered(per_rule(es, loaded, library, window))
    expected = REFERENCE[name]
    assert ordered(outcome.findings) == expected
    assert outcome.requests == len(sent), sent
    rules = {f.rule_id for f in expected}
    print(f"\n{name}: {len(expected)} findings of {len(rules)} rules, batched in {len(sent)} requests: {sent}")
    # In-process, the window's events are read first, in one search (each window here has fewer
    # than WINDOW_LIMIT); then only the fetch of the rules that matched.
    assert sent[0] == f"POST /{loaded.events_pattern()}/_search", sent
    if probe == "too many for in-process" and name != "nothing":  # then the per-rule probes
        assert sent[1:1 + probes(library)] == ["POST /_msearch"] * probes(library), sent
    if name == "nothing":  # the window search alone: it holds no event
        assert not expected and len(sent) == 1
    else:
        assert expected, "a window that proves nothing"
    if name == "edge cases":  # the burst's hits do not fit one answer; the long path is a web shell
        assert any("_pit" in request for request in sent), sent
        assert any("edge:long" in f.sample_event_ids for f in expected), expected


def test_a_scheduled_scan_of_the_library_costs_a_handful_of_requests(loaded: Indices, counted: Counted,
                                                                      library: tuple[CompiledRule, ...]) -> None:
    outcome, sent = counted.run(loaded, library, LATE_WINDOW)
    matched = {f.rule_id for f in outcome.findings}
    assert 2 <= len(matched) <= 10 and not outcome.failures, (matched, outcome.failures)
    assert len(sent) <= 1 + 5 and outcome.requests == len(sent), sent
    outcome, sent = counted.run(loaded, library, QUIET_WINDOW)
    assert outcome.findings == () and outcome.failures == ()
    assert len(sent) == 1 and outcome.requests == len(sent), sent  # its events, read and matched in-process


@pytest.mark.parametrize("in_process", [True, False])
def test_a_rule_the_node_refuses_fails_alone(in_process: bool, loaded: Indices, counted: Counted,
                                             library: tuple[CompiledRule, ...]) -> None:
    base = next(rule for rule in library if rule.kind == "single")
    broken = (dataclasses.replace(base, id="wildcard-on-a-number", query={"wildcard": {"process.pid": "1*"}}),
              dataclasses.replace(base, id="grouped-by-text", group_by=("message.text",)))
    window = ONE_DAY
    clean, clean_sent = counted.run(loaded, library, window, in_process)
    outcome, sent = counted.run(loaded, (*library[:40], *broken, *library[40:]), window, in_process)
    assert [rule for rule, _ in outcome.failures] == ["wildcard-on-a-number", "grouped-by-text"]
    assert "wildcard" in outcome.failures[0][1] and "message.text" in outcome.failures[1][1], outcome.failures
    assert ordered(outcome.findings) == ordered(clean.findings) and clean.findings
    assert len(sent) <= probes(library) + 5, sent
    if in_process:  # the window search holds (a text field's doc values are not asked): the two are probed
        assert sent[0] == f"POST /{loaded.events_pattern()}/_search" and sent[1] == "POST /_msearch", sent
        assert len(sent) == len(clean_sent) + 1, (sent, clean_sent)  # one _msearch more than the clean run
