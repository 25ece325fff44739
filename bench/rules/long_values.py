"""Long values (issue 10, item 5): how each way of keeping long text matchable does on this node.

The same events go into one index per candidate: PowerShell 4104 script blocks, most short (a few
hundred characters) and some 20 KB long, a few of which name Invoke-Mimikatz in the middle, plus
long blocks in Vietnamese (most letters 2 or 3 bytes in UTF-8). For each candidate: whether the node
has it, documents refused at index time, bulk time, store size, the time to answer
`ScriptBlockText|contains: Invoke-Mimikatz` (median of runs, the in-process check of fetched
values included), and recall against the truth.

    python bench/rules/long_values.py --es-url http://127.0.0.1:9200 [--events 20000] [--runs 5]

Candidates:
- keyword (today: ignore_above 8191) + `_ignored` + an in-process check over `_source` (secmon's choice);
- keyword with ignore_above 32766 (Lucene's longest term, in bytes): one term per value;
- keyword + an `ngram` (3) text sub-field as a superset, then the same in-process check;
- the `wildcard` field type (an x-pack module: absent from this node?).
Writes bench/results/long-values.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from elasticsearch import ApiError, Elasticsearch, helpers

FIELD = "winlog.event_data.ScriptBlockText"
MARKER = "Invoke-Mimikatz"
RESULTS = Path(__file__).resolve().parents[1] / "results" / "long-values.json"
SHORT = ["Get-ChildItem -Path C:\\Users -Recurse | Where-Object { $_.Length -gt 1MB }",
         "$s = New-Object System.Net.WebClient; $s.Headers.Add('User-Agent', 'x')",
         "Import-Module ActiveDirectory; Get-ADUser -Filter * -Properties LastLogonDate",
         "foreach ($i in 1..10) { Start-Sleep -Milliseconds 100; Write-Verbose $i }"]
VIETNAMESE = "Đây là đoạn mã kiểm tra cấu hình máy chủ của cơ quan nhà nước; "


def events(count: int, seed: int = 1) -> list[tuple[str, bool]]:
    """(script block, contains the marker): 2% 20 KB long (a third of them with the marker in the
    middle), 0.5% long Vietnamese (26,000 characters, 35 KB in UTF-8), 0.1% short with the marker."""
    rnd = random.Random(seed)
    out = []
    for n in range(count):
        roll = rnd.random()
        if roll < 0.02:
            body = "\n".join(rnd.choice(SHORT) for _ in range(20_000 // 70))[:20_000]
            marked = n % 3 == 0
            out.append((body[:10_000] + (f"\n{MARKER} -DumpCreds\n" if marked else "\n") + body[10_000:], marked))
        elif roll < 0.025:
            out.append(((VIETNAMESE * (26_000 // len(VIETNAMESE) + 1))[:26_000], False))
        elif roll < 0.026:
            out.append((rnd.choice(SHORT) + f"; {MARKER}", True))
        else:
            out.append(("; ".join(rnd.choice(SHORT) for _ in range(rnd.randint(1, 4))), False))
    return out


def keyword(ignore_above: int, ngram: bool = False) -> dict[str, Any]:
    mapping: dict[str, Any] = {"type": "keyword", "ignore_above": ignore_above}
    if ngram:
        mapping["fields"] = {"grams": {"type": "text", "analyzer": "grams", "index_options": "docs", "norms": False}}
    return mapping


CANDIDATES: dict[str, dict[str, Any]] = {
    "keyword-8191+_ignored+refine": {"field": keyword(8191)},
    "keyword-32766": {"field": keyword(32766)},
    "keyword-8191+ngram3+refine": {"field": keyword(8191, ngram=True), "settings": {"analysis": {
        "analyzer": {"grams": {"tokenizer": "grams", "filter": ["lowercase"]}},
        "tokenizer": {"grams": {"type": "ngram", "min_gram": 3, "max_gram": 3, "token_chars": []}}}}},
    "wildcard": {"field": {"type": "wildcard"}},
}


def nested(field: str, mapping: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = mapping
    for part in reversed(field.split(".")):
        out = {"properties": {part: out}}
    return out


def query(name: str) -> dict[str, Any]:
    contains = {"wildcard": {FIELD: {"value": f"*{MARKER}*", "case_insensitive": True}}}
    if name.startswith("keyword-8191+_ignored"):
        return {"bool": {"should": [contains, {"term": {"_ignored": FIELD}}], "minimum_should_match": 1}}
    if "ngram" in name:
        grams = {"match_phrase": {f"{FIELD}.grams": MARKER}}
        return {"bool": {"should": [contains, grams], "minimum_should_match": 1}}
    return contains


def answer(es: Elasticsearch, index: str, name: str) -> set[str]:
    """The ids the candidate detects: the node's hits, those not matched by the indexed keyword
    checked in-process on their whole `_source` value (a case-insensitive substring)."""
    response = es.search(index=index, query=query(name), size=10_000, _source=False,
                         docvalue_fields=[FIELD, "_ignored"], fields=[FIELD] if "refine" in name else None)
    found = set()
    for hit in response["hits"]["hits"]:
        fields = hit.get("fields", {})
        if "refine" in name and not any(MARKER.lower() in v.lower() for v in fields.get(FIELD, [])):
            whole = hit.get("ignored_field_values", {}).get(FIELD, [])
            if not any(MARKER.lower() in v.lower() for v in whole):
                continue
        found.add(hit["_id"])
    return found


def run(es: Elasticsearch, name: str, spec: dict[str, Any], docs: list[tuple[str, bool]], runs: int
        ) -> dict[str, Any]:
    index = f"bench-long-{uuid.uuid4().hex[:8]}"
    try:
        es.indices.create(index=index, mappings={"dynamic": False, **nested(FIELD, spec["field"])},
                          settings={"number_of_shards": 1, "number_of_replicas": 0, **spec.get("settings", {})})
    except ApiError as exc:
        return {"available": False, "why": str(exc.body.get("error", {}).get("reason", exc))[:300]}
    try:
        started = time.perf_counter()
        actions = ({"_index": index, "_id": str(n), "_source": {"winlog": {"event_data": {"ScriptBlockText": text}}}}
                   for n, (text, _) in enumerate(docs))
        ok, errors = helpers.bulk(es, actions, chunk_size=500, raise_on_error=False, refresh=False)
        es.indices.refresh(index=index)
        bulk_s = time.perf_counter() - started
        es.indices.forcemerge(index=index, max_num_segments=1)
        size = es.indices.stats(index=index, metric="store")["indices"][index]["total"]["store"]["size_in_bytes"]
        truth = {str(n) for n, (_, marked) in enumerate(docs) if marked}
        times, found = [], set()
        for _ in range(runs):
            started = time.perf_counter()
            found = answer(es, index, name)
            times.append(time.perf_counter() - started)
        refused = [e for e in errors if isinstance(e, dict)]
        return {"available": True, "refused_documents": len(refused),
                "refused_example": json.dumps(refused[0])[:300] if refused else None,
                "bulk_seconds": round(bulk_s, 2), "store_bytes": size,
                "query_seconds_median": round(statistics.median(times), 4),
                "detected": len(found & truth), "should_detect": len(truth), "false_positives": len(found - truth)}
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    es = Elasticsearch(args.es_url, request_timeout=300)
    docs = events(args.events)
    results = {name: run(es, name, spec, docs, args.runs) for name, spec in CANDIDATES.items()}
    info = es.info()
    out = {"what": "ScriptBlockText|contains: Invoke-Mimikatz over PowerShell 4104 blocks (2% 20 KB long, "
                   "0.5% 26,000-character Vietnamese, 35 KB in UTF-8); query time includes the in-process check of fetched "
                   "long values; store size after a force merge to one segment",
           "events": len(docs), "long_events": sum(len(t) > 8191 for t, _ in docs),
           "elasticsearch": info["version"]["number"], "machine": platform.platform(),
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}
    RESULTS.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
