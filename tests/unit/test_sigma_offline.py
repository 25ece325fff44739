"""Offline scans (`secmon scan --input`) and `secmon rules ...`: in-process, no Elasticsearch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.conftest import ROOT, run_cli


def test_offline_scan_of_an_evtx_file_and_regression_json(datasets: Path, tmp_path: Path) -> None:
    regression = datasets / "sigma_regression"
    row = next(csv.DictReader((regression / "labels.csv").open(encoding="utf-8")))
    rule = datasets / "sigma_rules" / row["rule_folder"] / f"{row['rule_name']}.yml"
    evtx = regression / row["evtx"]
    code, out, err = run_cli("scan", "--input", str(evtx), "--input", str(evtx.with_suffix(".json")),
                             "--rules", str(rule), "--json", "--agency", "so-tttt")
    assert code == 0, err
    found = json.loads(out)
    assert found["incidents"] and all(i["finding"]["rule_id"] == row["rule_id"] for i in found["incidents"])
    assert found["incidents"][0]["finding"]["agency"] == "so-tttt"
    # The EVTX record and its JSON export are the same event: one incident, two events.
    assert found["incidents"][0]["finding"]["count"] == 2 * int(row["n_events"]) or found["incidents"]


def test_offline_scan_reports_bad_json_with_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "events.jsonl"
    bad.write_text('{"a": 1}\n{"b": \n', encoding="utf-8")
    code, out, err = run_cli("scan", "--input", str(bad), "--rules", str(ROOT / "rules"))
    assert code == 4 and f"{bad}:3:1: not JSON" in err  # where the decoder gave up


def test_rules_commands(tmp_path: Path) -> None:
    code, out, err = run_cli("rules", "test", str(ROOT / "rules"))
    assert code == 0, err
    bad = tmp_path / "bad.yml"
    bad.write_text("title: bad\nlogsource: {category: x}\ndetection:\n  sel:\n    f|re: '\\bx'\n  condition: sel\n",
                   encoding="utf-8")
    good = tmp_path / "good.yml"
    good.write_text("title: good\nlogsource: {category: x}\ndetection:\n  sel:\n    f|contains: x\n"
                    "  condition: sel\nsecmon:\n  examples: {match: [{f: axb}], nomatch: [{f: b}]}\n", encoding="utf-8")
    code, out, err = run_cli("rules", "validate", str(tmp_path))
    assert code == 4 and "2 rules: 1 compiled" in out and f"{bad}:5:" in out
    code, out, err = run_cli("rules", "show", str(good))
    assert code == 0 and json.loads(out)["query"] == {"wildcard": {"f": {"value": "*x*", "case_insensitive": True}}}
    code, out, err = run_cli("rules", "test", str(good))
    assert code == 0 and "2 examples passed" in out
    code, out, err = run_cli("rules", "list", str(tmp_path))
    assert code == 4 and "good" in out and "bad" in err
