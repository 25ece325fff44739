"""The whole `secmon scan --input` command, start-up included, as an analyst runs it; writes
bench/results/offline.json and offline.md.

- samples: every EVTX-ATTACK-SAMPLES file (sbousseaden/EVTX-ATTACK-SAMPLES @4ceed2f4, GPL-3.0;
  8,255 events in 277 .evtx files) against the whole community corpus (SigmaHQ/sigma @8eaafff1,
  DRL 1.1; ~3,750 rule files), `--input FOLDER --rules FOLDER --json`:
  - cold: an empty rule cache (every rule file read, parsed by pySigma, compiled, indexed, cached);
  - warm: the cache of the run before (rules read back from it; the normal case for an analyst);
- start-up: the same command on an empty input file, warm cache: everything before the first event
  (interpreter, imports, rules read back, router built) and the report;
- million: the samples' JSON export (the same 8,255 events as one JSON line each) copied
  `--copies` times into a temporary folder (not the repository), warm cache, default --jobs.

Each figure is the wall-clock time of the whole process (`python -m secmon ...`: interpreter
start, imports, rules, reading and parsing every input through the windows-evtx pipeline,
matching, windowing, the JSON report on stdout), measured from outside with `time.perf_counter`
around `subprocess.run`, plus the process tree's CPU seconds and peak RSS (`getrusage` of the
children). Medians of `--runs`. Hayabusa, Chainsaw and Zircolite are run on the same files only if
they are installed (`shutil.which`); nothing is downloaded.

- floor: `evtx_dump -o jsonl FILE` (the Rust `evtx` crate's own tool, the parser Chainsaw and
  Hayabusa are built on) over the same .evtx files, one process per file, output counted and
  dropped, if it is installed (`--evtx-dump`, default $SECMON_EVTX_DUMP, PATH, or
  ~/.cache/secmon/peers/evtx/bin/evtx_dump). Parse only, no rule: a lower bound of what any tool
  reading these EVTX files pays, not a peer's figure.
- baseline (`--baseline CHECKOUT`): the same samples and start-up with another checkout's code
  (PYTHONPATH=CHECKOUT, its own cache, warmed by one cold run first), in the same run, so that
  before/after ratios share the machine's load.

Run: python bench/rules/offline.py [--runs 3] [--cold-runs 1] [--copies 122] [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ("hayabusa", "chainsaw", "zircolite", "zircolite.py")


def evtx_dump_floor(tool: str, files: list[Path]) -> dict[str, float]:
    """`evtx_dump -o jsonl` over every file, one process each: wall, CPU and the records written."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    records = 0
    for path in files:
        done = subprocess.run([tool, "-o", "jsonl", str(path)], capture_output=True, check=False)
        records += done.stdout.count(b"\n")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": round(wall, 2), "cpu_seconds": round(after.ru_utime + after.ru_stime - before.ru_utime
                                                             - before.ru_stime, 2), "events": records}


def find_evtx_dump(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("SECMON_EVTX_DUMP"), shutil.which("evtx_dump"),
                      str(Path.home() / ".cache" / "secmon" / "peers" / "evtx" / "bin" / "evtx_dump")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def git_commit(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() or "?"


def run(args: list[str], env: dict[str, str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "secmon", *args], env=env, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 4, 10):
        raise SystemExit(f"secmon exited {done.returncode}:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return {"seconds": round(wall, 2),
            "cpu_seconds": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
            "peak_rss_mb": round(after.ru_maxrss / 1024, 1), "exit_code": done.returncode,
            "events": sum(r["events"] for r in summary["inputs"]),
            "dead_letters": sum(r["dead_letters"] for r in summary["inputs"]),
            "incidents": len(summary["incidents"]), "rules_run": summary["rules_run"]}


def median_of(results: list[dict[str, float]]) -> dict[str, object]:
    out: dict[str, object] = {k: statistics.median(r[k] for r in results) for k in ("seconds", "cpu_seconds")}
    out.update({k: results[-1][k] for k in ("events", "dead_letters", "incidents", "rules_run", "exit_code")})
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    out["runs_seconds"] = [r["seconds"] for r in results]
    out["events_per_second"] = round(float(out["events"]) / float(out["seconds"]))  # type: ignore[arg-type]
    out["seconds_min_max"] = [min(r["seconds"] for r in results), max(r["seconds"] for r in results)]
    return out


def million(jsonl: Path, folder: Path, copies: int) -> int:
    """The samples' JSON lines, `copies` times, in 16 files (so that --jobs can share them out)."""
    lines = [line for path in sorted(jsonl.rglob("*.jsonl")) for line in path.open(encoding="utf-8") if line.strip()]
    outs = [(folder / f"part{n:02d}.jsonl").open("w", encoding="utf-8") for n in range(16)]
    for copy in range(copies):
        outs[copy % 16].writelines(lines)
    for out in outs:
        out.close()
    return len(lines) * copies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, help="runs with an empty cache (default: --runs)")
    parser.add_argument("--evtx-dump", help="the evtx_dump binary (the parse-only floor)")
    parser.add_argument("--baseline", type=Path, help="another checkout (before a change) timed in the same run")
    parser.add_argument("--baseline-commit", help="what the baseline is, when it is not a git checkout "
                                                  "(e.g. `git archive COMMIT` unpacked)")
    parser.add_argument("--copies", type=int, default=122)  # 122 x 8,255 = 1,007,110 events
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "offline.json")
    args = parser.parse_args()
    # Bytecode as an installed secmon has it (pip compiles at install): where PYTHONDONTWRITEBYTECODE is set,
    # a checkout would otherwise compile every module from source in every timed run.
    for checkout in (ROOT, *([args.baseline] if args.baseline else [])):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(checkout / "secmon")], check=True)
    samples = args.datasets / "evtx_attack_samples"
    corpus = args.datasets / "sigma_rules"
    load = os.getloadavg()
    result: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in load]},
        "command": "python -m secmon scan --input FOLDER --rules SIGMA_CORPUS --json",
        "peers": {name: shutil.which(name) or "not installed: not on crates.io or PyPI, and nothing is fetched "
                  "from elsewhere" for name in PEERS},
        "sources": {"events": "sbousseaden/EVTX-ATTACK-SAMPLES @4ceed2f4 (GPL-3.0)",
                    "sigma_rules": "SigmaHQ/sigma @8eaafff1 (DRL 1.1)"},
        "targets": {"samples_warm_seconds": 4, "million_events_per_second": 15000},
    }
    with tempfile.TemporaryDirectory(prefix="secmon-bench-") as scratch:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SECMON_CACHE_DIR": str(Path(scratch) / "cache")}
        # --rule-failures warn: 4 community rules do not compile (said in rules_failed); the others run.
        common = ["scan", "--rules", str(corpus), "--json", "--dead-letters", "warn", "--rule-failures", "warn"]
        evtx = ["--input", str(samples / "evtx")]
        cold = []
        for n in range(args.cold_runs or args.runs):
            shutil.rmtree(Path(scratch) / "cache", ignore_errors=True)
            cold.append(run([*common, *evtx], env))
            print("cold", n, cold[-1], flush=True)
        warm = []
        for n in range(args.runs):
            warm.append(run([*common, *evtx], env))
            print("warm", n, warm[-1], flush=True)
        jobs2 = [run([*common, *evtx, "--jobs", "2"], env) for _ in range(args.runs)]
        print("warm --jobs 2", jobs2, flush=True)
        empty = Path(scratch) / "empty.jsonl"
        empty.write_text("", encoding="utf-8")
        start = [run([*common, "--input", str(empty)], env) for _ in range(args.runs)]
        print("start-up", start, flush=True)
        result["startup_warm_cache"] = {**median_of(start), "what": "the whole command on an empty input: "
                                        "interpreter, imports, rules from the cache, router, report"}
        result["samples_cold_cache"] = {**median_of(cold), "what": "the whole command over the 277 .evtx files, "
                                        "empty rule cache: every rule file parsed by pySigma, compiled, cached"}
        result["samples_warm_cache"] = {**median_of(warm), "what": "the whole command over the 277 .evtx files, "
                                        "rules from the cache of the run before: start-up, EVTX parsing, the "
                                        "windows-evtx pipeline, routing, matching, windowing, the JSON report"}
        result["samples_warm_cache_jobs_2"] = {**median_of(jobs2), "what": "samples, warm cache, --jobs 2: the "
                                               "files shared out to 2 forked workers (what the default does from 16 MB of input, since 2026-11-30; 64 MB before)"}
        tool = find_evtx_dump(args.evtx_dump)
        if tool is None:
            result["floor_evtx_dump"] = "not installed"
        else:
            files = sorted(samples.joinpath("evtx").rglob("*.evtx"))
            floors = [evtx_dump_floor(tool, files) for _ in range(args.runs)]
            print("evtx_dump", floors, flush=True)
            result["floor_evtx_dump"] = {
                "seconds": statistics.median(f["seconds"] for f in floors),
                "cpu_seconds": statistics.median(f["cpu_seconds"] for f in floors),
                "runs_seconds": [f["seconds"] for f in floors], "events": floors[-1]["events"], "files": len(files),
                "tool": f"{tool} ({subprocess.run([tool, '--version'], capture_output=True, text=True).stdout.strip()})",
                "what": "parse only, no rule: `evtx_dump -o jsonl FILE` per file, output counted and dropped; "
                        "a lower bound of what any tool reading these EVTX files pays, not a peer's figure"}
        if args.baseline is not None:
            base_env = {**env, "PYTHONPATH": str(args.baseline.resolve()),
                        "SECMON_CACHE_DIR": str(Path(scratch) / "baseline-cache")}
            print("baseline cold", run([*common, *evtx], base_env), flush=True)
            base_warm = [run([*common, *evtx], base_env) for _ in range(args.runs)]
            base_start = [run([*common, "--input", str(empty)], base_env) for _ in range(args.runs)]
            print("baseline", base_warm, base_start, flush=True)
            result["baseline"] = {"checkout": str(args.baseline), "commit": args.baseline_commit or git_commit(args.baseline),
                                  "startup_warm_cache": median_of(base_start), "samples_warm_cache": median_of(base_warm),
                                  "what": "the same commands with the baseline checkout's code, in this run"}
            result["this_commit"] = git_commit(ROOT)
        if not args.skip_million:
            folder = Path(scratch) / "million"
            folder.mkdir()
            events = million(samples / "jsonl", folder, args.copies)
            print("million", events, "events written", flush=True)
            big = [run([*common, "--input", str(folder)], env)]
            print("million", big[-1], flush=True)
            result["million_warm_cache"] = {**median_of(big), "copies": args.copies, "files": 16,
                                            "jobs": "default (one per CPU, up to 4)",
                                            "what": "the whole command over the samples' JSON lines repeated; "
                                            "every copy is read, parsed, normalized and matched again (nothing "
                                            "is memoized across identical events); EVTX binary parsing not "
                                            "included (JSON input); one run"}
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
