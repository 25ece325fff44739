"""In-process features against an independent oracle (hypothesis): windows, counts, ratios, distinct
values, sums, off-hours shares in the agency's time zone, and string shapes, each computed here the
plainest way."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from secmon.detect.anomaly.detector import Detector, Feature, WorkingHours
from secmon.detect.anomaly.features import in_process
from secmon.model import Severity

T0 = datetime(2025, 3, 7, 20, 0, tzinfo=timezone.utc)  # a Friday evening: windows cross into the weekend
ZONE = "Asia/Ho_Chi_Minh"
DETECTOR = Detector(
    id="oracle", title="oracle", description="", severity=Severity.LOW, tags=(), events=(("event.kind", ("event",)),),
    entity="source.ip", window=timedelta(minutes=30), path="oracle.yml", working_hours=WorkingHours(8, 17),
    features=(Feature("events", "count"), Feature("failures", "count", where=(("event.outcome", ("failure",)),)),
              Feature("failure_ratio", "ratio", where=(("event.outcome", ("failure",)),)),
              Feature("errors", "ratio", where=(("http.response.status_code", ("400..499",)),)),
              Feature("users", "distinct", field="user.name"), Feature("bytes", "sum", field="network.bytes"),
              Feature("mean_bytes", "avg", field="network.bytes"), Feature("max_bytes", "max", field="network.bytes"),
              Feature("night", "off_hours"),
              Feature("url_length", "shape", field="url.original", measure="length", limit=1000),
              Feature("url_entropy", "shape", field="url.original", measure="entropy", stat="max", limit=1000),
              Feature("url_punct", "shape", field="url.original", measure="nonalnum", limit=1000)))

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
events = st.lists(st.fixed_dictionaries({
    "ms": st.integers(0, 6 * 3600 * 1000), "ip": st.sampled_from(["10.0.0.1", "10.0.0.2", "203.0.113.9"]),
    "kind": st.sampled_from(["event", "event", "alert"]), "outcome": st.sampled_from(["success", "failure", None]),
    "user": st.one_of(st.none(), texts), "status": st.one_of(st.none(), st.integers(100, 599)),
    "bytes": st.one_of(st.none(), st.integers(0, 10**9)), "url": st.one_of(st.none(), texts)}), max_size=60)


def doc(e: dict) -> dict:  # type: ignore[type-arg]
    moment = T0 + timedelta(milliseconds=e["ms"])
    out: dict = {"@timestamp": moment.isoformat().replace("+00:00", "Z"), "event": {"kind": e["kind"]},  # type: ignore[type-arg]
                 "source": {"ip": e["ip"]}, "organization": {"id": "a"}}
    for key, path in (("outcome", ("event", "outcome")), ("user", ("user", "name")),
                      ("status", ("http", "response", "status_code")), ("bytes", ("network", "bytes")),
                      ("url", ("url", "original"))):
        if e[key] is not None:
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = e[key]
    return out


def entropy(text: str) -> float:
    n = len(text)
    return sum(-(c / n) * math.log2(c / n) for c in Counter(text).values())


@settings(max_examples=150, deadline=None)
@given(events)
def test_in_process_features_equal_the_oracle(generated: list[dict]) -> None:  # type: ignore[type-arg]
    got = {(w.entity, w.start): w for w in in_process(DETECTOR, [doc(e) for e in generated], ZONE)}
    groups: dict[tuple[str, datetime], list[dict]] = defaultdict(list)  # type: ignore[type-arg]
    for e in generated:
        if e["kind"] == "event":
            start = T0.replace(minute=0) + timedelta(minutes=30 * ((e["ms"] // 60000) // 30))
            groups[(e["ip"], start)].append(e)
    assert set(got) == set(groups)
    local = ZoneInfo(ZONE)
    for key, members in groups.items():
        w = got[key]
        n = len(members)
        fails = sum(1 for e in members if e["outcome"] == "failure")
        numbers = [e["bytes"] for e in members if e["bytes"] is not None]
        urls = Counter(e["url"] for e in members if e["url"] is not None)
        off = sum(1 for e in members
                  if not (T0 + timedelta(milliseconds=e["ms"])).astimezone(local).weekday() < 5
                  or not 8 <= (T0 + timedelta(milliseconds=e["ms"])).astimezone(local).hour < 17)
        assert w.count == n
        assert w.first == T0 + timedelta(milliseconds=min(e["ms"] for e in members))
        expected = {
            "events": n, "failures": fails, "failure_ratio": fails / n,
            "errors": sum(1 for e in members if e["status"] is not None and 400 <= e["status"] <= 499) / n,
            "users": len({e["user"] for e in members if e["user"] is not None}),
            "bytes": sum(numbers), "mean_bytes": sum(numbers) / len(numbers) if numbers else 0.0,
            "max_bytes": max(numbers) if numbers else 0.0, "night": off / n,
            "url_length": sum(len(u) * c for u, c in urls.items()) / sum(urls.values()) if urls else 0.0,
            "url_entropy": max((entropy(u) for u in urls), default=0.0),
            "url_punct": (sum(sum(1 for ch in u if not ch.isalnum()) / len(u) * c for u, c in urls.items())
                          / sum(urls.values())) if urls else 0.0}
        for name, value in expected.items():
            assert math.isclose(w.scalars[name], value, rel_tol=1e-9, abs_tol=1e-9), (name, w.scalars[name], value)
