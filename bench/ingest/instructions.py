"""Machine instructions a line of `secmon collect`'s in-process stages take, counted by valgrind.

    python bench/ingest/instructions.py [--lines 20000] [--stages read,parse,to_doc,normalize,collect]

On a shared two-core machine CPU seconds move by 10-15 % from one run to the next with the load (other
processes take the caches and the cores), so a change of a few percent to the hot path cannot be seen in
`run.py`'s lines per CPU second. The number of instructions executed does not depend on the load: each
stage runs once under `valgrind --tool=cachegrind` (no cache simulation), in a fresh interpreter with
PYTHONHASHSEED=0, and a run that only sets up (imports, pipeline, normalizer) is subtracted. Stages are
cumulative, each the one before plus a step: `read` (FileReader records), `parse` (+ the pipeline's line
regex), `to_doc` (+ timestamp, fields and patterns: the ECS document), `normalize` (+ id, Event, counts:
`normalize_record`), `collect` (+ Batcher and BulkWriter.serialize: the bulk bytes, as `collect` makes them,
with the CLI's GC settings). Not counted: start-up, the HTTP client, the node. Lines are those of run.py
(loghub Linux.log, linux-auth). Instructions are not time (a cache miss costs more than an add), but
fewer of them on the same data is less work; PYTHONPATH chooses the checkout whose secmon is counted
(compare two with the same copy of this file). Under valgrind a stage runs about 50 times slower (20,000 lines: a minute each).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # after PYTHONPATH: that says which checkout's secmon is counted
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("read", "parse", "to_doc", "normalize", "collect")


def stage(name: str, log: Path) -> None:
    """Run `name` ("setup": none) over `log`: what valgrind counts."""
    from secmon.collect.files import read_records
    from secmon.normalize.engine import Normalizer
    from secmon.normalize.pipeline import load_pipelines
    from secmon.service.collect import Batcher, CollectOptions
    from secmon.service.records import SourceCounts, normalize_record
    from secmon.store.indices import Indices
    from secmon.store.writer import BulkWriter

    gc.freeze()
    gc.set_threshold(20_000, 50, 50)  # as `secmon collect` sets them (cli/collect.py)
    now = datetime(2026, 11, 30, tzinfo=timezone.utc)
    normalizer = Normalizer(load_pipelines([ROOT / "pipelines"])["linux-auth"], agency="so-tttt",
                            timezone="Asia/Ho_Chi_Minh", source=str(log), now=now, year=2005)
    counts = SourceCounts()
    if name == "read":
        for _ in read_records(log):
            pass
    elif name == "parse":
        for record in read_records(log):
            normalizer._parse(record.text.rstrip("\r\n"))
    elif name == "to_doc":
        for record in read_records(log):
            normalizer._to_doc(record.text.rstrip("\r\n"))
    elif name == "normalize":
        for record in read_records(log):
            normalize_record(normalizer, record, counts)
    elif name == "collect":
        class Discard:
            def submit(self, batch: object) -> None:
                pass

        writer = BulkWriter(None, Indices("bench"), now=lambda: now)  # type: ignore[arg-type]  # no request
        batcher = Batcher(writer, Discard(), "so-tttt", "linux-auth", CollectOptions(),  # type: ignore[arg-type]
                          lambda ends: ends)
        for record in read_records(log):
            batcher.add(normalize_record(normalizer, record, counts), record, "bench")
        batcher.flush()


def instructions(name: str, log: Path) -> int:
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind is not installed"
    # The real interpreter, not a launcher script (valgrind would count the shell).
    done = subprocess.run([valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                           os.path.realpath(sys.executable), __file__, "--stage", name, "--log", str(log)],
                          env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    assert found, done.stderr[-2000:]
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # inside valgrind: run this one stage
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        stage(args.stage, args.log)
        return
    from run import make_log  # the benchmark's own lines

    with tempfile.TemporaryDirectory(prefix="secmon-instructions-") as tmp:
        log = Path(tmp) / "linux.log"
        make_log(log, args.lines)
        base = instructions("setup", log)
        for name in args.stages.split(","):
            print(f"{name:10s} {(instructions(name, log) - base) / args.lines:10,.0f} instructions a line", flush=True)


if __name__ == "__main__":
    main()
