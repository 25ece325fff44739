"""Benchmark the Sigma side of secmon on real data; writes bench/results/rules.json.

- compile: load + compile the whole community corpus (../shared/datasets/sigma_rules,
  SigmaHQ/sigma @8eaafff1, DRL 1.1), rules/s;
- offline matcher: every compiled community rule over every EVTX-ATTACK-SAMPLES event
  (sbousseaden/EVTX-ATTACK-SAMPLES @4ceed2f4, GPL-3.0; flattened by secmon.normalize.winlog),
  routed by logsource and prefiltered by needles (secmon.detect.inprocess.router.RuleRouter), events/s
  on one core (process CPU time, median of 5 passes), next to logsource routing alone on a sample.

Run: python bench/rules/bench_rules.py [--datasets ../shared/datasets]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from secmon.detect.sigma.load import load_rules
from secmon.detect.inprocess.router import RuleRouter
from secmon.normalize.winlog import flatten_evtx

ROOT = Path(__file__).resolve().parents[2]
PASSES = 5
SAMPLE_EVERY = 20  # routing-only comparison: every 20th event (it is ~100x slower)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rules.json")
    args = parser.parse_args()

    started = time.perf_counter()
    ruleset = load_rules([args.datasets / "sigma_rules"])
    compile_seconds = time.perf_counter() - started

    files = sorted((args.datasets / "evtx_attack_samples" / "jsonl").rglob("*.jsonl"))
    docs = [flatten_evtx(json.loads(line)) for path in files for line in path.open(encoding="utf-8")]

    started = time.perf_counter()
    router = RuleRouter(ruleset.rules)
    router_seconds = time.perf_counter() - started

    rates, candidates, matches = [], 0, 0
    for _ in range(PASSES):  # the machine is shared and noisy: the median of several passes
        started = time.process_time()
        candidates = matches = 0
        for doc in docs:
            view = router.view(doc)
            numbers = router.candidates(view)
            candidates += len(numbers)
            matches += sum(1 for n in numbers if router.predicate(n)(view))
        rates.append(len(docs) / (time.process_time() - started))

    # The same answers without the needle prefilter (logsource routing only, as before it), on a
    # sample: what the prefilter saves, measured in the same run.
    sample = docs[::SAMPLE_EVERY]
    started = time.process_time()
    for doc in sample:
        router.matching_routed_only(doc)
    routed_only_rate = len(sample) / (time.process_time() - started)

    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "corpus": {"rules_compiled": len(ruleset.rules), "problems": len(ruleset.problems),
                   "compile_seconds": round(compile_seconds, 2),
                   "rules_per_second": round(len(ruleset.rules) / compile_seconds, 1)},
        "offline_matcher": {"events": len(docs), "rules": len(ruleset.rules),
                            "router_build_seconds": round(router_seconds, 2),
                            "passes": PASSES,
                            "events_per_second_median": round(statistics.median(rates), 1),
                            "events_per_second_passes": [round(r) for r in rates],
                            "routing_only_events_per_second": round(routed_only_rate, 1),
                            "prefilter_speedup": round(statistics.median(rates) / routed_only_rate, 1),
                            "candidate_rules_per_event": round(candidates / len(docs), 1),
                            "rule_matches": matches, "target_events_per_second": 20000},
        "sources": {"sigma_rules": "SigmaHQ/sigma @8eaafff1 (DRL 1.1)",
                    "events": "sbousseaden/EVTX-ATTACK-SAMPLES @4ceed2f4 (GPL-3.0)"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
