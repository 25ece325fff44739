"""Offline triage (`secmon scan --input`, issue 10 item 8): folders and globs, per-file counts and dead
letters in text and JSON, the exit code, and the compiled-rule cache (hit, miss, invalidation, damage)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from secmon.detect.cache import RuleCache
from secmon.detect.sigma.load import load_rules
from tests.conftest import ROOT, run_cli

SAMPLES = ("Lateral Movement/LM_WMI_4624_4688_TargetHost.evtx.jsonl", "Execution/exec_sysmon_1_ftp.evtx.jsonl",
           "Execution/revshell_cmd_svchost_sysmon_1.evtx.jsonl")


@pytest.fixture
def logs(datasets: Path, tmp_path: Path) -> Path:
    """Real EVTX JSON exports in nested folders, beside a file that is not a log."""
    root = tmp_path / "logs"
    for n, name in enumerate(SAMPLES):
        target = root / f"host{n}" / "deep" / Path(name).name
        target.parent.mkdir(parents=True)
        shutil.copy(datasets / "evtx_attack_samples" / "jsonl" / name, target)
    (root / "README.md").write_text("notes about the capture\n", encoding="utf-8")
    return root


def lines(path: Path) -> int:
    return sum(1 for line in path.open(encoding="utf-8") if line.strip())


def scan(*args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    code, out, err = run_cli("scan", *args, "--rules", str(ROOT / "rules" / "windows"), "--json")
    return code, json.loads(out) if out.strip().startswith("{") else {}, err


def test_a_folder_is_read_recursively_and_every_file_is_counted(logs: Path) -> None:
    code, summary, err = scan("--input", str(logs))
    assert code == 0, err
    files = sorted(logs.rglob("*.jsonl"))
    assert [r["path"] for r in summary["inputs"]] == [str(p) for p in files]
    for report, path in zip(summary["inputs"], files):
        assert report["events"] == lines(path) and report["dead_letters"] == 0, report
        assert report["reader"] == "json, windows-evtx"
    # The README is not a log: said (stderr and a note), not read as events, not silently dropped.
    assert f"not read: {logs / 'README.md'}: neither EVTX nor JSON" in err
    assert any("1 files of the folders and patterns given were not read" in n for n in summary["notes"])


def test_a_glob_names_the_same_files_as_the_folder(logs: Path) -> None:
    code, by_folder, err = scan("--input", str(logs))
    code2, by_glob, err2 = scan("--input", f"{logs}/**/*.jsonl")
    assert code == code2 == 0, err + err2
    assert by_glob["inputs"] == by_folder["inputs"]
    assert [i["id"] for i in by_glob["incidents"]] == [i["id"] for i in by_folder["incidents"]]
    code, out, err = run_cli("scan", "--input", f"{logs}/*.nothing", "--rules", str(ROOT / "rules"))
    assert code == 4 and "matches no file" in err


def test_dead_letters_are_counted_per_file_with_their_reason_and_fail_the_scan(logs: Path) -> None:
    broken = logs / "host0" / "deep" / "broken.jsonl"
    good = next((logs / "host1").rglob("*.jsonl")).read_text(encoding="utf-8")
    broken.write_text(good + '{"Event": {"System": 5\n' + '{"Event": "not an event"}\n', encoding="utf-8")
    code, out, err = run_cli("scan", "--input", str(logs), "--rules", str(ROOT / "rules" / "windows"))
    assert code == 4, err
    assert f"input {broken}: {lines(broken) - 2} events, 2 dead-lettered (json, windows-evtx)" in out
    assert "dead letters: 1 x not a JSON record" in out and f"first at {broken}:" in out
    assert f"secmon: warning: {broken}: 2 records could not be read or parsed" in err
    assert "--dead-letters warn" in err
    code, summary, err = scan("--input", str(logs), "--dead-letters", "warn")
    assert code == 0, err
    report = next(r for r in summary["inputs"] if r["path"] == str(broken))
    assert report["dead_letters"] == 2 and report["events"] == lines(broken) - 2
    assert sum(n for _, n in report["reasons"]) == 2 and report["first"] == f"{broken}:{lines(broken) - 1}"
    assert any("2 records of 1 file could not be read or parsed" in n for n in summary["notes"])


def test_parallel_workers_find_the_same(logs: Path) -> None:
    code, one, err = scan("--input", str(logs), "--jobs", "1")
    code2, two, err2 = scan("--input", str(logs), "--jobs", "2")
    assert code == code2 == 0, err + err2
    assert one["inputs"] == two["inputs"]
    assert [(i["id"], i["finding"]) for i in one["incidents"]] == [(i["id"], i["finding"]) for i in two["incidents"]]


# --- the compiled-rule cache ---------------------------------------------------------------------

@pytest.fixture
def rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(ROOT / "rules" / "windows", folder)
    return folder


def plain(ruleset):  # type: ignore[no-untyped-def]
    """What a rule set says, comparable whether it was compiled or read from the cache."""
    return [(r.id, r.path, json.dumps(r.query, sort_keys=True), r.refine, r.title, r.severity, r.correlation,
             r.timespan, r.options, r.unmapped) for r in ruleset.rules], ruleset.problems


def test_cache_hit_miss_and_a_rule_edited(rules: Path, tmp_path: Path) -> None:
    files = len(list(rules.rglob("*.yml")))
    first = RuleCache(tmp_path / "cache")
    compiled = first.load_rules([rules])
    assert (first.hits, first.misses, first.warnings) == (0, files, [])
    again = RuleCache(tmp_path / "cache")
    cached = again.load_rules([rules])
    assert (again.hits, again.misses, again.warnings) == (files, 0, [])
    assert plain(cached) == plain(compiled) == plain(load_rules([rules]))
    assert oct(os.stat(tmp_path / "cache").st_mode & 0o777) == oct(0o700)
    # A rule edited in place: that file, and only that file, is compiled again.
    edited = sorted(rules.rglob("*.yml"))[0]
    text = edited.read_text(encoding="utf-8")
    assert "title: " in text
    edited.write_text(text.replace("title: ", "title: Edited ", 1), encoding="utf-8")
    third = RuleCache(tmp_path / "cache")
    changed = third.load_rules([rules])
    assert (third.hits, third.misses) == (files - 1, 1)
    assert [r.title for r in changed.rules if r.path == str(edited)][0].startswith("Edited ")
    assert plain(changed) == plain(load_rules([rules]))
    # Touched, not changed (a checkout, a copy): read and hashed again, not compiled again.
    touched = sorted(rules.rglob("*.yml"))[1]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    fourth = RuleCache(tmp_path / "cache")
    assert plain(fourth.load_rules([rules])) == plain(changed)
    assert (fourth.hits, fourth.misses) == (files, 0)


def test_a_damaged_or_foreign_cache_file_is_ignored_with_a_warning(rules: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    RuleCache(folder).load_rules([rules])
    (target,) = folder.glob("rules-*.json")
    target.write_bytes(b'{"format": 2, "files": {"x": [1, ' + b"\xff" * 10)
    damaged = RuleCache(folder)
    ruleset = damaged.load_rules([rules])
    assert damaged.hits == 0 and damaged.misses > 0 and "cannot be read" in damaged.warnings[0]
    assert plain(ruleset) == plain(load_rules([rules]))
    healed = RuleCache(folder)  # rewritten whole by the run that found it damaged
    healed.load_rules([rules])
    assert healed.misses == 0 and not healed.warnings
    # An entry of the right shape with wrong contents: that file compiled again, said.
    data = json.loads(target.read_text(encoding="utf-8"))
    path, (digest, _, seen) = next(iter(data["files"].items()))
    data["files"][path] = [digest, {"rules": [{"id": 1}], "problems": [], "regexps": []}, seen]
    target.write_text(json.dumps(data), encoding="utf-8")
    partial = RuleCache(folder)
    assert plain(partial.load_rules([rules])) == plain(load_rules([rules]))
    assert partial.misses == 1 and "is damaged" in partial.warnings[0]
    # Writable by others: someone else may have put it there; not read.
    target.chmod(0o666)
    foreign = RuleCache(folder)
    foreign.load_rules([rules])
    assert foreign.hits == 0 and "not the user's own file" in foreign.warnings[0]


def test_the_scan_says_what_the_cache_warned(logs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    code, summary, err = scan("--input", str(logs), "--rule-cache", str(folder))
    assert code == 0, err
    for target in folder.glob("rules-*.json"):
        target.write_text("not json", encoding="utf-8")
    code, again, err = scan("--input", str(logs), "--rule-cache", str(folder))
    assert code == 0, err
    assert any(n.startswith("rule cache: ") and "compiled again" in n for n in again["notes"])
    assert [i["id"] for i in again["incidents"]] == [i["id"] for i in summary["incidents"]]


# --- rules that fail (--rule-failures, as the cluster scan) ---------------------------------------

def test_a_rule_that_fails_to_load_fails_the_offline_scan_unless_warned(logs: Path, rules: Path) -> None:
    (rules / "bad.yml").write_text("title: broken\nlogsource: {product: windows}\ndetection:\n  condition: nothing\n",
                                   encoding="utf-8")
    code, out, err = run_cli("scan", "--input", str(logs), "--rules", str(rules), "--no-rule-cache")
    assert code == 4 and "1 rules failed to load or run" in err and "--rule-failures warn" in err, (out, err)
    assert "bad.yml" in out  # the text report names it
    code, out, err = run_cli("scan", "--input", str(logs), "--rules", str(rules), "--no-rule-cache", "--json",
                             "--rule-failures", "warn")
    assert code == 0, err
    summary = json.loads(out)
    assert [Path(where.split(":")[0]).name for where, _ in summary["rules_failed"]] == ["bad.yml"]
    assert summary["rules_run"] > 1  # the other rules ran


def test_a_rule_whose_query_does_not_run_in_process_is_counted_not_fatal() -> None:
    from dataclasses import replace

    from secmon.detect.inprocess.router import findings_of, match_documents, RuleRouter

    good = load_rules([ROOT / "rules" / "windows"]).rules[0]
    odd = replace(good, id="odd", path="odd.yml", title="odd", query={"geo_shape": {"location": {}}}, refine=None)
    router = RuleRouter([good, odd])
    docs = [(f"e{n}", {"winlog": {"channel": "Security", "event_id": "4625"}}) for n in range(3)]
    matches = match_documents(router, docs)
    failures: list[tuple[str, str]] = []
    findings_of(router.rules, matches, failures)
    assert failures == [("odd.yml: odd", "its query does not run in-process (query type 'geo_shape' is not part of "
                                         "what the compiler emits): not matched against 3 events")]


def test_the_offline_scan_does_not_import_the_cluster_client(tmp_path: Path) -> None:
    """Start-up is most of a small offline run: `scan --input` imports neither the Elasticsearch
    client nor numpy (the other commands are imported when named, cli/main.py LAZY)."""
    import subprocess
    import sys

    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    code = ("import sys; from secmon.cli.main import main\n"
            "try:\n"
            f"    main(['scan', '--input', {str(empty)!r}, '--rules', {str(ROOT / 'rules' / 'windows')!r},"
            " '--no-rule-cache', '--json'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in ('elasticsearch', 'numpy', 'sklearn', 'apscheduler') if m in sys.modules),"
            " file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=300)
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


def test_offline_triage_of_any_log_needs_no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No -c, no $SECMON_CONFIG, no ./secmon.yml: the bundled rules and pipelines, Asia/Ho_Chi_Minh."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SECMON_CONFIG", raising=False)
    log = tmp_path / "auth.log"
    log.write_text("".join(f"Jun 14 15:{m // 60:02d}:{m % 60:02d} combo sshd[{1000 + m}]: Failed password for root "
                           f"from 218.188.2.4 port {4000 + m} ssh2\n" for m in range(0, 600, 10)), encoding="utf-8")
    code, out, err = run_cli("scan", "--input", str(log), "--source", "linux-auth", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["rules_run"] > 50 and result["inputs"][0]["events"] == 60
    assert any("brute" in i["finding"]["rule_title"].lower() for i in result["incidents"]), result["incidents"]
    assert {i["finding"]["agency"] for i in result["incidents"]} == {"offline"}
    # a config that is named but missing is still an error: a typo must not switch to the defaults
    code, out, err = run_cli("-c", str(tmp_path / "secmon-typo.yml"), "scan", "--input", str(log), "--source",
                             "linux-auth")
    assert code == 3 and "config file not found" in err, err
    monkeypatch.setenv("SECMON_CONFIG", str(tmp_path / "secmon-typo.yml"))
    assert run_cli("scan", "--input", str(log), "--source", "linux-auth")[0] == 3
