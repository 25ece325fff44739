"""Anomaly detectors measured on real labelled data, and the cost of features by aggregation.

    python bench/anomaly/run.py --es-url http://127.0.0.1:9266 [--events 1000000]

Writes bench/results/anomaly.json and anomaly.md in one run (see bench/README.md for what each section
does). Every figure comes from this run: nothing is copied from elsewhere.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score  # noqa: E402

from secmon.detect.anomaly import fit  # noqa: E402
from secmon.detect.anomaly.detector import Detector, load_detector_file  # noqa: E402
from secmon.detect.anomaly.features import WindowStats, in_process  # noqa: E402
from secmon.detect.anomaly.templates import Templates  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "bench" / "results"
HERE = Path(__file__).resolve().parent
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
ZONE = "Asia/Ho_Chi_Minh"


def detector(path: Path) -> Detector:
    found, problems = load_detector_file(path)
    if found is None:
        raise SystemExit(f"{path}: {problems}")
    return found


def metrics(labels: list[int], scores: list[float], predicted: list[int]) -> dict[str, float]:
    return {"precision": round(float(precision_score(labels, predicted, zero_division=0)), 4),
            "recall": round(float(recall_score(labels, predicted, zero_division=0)), 4),
            "f1": round(float(f1_score(labels, predicted, zero_division=0)), 4),
            "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
            "pr_auc": round(float(average_precision_score(labels, scores)), 4)}


def thresholded(train_scores: np.ndarray, test_scores: np.ndarray, quantile: float) -> list[int]:
    """Every method is held to the same rule: anomalous above the quantile of its own baseline scores."""
    return [int(s > np.quantile(train_scores, quantile)) for s in test_scores]


# --- shared baselines -----------------------------------------------------------------------

def count_vectors(rows: list[Counter[str]], vocab: list[str]) -> np.ndarray:
    return np.asarray([[row.get(v, 0) for v in vocab] for row in rows], dtype=float)


def total_zscore_baseline(train: list[Counter[str]], test: list[Counter[str]], quantile: float, labels: list[int]
                          ) -> dict[str, float]:
    """Trivial: |z-score| of a window's total count against the baseline windows."""
    x_train = np.asarray([sum(row.values()) for row in train], dtype=float)
    x_test = np.asarray([sum(row.values()) for row in test], dtype=float)
    mean, std = x_train.mean(), max(x_train.std(), 1e-3)
    s_train, s_test = np.abs((x_train - mean) / std), np.abs((x_test - mean) / std)
    return metrics(labels, list(s_test), thresholded(s_train, s_test, quantile))


def zscore_baseline(train: list[Counter[str]], test: list[Counter[str]], quantile: float, labels: list[int]
                    ) -> dict[str, float]:
    """Trivial: the largest |z-score| of a window's per-value counts against the baseline (values the
    baseline never had count with the smallest spread)."""
    vocab = sorted({v for row in train + test for v in row})
    x_train, x_test = count_vectors(train, vocab), count_vectors(test, vocab)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1e-3)
    s_train = np.abs((x_train - mean) / std).max(axis=1)
    s_test = np.abs((x_test - mean) / std).max(axis=1)
    return metrics(labels, list(s_test), thresholded(s_train, s_test, quantile))


def plain_forest_baseline(train: list[Counter[str]], test: list[Counter[str]], quantile: float, labels: list[int],
                          seed: int = 0) -> dict[str, float]:
    """A plain scikit-learn IsolationForest on the raw per-value counts (the vocabulary of the baseline)."""
    vocab = sorted({v for row in train for v in row})
    x_train, x_test = count_vectors(train, vocab), count_vectors(test, vocab)
    forest = IsolationForest(n_estimators=100, random_state=seed).fit(x_train)
    s_train, s_test = -forest.score_samples(x_train), -forest.score_samples(x_test)
    return metrics(labels, list(s_test), thresholded(s_train, s_test, quantile))


def detector_scores(found: Detector, train: list[WindowStats], test: list[WindowStats], seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, float]:
    model = fit.build(found, "bench", train, T0, T0, T0, seed=seed)
    s_test = np.asarray([s.score for s in fit.score(model, found, test)])
    s_train = np.asarray([s.score for s in fit.score(model, found, train)])
    return s_train, s_test, model.threshold


# --- HDFS sessions --------------------------------------------------------------------------

def hdfs() -> dict[str, Any]:
    path = DATASETS / "hdfs_sessions_dev" / "data" / "hdfs" / "robust_log_valid.csv"
    with path.open() as handle:
        sessions = [(row["Sequence"].split(), int(row["label"])) for row in csv.DictReader(handle)]
    docs = []
    for i, (events, _) in enumerate(sessions):
        for j, event_id in enumerate(events):
            docs.append({"@timestamp": (T0 + timedelta(seconds=j)).isoformat(), "organization": {"id": "bench"},
                         "event": {"dataset": "hdfs", "code": event_id}, "labels": {"block_id": f"blk_{i}"}})
    out: dict[str, Any] = {"sessions": len(sessions), "anomalous": sum(label for _, label in sessions),
                           "protocol": "baseline = a random half of the normal sessions (seed s); evaluated on the "
                                       "other normal half and every anomalous session; all methods flag windows "
                                       "above the 0.995 quantile of their own baseline scores; seeds 0-4, mean"}
    for name in ("hdfs-sessions", "hdfs-sessions-vocabulary"):
        found = detector(HERE / "detectors" / f"{name}.yml")
        rows = {w.entity: w for w in in_process(found, docs, ZONE)}
        runs: dict[str, list[dict[str, float]]] = defaultdict(list)
        for seed in range(5):
            rng = np.random.default_rng(seed)
            normal = [i for i, (_, label) in enumerate(sessions) if label == 0]
            baseline = set(rng.permutation(normal)[: len(normal) // 2].tolist())
            test = [i for i in range(len(sessions)) if i not in baseline]
            labels = [sessions[i][1] for i in test]
            train_rows = [rows[f"blk_{i}"] for i in sorted(baseline)]
            test_rows = [rows[f"blk_{i}"] for i in test]
            s_train, s_test, threshold = detector_scores(found, train_rows, test_rows, seed)
            runs["detector"].append(metrics(labels, list(s_test), [int(s > threshold) for s in s_test]))
            if name == "hdfs-sessions":
                counts = [Counter(events) for events, _ in sessions]
                runs["zscore_total_count"].append(total_zscore_baseline(
                    [counts[i] for i in sorted(baseline)], [counts[i] for i in test], found.threshold, labels))
                runs["zscore_max_per_event_id"].append(zscore_baseline(
                    [counts[i] for i in sorted(baseline)], [counts[i] for i in test], found.threshold, labels))
                runs["plain_isolation_forest_counts"].append(plain_forest_baseline(
                    [counts[i] for i in sorted(baseline)], [counts[i] for i in test], found.threshold, labels, seed))
        if name == "hdfs-sessions":
            out.update(_mean(runs["detector"]))
            out["baselines"] = {k: _mean(v) for k, v in runs.items() if k != "detector"}
            out["per_seed"] = runs["detector"]
            out["features"] = [f.name for f in found.features]
        else:
            out["variant_with_per_event_id_counts"] = {**_mean(runs["detector"]),
                                                       "features": [f.name for f in found.features]}
    return out


def _mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}


# --- BGL: log templates by window ------------------------------------------------------------

def bgl() -> dict[str, Any]:
    path = DATASETS / "loghub_2k" / "BGL" / "BGL_2k.log"
    docs, alert_ms = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split(" ", 9)
        if len(parts) < 10:
            continue
        # the message as a syslog line carries it: type, component, level and text ("RAS KERNEL FATAL ...")
        label, epoch, content = parts[0], int(parts[1]), " ".join(parts[6:])
        moment = datetime.fromtimestamp(epoch, timezone.utc)
        docs.append({"@timestamp": moment.isoformat(), "organization": {"id": "bench"},
                     "event": {"module": "system"}, "host": {"hostname": "bgl"}, "message": content})
        if label != "-":
            alert_ms.append(moment)
    found = detector(ROOT / "rules" / "anomaly" / "log-templates-per-host.yml")
    out: dict[str, Any] = {"lines": len(docs), "alert_lines": len(alert_ms)}
    for window in (timedelta(hours=1), timedelta(days=1)):
        current = replace(found, window=window, min_windows=20)
        miner = Templates()
        rows = list(in_process(current, docs, ZONE, template_of=miner.of("message")))
        rows.sort(key=lambda r: r.start)
        labels_all = [int(any(r.start <= a < r.start + window for a in alert_ms)) for r in rows]
        half = len(rows) // 2  # baseline: the first half of the windows in time; evaluated on the second half
        train, test, labels = rows[:half], rows[half:], labels_all[half:]
        s_train, s_test, threshold = detector_scores(current, train, test)
        key = "window_1h" if window == timedelta(hours=1) else "window_1d"
        # the same after analyst feedback: the baseline's alert windows closed as true positives, so left out
        clean = [r for r, label in zip(train, labels_all[:half]) if not label]
        c_train, c_test, c_threshold = detector_scores(current, clean, test)
        after_feedback = {"baseline_windows": len(clean),
                          **metrics(labels, list(c_test), [int(s > c_threshold) for s in c_test])}
        template_counts = [Counter(r.values.get("templates", {})) for r in rows]
        for counter, row in zip(template_counts, rows):
            counter.update({k: v for k, v in row.values.get("new_templates", {}).items()})
        out[key] = {"windows": len(rows), "anomalous_windows": sum(labels_all), "baseline_windows": half,
                    "templates": len(miner.drain.id_to_cluster),
                    **metrics(labels, list(s_test), [int(s > threshold) for s in s_test]),
                    "after_feedback": after_feedback,
                    "baselines": {
                        "zscore_total_count": total_zscore_baseline(template_counts[:half], template_counts[half:],
                                                                    current.threshold, labels),
                        "zscore_max_per_template": zscore_baseline(template_counts[:half], template_counts[half:],
                                                                   current.threshold, labels),
                        "plain_isolation_forest_counts": plain_forest_baseline(
                            template_counts[:half], template_counts[half:], current.threshold, labels)}}
    out["protocol"] = ("lines (type, component, level and text) -> Drain3 templates (the shipped log-templates-per-host detector, window 1h and 1d); "
                       "a window is anomalous when it holds an alert line; baseline = the first half of the windows "
                       "in time (alerts included: nothing is cleaned), evaluated on the second half")
    out.update({k: out["window_1d"][k] for k in ("precision", "recall", "f1", "roc_auc", "pr_auc")})
    out["baselines"] = out["window_1d"]["baselines"]
    return out


# --- security cases on the cluster ------------------------------------------------------------

def cluster_setup(es_url: str, prefix: str) -> Any:
    from elasticsearch import Elasticsearch

    from secmon.store.indices import Indices
    from secmon.store.templates import install_templates

    es = Elasticsearch(es_url, request_timeout=300)
    indices = Indices(prefix)
    es.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    install_templates(es, indices)
    return es, indices


def ship(es: Any, indices: Any, docs: list[dict[str, Any]], agency: str) -> None:
    from secmon.model import Event, stable_id
    from secmon.store.writer import BulkWriter

    writer = BulkWriter(es, indices)
    events = [Event(id=stable_id("bench", agency, i), doc=doc) for i, doc in enumerate(docs)]
    stats = writer.write(events, agency)
    if stats.rejected:
        raise RuntimeError(f"{stats.rejected} events rejected: {stats.reasons}")
    es.indices.refresh(index=indices.events_pattern())


def normalized(pipeline_id: str, path: Path, agency: str, year: int | None = None) -> list[dict[str, Any]]:
    from secmon.collect.files import read_records
    from secmon.model import Event
    from secmon.normalize.engine import Normalizer
    from secmon.normalize.pipeline import load_pipelines

    pipeline = load_pipelines([ROOT / "pipelines"])[pipeline_id]
    normalizer = Normalizer(pipeline, agency=agency, timezone=ZONE, source=str(path),
                            now=datetime.now(timezone.utc), year=year)
    docs = []
    for record in read_records(path):
        item = normalizer.normalize(record.text, record.offset, record.record_id)
        if isinstance(item, Event):
            docs.append(dict(item.doc))
    return docs


def ranking(scores_by_entity: dict[str, float], positives: set[str], ks: tuple[int, ...]) -> dict[str, Any]:
    ranked = sorted(scores_by_entity, key=lambda e: -scores_by_entity[e])
    labels = [int(e in positives) for e in ranked]
    out: dict[str, Any] = {f"precision_at_{k}": round(sum(labels[:k]) / k, 4) for k in ks}
    out["roc_auc"] = round(float(roc_auc_score(labels, [scores_by_entity[e] for e in ranked])), 4)
    out["pr_auc"] = round(float(average_precision_score(labels, [scores_by_entity[e] for e in ranked])), 4)
    out["top"] = [{"entity": e, "score": round(scores_by_entity[e], 4), "label": int(e in positives)}
                  for e in ranked[: max(ks)]]
    return out


def ssh(es_url: str) -> dict[str, Any]:
    """loghub Linux.log: the SSH brute-force rule's incidents name the attackers; do they top the
    source-address anomalies?"""
    from secmon.detect.sigma.load import load_rules
    from secmon.service.scan import rule_findings
    from secmon.service.train import window_stats

    es, indices = cluster_setup(es_url, "bench-anomaly-ssh")
    docs = normalized("linux-auth", DATASETS / "loghub_linux_full" / "Linux" / "Linux.log", "a", 2005)
    ship(es, indices, docs, "a")
    stamps = sorted(d["@timestamp"] for d in docs)
    start = datetime.fromisoformat(stamps[0].replace("Z", "+00:00"))
    end = datetime.fromisoformat(stamps[-1].replace("Z", "+00:00")) + timedelta(seconds=1)
    rules = [r for r in load_rules([ROOT / "rules" / "linux" / "ssh-password-brute-force.yml"]).rules]
    attackers = {value for rule in rules for f in rule_findings(es, indices, rule, start, end)
                 for field, value in f.group if field == "source.address"}
    found = detector(ROOT / "rules" / "anomaly" / "ssh-auth-per-source.yml")
    rows = window_stats(es, indices, found, "a", ZONE, start, end)
    model = fit.build(found, "a", rows, start, end, start)  # unsupervised: the whole log is the baseline
    best: dict[str, float] = {}
    for scored in fit.score(model, found, rows):
        best[scored.row.entity] = max(best.get(scored.row.entity, 0.0), scored.score)
    out = {"events": len(docs), "windows": len(rows), "sources": len(best), "attackers_by_rule": len(attackers),
           "protocol": "the ssh-auth-per-source detector trained on the whole log (unlabelled, attacks included), "
                       "every source ranked by its most anomalous window; labels = source addresses of the "
                       "ssh-password-brute-force rule's findings over the same log",
           **ranking(best, attackers, (10, 20))}
    counts = Counter[str]()
    fails = Counter[str]()
    for row in rows:
        counts[row.entity] += row.count
        fails[row.entity] += int(row.scalars.get("failures", 0))
    out["baselines"] = {"most_events": {k: v for k, v in ranking({e: float(c) for e, c in counts.items()},
                                                                 attackers, (10, 20)).items() if k != "top"},
                        "most_failures": {k: v for k, v in ranking({e: float(c) for e, c in fails.items()},
                                                                   attackers, (10, 20)).items() if k != "top"}}
    es.indices.delete(index="bench-anomaly-ssh-*", ignore_unavailable=True, allow_no_indices=True)
    return out


def web(es_url: str) -> dict[str, Any]:
    """Ordinary traffic of a real site with scanner clients mixed in: do the scanners rank first?"""
    from secmon.service.train import window_stats

    es, indices = cluster_setup(es_url, "bench-anomaly-web")
    normal = normalized("apache-access", DATASETS / "web_normal_accesslog" / "apache_logs", "a")
    stamps = sorted(d["@timestamp"] for d in normal)
    first = datetime.fromisoformat(stamps[0].replace("Z", "+00:00"))
    last = datetime.fromisoformat(stamps[-1].replace("Z", "+00:00"))
    middle = first + (last - first) / 2
    scanners: list[dict[str, Any]] = []
    scanner_ips: set[str] = set()
    for n, path in enumerate(sorted((DATASETS / "web_scanner_accesslogs").glob("*.txt"))):
        docs = normalized("apache-access", path, "a")
        times = sorted(datetime.fromisoformat(d["@timestamp"].replace("Z", "+00:00")) for d in docs)
        shift = middle + timedelta(hours=3 * n + 1) - times[0]  # into the evaluated half, one file after another
        for d in docs:
            moment = datetime.fromisoformat(d["@timestamp"].replace("Z", "+00:00")) + shift
            d["@timestamp"] = moment.isoformat().replace("+00:00", "Z")
            scanner_ips.add(d["source"]["ip"])
        scanners += docs
    normal_ips = {d["source"]["ip"] for d in normal}
    ship(es, indices, normal + scanners, "a")
    found = detector(ROOT / "rules" / "anomaly" / "web-clients-per-source.yml")
    train = window_stats(es, indices, found, "a", ZONE, first, middle)
    until = max(datetime.fromisoformat(d["@timestamp"].replace("Z", "+00:00")) for d in scanners) + found.window
    test = window_stats(es, indices, found, "a", ZONE, middle, max(last + found.window, until))
    model = fit.build(found, "a", train, first, middle, first)
    best: dict[str, float] = {}
    for scored in fit.score(model, found, test):
        best[scored.row.entity] = max(best.get(scored.row.entity, 0.0), scored.score)
    k = len(scanner_ips & set(best))
    out = {"normal_lines": len(normal), "scanner_lines": len(scanners), "scanner_clients": sorted(scanner_ips),
           "clients_both_normal_and_scanner": sorted(scanner_ips & normal_ips),
           "baseline_windows": len(train), "evaluated_windows": len(test), "evaluated_clients": len(best),
           "protocol": "baseline = the first half of the normal log in time; the scanner logs are shifted into the "
                       "second half; each client of the second half ranked by its most anomalous 1h window; "
                       "labels = the scanner logs' client addresses",
           **ranking(best, scanner_ips, (k, 2 * k))}
    counts = Counter[str]()
    for row in test:
        counts[row.entity] += row.count
    out["baselines"] = {"most_requests": {key: v for key, v in ranking({e: float(c) for e, c in counts.items()},
                                                                       scanner_ips, (k, 2 * k)).items() if key != "top"}}
    flagged = {s.row.entity for s in fit.score(model, found, test) if s.anomalous(model.threshold)}
    labels = [int(e in scanner_ips) for e in best]
    out.update({key: v for key, v in metrics(labels, [best[e] for e in best], [int(e in flagged) for e in best]).items()
                if key in ("precision", "recall", "f1")})
    es.indices.delete(index="bench-anomaly-web-*", ignore_unavailable=True, allow_no_indices=True)
    return out


# --- cost: aggregations vs pulling raw events ---------------------------------------------------

COST_PREFIX = "bench-anomaly-cost"
COST_DAYS = 30


def cost(es_url: str, events: int) -> dict[str, Any]:
    es, indices = cluster_setup(es_url, COST_PREFIX)
    real = [d for d in normalized("linux-auth", DATASETS / "loghub_linux_full" / "Linux" / "Linux.log", "a", 2005)
            if d.get("process", {}).get("name") == "sshd" and d.get("source")]
    started = time.perf_counter()
    step = timedelta(days=COST_DAYS) / events
    from secmon.model import Event, stable_id
    from secmon.store.writer import BulkWriter

    writer = BulkWriter(es, indices)
    batch: list[Event] = []
    for i in range(events):
        doc = json.loads(json.dumps(real[i % len(real)]))
        doc["@timestamp"] = (T0 + step * i).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        doc["source"]["address"] = f"{doc['source']['address']}-{(i // len(real)) % 40}"  # ~ many sources
        batch.append(Event(id=stable_id("cost", i), doc=doc))
        if len(batch) == 2000:
            writer.write(batch, "a")
            batch = []
    if batch:
        writer.write(batch, "a")
    es.indices.refresh(index=indices.events_pattern())
    es.indices.forcemerge(index=indices.events_pattern(), max_num_segments=1)
    indexed = int(es.count(index=indices.events_pattern())["count"])
    out: dict[str, Any] = {"events": indexed, "index_seconds": round(time.perf_counter() - started, 1),
                           "detector": "ssh-auth-per-source (7 features, entity x 1h)", "runs": []}
    for share in (0.1, 1.0):
        end = T0 + timedelta(days=COST_DAYS) * share
        for method in ("aggregation", "raw"):
            result = subprocess.run([sys.executable, __file__, "--measure", method, "--es-url", es_url,
                                     "--to", end.isoformat()], capture_output=True, text=True, check=True)
            out["runs"].append({"share": share, **json.loads(result.stdout.strip().splitlines()[-1])})
    es.indices.delete(index=f"{COST_PREFIX}-*", ignore_unavailable=True, allow_no_indices=True)
    return out


def measure(method: str, es_url: str, end: datetime) -> dict[str, Any]:
    """One way of computing the features, in a process of its own so its peak RSS is its own."""
    from elasticsearch import Elasticsearch

    from secmon.detect.anomaly.features import events_query
    from secmon.service.train import window_stats
    from secmon.store.indices import Indices
    from secmon.store.search import sorted_matches

    es = Elasticsearch(es_url, request_timeout=600)
    indices = Indices(COST_PREFIX)
    found = detector(ROOT / "rules" / "anomaly" / "ssh-auth-per-source.yml")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if method == "aggregation":
        rows = window_stats(es, indices, found, "a", ZONE, T0, end)
        events = sum(r.count for r in rows)
    else:  # every matching event's fields pulled into Python (point in time + search_after), then grouped
        hits = sorted_matches(es, indices.events_pattern("a"), events_query(found, "a", T0, end), found.fields)
        pulled = [dict(h["fields"]) for h in hits]
        for doc in pulled:
            doc["organization.id"] = ["a"]
        rows = list(in_process(found, pulled, ZONE, agency="a"))
        events = len(pulled)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "events": events, "windows": len(rows), "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak / 1024, 1), "rss_before_mb": round(before / 1024, 1)}


# --- report ---------------------------------------------------------------------------------------

def markdown(results: dict[str, Any]) -> str:
    lines = ["# Anomaly detectors: evaluation", "",
             f"Run {results['date']} on {results['machine']['cpus']} CPUs (load average "
             f"{results['machine']['load_average']}), Python {results['machine']['python']}, "
             f"scikit-learn {results['machine']['scikit_learn']}. Produced by `bench/anomaly/run.py`; every "
             "number below is from this one run.", ""]
    row = "| {name} | {precision} | {recall} | {f1} | {roc_auc} | {pr_auc} |"
    for key, title in (("hdfs", "HDFS block sessions (hdfs_sessions_dev)"), ("bgl", "BGL, log templates by window")):
        if key not in results:
            continue
        data = results[key]
        lines += [f"## {title}", "", data["protocol"], "",
                  "| method | precision | recall | F1 | ROC-AUC | PR-AUC |", "|---|---|---|---|---|---|",
                  row.format(name="secmon detector", **data)]
        for name, values in data["baselines"].items():
            lines.append(row.format(name=name.replace("_", " "), **values))
        if "variant_with_per_event_id_counts" in data:
            lines.append(row.format(name="detector + per-event-id counts", **data["variant_with_per_event_id_counts"]))
        if key == "bgl":
            lines.append(row.format(name="detector, baseline after feedback", **data["window_1d"]["after_feedback"]))
            for window in ("window_1d", "window_1h"):
                w = data[window]
                lines += ["", f"{window}: " + ", ".join(f"{k} {w[k]}" for k in (
                    "windows", "anomalous_windows", "baseline_windows", "templates", "precision", "recall", "f1",
                    "roc_auc", "pr_auc")) + "; after feedback: " + json.dumps(w["after_feedback"])]
        lines.append("")
    for key, title in (("ssh", "SSH attackers on loghub_linux_full"), ("web", "Web scanners among real clients")):
        if key not in results:
            continue
        data = results[key]
        shown = {k: v for k, v in data.items() if k not in ("top", "baselines", "protocol", "scanner_clients")}
        lines += [f"## {title}", "", data["protocol"], "", "```", json.dumps(shown, indent=1), "```",
                  "Baselines: " + json.dumps(data["baselines"]), "", "Top of the ranking:", "",
                  "| entity | score | label |", "|---|---|---|"]
        lines += [f"| {t['entity']} | {t['score']} | {t['label']} |" for t in data["top"]]
        lines.append("")
    if "cost" in results:
        data = results["cost"]
        lines += ["## Cost: features by aggregation vs raw events pulled into Python", "",
                  f"{data['events']} events indexed ({data['index_seconds']} s), detector {data['detector']}.", "",
                  "| share of events | method | events | windows | seconds | peak RSS MB | RSS before MB |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['share']} | {r['method']} | {r['events']} | {r['windows']} | {r['seconds']} | "
                  f"{r['peak_rss_mb']} | {r['rss_before_mb']} |" for r in data["runs"]]
        lines.append("")
    lines += ["## Targets", ""] + [f"- {t}" for t in results.get("targets", [])]
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any]) -> list[str]:
    out = []
    if "hdfs" in results:
        h = results["hdfs"]
        base = h["baselines"]
        out.append(f"HDFS F1 >= 0.95: {'met' if h['f1'] >= 0.95 else 'NOT met'} ({h['f1']}); ROC-AUC >= 0.97: "
                   f"{'met' if h['roc_auc'] >= 0.97 else 'NOT met'} ({h['roc_auc']}); F1 against each baseline: "
                   + ", ".join(f"{name} {b['f1']} ({'beaten' if h['f1'] > b['f1'] else 'tied' if h['f1'] == b['f1'] else 'NOT beaten'})"
                               for name, b in base.items()))
    if "ssh" in results:
        s = results["ssh"]
        out.append(f"SSH attackers at the top of the source-address anomalies: precision@10 {s['precision_at_10']}, "
                   f"precision@20 {s['precision_at_20']} ({s['attackers_by_rule']} attackers by the rule)")
    if "web" in results:
        w = results["web"]
        k = len([c for c in w["scanner_clients"]])
        out.append(f"Web scanners rank first: {w['top'][:1] and w['top'][0]['label'] == 1}; "
                   + ", ".join(f"{key} {v}" for key, v in w.items() if key.startswith("precision_at")) +
                   f", ROC-AUC per client {w['roc_auc']} ({k} scanner clients)")
    if "cost" in results:
        runs = {(r["share"], r["method"]): r for r in results["cost"]["runs"]}
        full_a, full_r = runs[(1.0, "aggregation")], runs[(1.0, "raw")]
        tenth_a = runs[(0.1, "aggregation")]
        speed = full_r["seconds"] / max(full_a["seconds"], 1e-9)
        out.append(f"Aggregations >= 10x faster than raw events at {results['cost']['events']} events: "
                   f"{'met' if speed >= 10 else 'NOT met'} ({speed:.1f}x); memory flat: aggregation peak RSS "
                   f"{tenth_a['peak_rss_mb']} MB at 10% vs {full_a['peak_rss_mb']} MB at 100% "
                   f"(raw: {runs[(0.1, 'raw')]['peak_rss_mb']} -> {full_r['peak_rss_mb']} MB)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--only", nargs="*", default=["hdfs", "bgl", "ssh", "web", "cost"])
    parser.add_argument("--measure", choices=["aggregation", "raw"])
    parser.add_argument("--to")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.es_url, datetime.fromisoformat(args.to))))
        return
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(),
                    "scikit_learn": __import__("sklearn").__version__}}
    sections = {"hdfs": hdfs, "bgl": bgl, "ssh": lambda: ssh(args.es_url), "web": lambda: web(args.es_url),
                "cost": lambda: cost(args.es_url, args.events)}
    for name in args.only:
        started = time.perf_counter()
        results[name] = sections[name]()
        results[name]["section_seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: done in {results[name]['section_seconds']} s", file=sys.stderr)
    results["targets"] = targets(results)
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if set(args.only) == set(sections) else "-partial"
    (RESULTS / f"anomaly{suffix}.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (RESULTS / f"anomaly{suffix}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
