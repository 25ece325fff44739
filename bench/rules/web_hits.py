"""Our web rules on real scanner traffic, before and after URL decoding (issue 10, item 6).

Before: the `apache-access` pipeline and `rules/web/` as they are on a git revision (default
`main`: URLs stored as sent, rules listing a few literal encodings). After: this checkout's
pipeline (url.path and url.query decoded) and rules. Both run in-process over:

- ../shared/datasets/web_scanner_accesslogs: Acunetix, Netsparker and w3af scans (ocatak
  apache-http-logs) and the EVTX-ATTACK-SAMPLES web-attack log: every line is scanner traffic,
  though not every request carries a payload;
- ../shared/datasets/web_normal_accesslog: 10,000 lines of an ordinary website, where an
  attack rule's hit is most likely a false positive.

For each rule: the events it fires on per file; and per file the events any attack-payload rule
fires on. Writes bench/results/web-rules.json.

    python bench/rules/web_hits.py [--before main] [--datasets ../shared/datasets]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from secmon.detect.sigma.load import CompiledRule, load_rules
from secmon.detect.inprocess.match import matches
from secmon.model import Event
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import Pipeline, load_pipelines

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD_RULES = ("SQL injection", "Cross-site scripting", "Path traversal", "File inclusion", "OS command",
                 "JNDI", "Shellshock", "Web vulnerability scanner payload", "Web shell")


def from_revision(revision: str, folder: str, into: Path) -> Path:
    """The files of `folder` as they are at `revision` (git), copied under `into`."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{revision}:{folder}"],
                           check=True, capture_output=True, text=True).stdout.split()
    target = into / folder
    target.mkdir(parents=True)
    for name in names:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{folder}/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (target / name).write_text(text, encoding="utf-8")
    return target


def events(pipeline: Pipeline, path: Path) -> tuple[list[dict[str, Any]], int]:
    normalizer = Normalizer(pipeline, agency="bench", timezone="UTC", source=str(path), now=datetime.now(UTC))
    docs, rejected = [], 0
    with path.open(encoding="utf-8", errors="replace") as lines:
        for n, line in enumerate(lines):
            result = normalizer.normalize(line, n, f"{path.name}:{n}")
            if isinstance(result, Event):
                docs.append(result.doc)
            else:
                rejected += 1
    return docs, rejected


def hits(rules: list[CompiledRule], docs: list[dict[str, Any]]) -> dict[str, Any]:
    per_rule = {r.title: 0 for r in rules}
    payload_events = 0
    for doc in docs:
        fired = [r.title for r in rules if matches(r.query, doc, whole=True)]
        for title in fired:
            per_rule[title] += 1
        payload_events += any(t.startswith(PAYLOAD_RULES) for t in fired)
    return {"events_any_payload_rule": payload_events, "per_rule": {k: v for k, v in per_rule.items() if v}}


def side(pipeline: Pipeline, rules: list[CompiledRule], files: list[Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in files:
        docs, rejected = events(pipeline, path)
        out[path.name] = {"events": len(docs), "dead_letters": rejected, **hits(rules, docs)}
        out[path.name]["url_undecodable"] = sum("url_undecodable" in d.get("tags", []) for d in docs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="main", help="git revision of the 'before' pipeline and rules")
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "web-rules.json")
    args = parser.parse_args()
    files = sorted((args.datasets / "web_scanner_accesslogs").glob("*.txt")) + [
        args.datasets / "web_normal_accesslog" / "apache_logs"]
    single = [r for r in load_rules([ROOT / "rules" / "web"]).rules if r.kind == "single"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        old_pipelines = load_pipelines([from_revision(args.before, "pipelines", Path(tmp))])
        old_rules = [r for r in load_rules([from_revision(args.before, "rules/web", Path(tmp))]).rules
                     if r.kind == "single"]
        before = side(old_pipelines["apache-access"], old_rules, files)
    after = side(load_pipelines([ROOT / "pipelines"])["apache-access"], single, files)
    result = {
        "what": "events each single web rule of rules/web fires on (in-process, the same semantics as the node), "
                "before = pipeline and rules at the 'before' revision (URLs as sent), after = this checkout "
                "(url.path/url.query decoded); web_normal_accesslog is ordinary traffic (hits there are "
                "likely false positives); correlation rules (brute force) are not counted",
        "before_revision": args.before,
        "after_revision": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True).stdout.strip(),
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.perf_counter() - started, 1),
        "files": {name: {"before": before[name], "after": after[name]} for name in before},
    }
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({n: {k: v["events_any_payload_rule"] for k, v in f.items()} for n, f in result["files"].items()},
                     indent=2))


if __name__ == "__main__":
    main()
