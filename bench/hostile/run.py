"""Hostile JSON at the issue's scale: 10,000 hypothesis-generated events per JSON source, on a real node.

    python bench/hostile/run.py --es-url http://127.0.0.1:9200 [--events 10000]

It runs tests/integration/test_hostile_json.py (which the suite runs with 300 events per source)
with --events per source, and writes the counts (lines, events, dead letters, skipped per
source; monthly indices; fields per index) and the time it took to bench/results/hostile.json.
The test's assertions hold at any size: lines in = events + dead letters + skipped, as said and
as stored; every index keeps the template's mapping; a real event after them is detected.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--events", type=int, default=10_000, help="hostile events per JSON source")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        counts = Path(folder) / "counts.json"
        env = {**os.environ, "SECMON_TEST_ES_URL": args.es_url, "SECMON_HOSTILE_EVENTS": str(args.events),
               "SECMON_HOSTILE_RESULTS": str(counts), "PYTHONPATH": str(ROOT)}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/integration/test_hostile_json.py"], cwd=ROOT, env=env)
        seconds = round(time.monotonic() - started, 1)
        if done.returncode != 0:
            sys.exit(f"the hostile JSON test failed at {args.events} events per source (exit {done.returncode})")
        result = json.loads(counts.read_text(encoding="utf-8"))
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"python": platform.python_version(), "processor": platform.machine(),
                          "cpus": os.cpu_count()},
              "seconds": seconds, **result}
    out = ROOT / "bench" / "results" / "hostile.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{out}: {sum(s['lines'] for s in result['sources'].values())} lines in {seconds} s")


if __name__ == "__main__":
    main()
