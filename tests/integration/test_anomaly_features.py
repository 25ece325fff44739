"""The same features two ways: composite aggregations on the real node and in-process over the same
documents (hostile values included: long strings past ignore_above, control characters, lists,
numbers as text) must give identical entity-windows."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from secmon.detect.anomaly.detector import Detector, Feature
from secmon.detect.anomaly.features import in_process
from secmon.model import Severity
from secmon.service.train import window_stats
from secmon.store.indices import Indices
from secmon.store.templates import install_templates

pytestmark = [pytest.mark.integration]

T0 = datetime(2025, 3, 8, 0, 0, tzinfo=timezone.utc)
ZONE = "Asia/Ho_Chi_Minh"
DETECTOR = Detector(
    id="differential", title="d", description="", severity=Severity.LOW, tags=(),
    events=(("event.category", ("web", "authentication")),), entity="source.ip", window=timedelta(minutes=10),  # 4h slices: two of them
    path="differential.yml",
    features=(Feature("events", "count"), Feature("fails", "count", where=(("event.outcome", ("failure",)),)),
              Feature("errors", "ratio", where=(("http.response.status_code", ("400..499", "503")),),
                      of=(("event.category", ("web",)),)),
              Feature("users", "distinct", field="user.name"), Feature("bytes", "sum", field="http.response.bytes"),
              Feature("avg_bytes", "avg", field="http.response.bytes"),
              Feature("max_bytes", "max", field="http.response.bytes"), Feature("night", "off_hours"),
              Feature("methods", "by", field="http.request.method", limit=3),
              Feature("new_users", "new", field="user.name", limit=5),
              Feature("pairs", "new", field="process.parent.name", also="process.name", limit=50),
              Feature("url_len", "shape", field="url.original", measure="length", limit=20),
              Feature("url_entropy", "shape", field="url.original", measure="entropy", stat="max", limit=20),
              Feature("url_punct", "shape", field="url.original", measure="nonalnum", limit=20)))


def generated(seed: int, n: int) -> list[dict]:  # type: ignore[type-arg]
    rng = random.Random(seed)
    users = ["root", "admin", "nguyễn", "a\x1b[31mred", "x" * 1100, "tab\there"]
    urls = ["/", "/index.php?id=1' OR '1'='1", "/%2e%2e/%2e%2e/etc/passwd", "/" + "a" * 9000, "/ảnh/đẹp.png",
            "/search?q=" + "z" * 300, "/a\r\nb"]
    docs = []
    for _ in range(n):
        doc: dict = {"@timestamp": (T0 + timedelta(seconds=rng.randrange(0, 6 * 3600))).isoformat()  # type: ignore[type-arg]
                     .replace("+00:00", "Z"), "organization": {"id": "a"},
                     "event": {"category": [rng.choice(["web", "authentication", "network"])],
                               "outcome": rng.choice(["success", "failure"])},
                     "source": {"ip": rng.choice(["10.0.0.1", "10.0.0.2", "2001:db8::7", "203.0.113.9"])}}
        if rng.random() < 0.8:
            doc["user"] = {"name": rng.choice(users) if rng.random() < 0.9 else rng.sample(users, 2)}
        if rng.random() < 0.7:
            doc["http"] = {"request": {"method": rng.choice(["GET", "GET", "POST", "PUT", "DELETE", "PROPFIND"])},
                           "response": {"status_code": rng.choice([200, 200, 301, 404, 403, 500, 503]),
                                        "bytes": rng.randrange(0, 10**7)}}
            doc["url"] = {"original": rng.choice(urls)}
        if rng.random() < 0.3:
            doc["process"] = {"name": rng.choice(["sh", "cmd.exe", "python"]),
                              "parent": {"name": rng.choice(["httpd", "winword.exe"])}}
        docs.append(doc)
    return docs


def test_aggregations_and_in_process_compute_the_same_windows(es, prefix) -> None:  # type: ignore[no-untyped-def]
    indices = Indices(prefix)
    install_templates(es, indices)
    docs = generated(11, 3000)
    operations: list[dict] = []  # type: ignore[type-arg]
    for i, doc in enumerate(docs):
        operations += [{"create": {"_index": indices.events("a", T0), "_id": str(i)}}, doc]
    response = es.bulk(operations=operations, refresh=True)
    assert not response["errors"], [i for i in response["items"] if i["create"].get("error")][:2]
    start, end = T0, T0 + timedelta(hours=6)
    cluster = {(w.entity, w.start): w for w in window_stats(es, indices, DETECTOR, "a", ZONE, start, end)}
    local = {(w.entity, w.start): w for w in in_process(DETECTOR, docs, ZONE, start, end, agency="a")}
    assert set(cluster) == set(local) and len(cluster) > 50
    for key, mine in local.items():
        theirs = cluster[key]
        assert (theirs.count, theirs.first, theirs.last) == (mine.count, mine.first, mine.last), key
        assert theirs.values == mine.values and theirs.other == mine.other, key
        for name, value in mine.scalars.items():
            assert math.isclose(theirs.scalars[name], value, rel_tol=1e-9, abs_tol=1e-9), (key, name)
