"""A broken rule file is a problem of that file (file:line, reason) in `rules validate`, `rules list`,
`rules test` and every scan; the other files load and run. "0 rules, 0 problems" never hides one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from secmon.detect.sigma.load import load_rules
from tests.conftest import DATASETS, ROOT, run_cli, write_config

GOOD = ROOT / "rules" / "linux" / "ssh-password-brute-force.yml"

# file name -> (content, where the problem is reported, words of the reason)
BAD: dict[str, tuple[bytes, str, str]] = {
    "list.yml": (b"- title: x\n- y\n", ":1:1", "this document is a list"),
    "scalar.yml": (b"just some text\n", ":1:1", "this document is str 'just some text'"),
    "number.yml": (b"42\n", ":1:1", "this document is int"),
    "empty.yml": (b"", "", "empty: the file holds no YAML document"),
    "only-comments.yml": (b"# nothing here\n---\n", "", "empty"),
    "binary.yml": (b"title: x\n\x00\xff\xfe\x81garbage\n", ":2:2", "not UTF-8 text"),
    "nul.yml": (b"title: x\x00\n", ":1:9", "invalid YAML"),
    "unknown-action.yml": (b"action: frobnicate\ntitle: x\n", "", "Unknown Sigma collection action 'frobnicate'"),
    "numeric-id.yml": (b"title: x\nid: 5\nlogsource: {product: linux}\ndetection: {sel: {a: b}, condition: sel}\n",
                       "", "pySigma cannot read this file (AttributeError"),
    "numeric-field.yml": (b"title: x\nlogsource: {product: linux}\ndetection: {sel: {5: b}, condition: sel}\n",
                          "", "pySigma cannot read this file"),
    "missing-reference.yml": ((b"title: c\ncorrelation: {type: event_count, rules: [nowhere], timespan: 5m,\n"
                               b"  group-by: [a], condition: {gte: 2}}\n"), "", "Rule 'nowhere' not found"),
    "only-a-filter.yml": ((b"title: f\nlogsource: {product: linux}\nfilter: {rules: [x], sel: {a: b}, "
                           b"condition: not sel}\n"), "", "no rule to run"),
    "unhashable-key.yml": (b"? [a]\n: b\n", ":1:3", "a mapping key must be a scalar"),
    "bad-syntax.yml": (b"title: [unclosed\n", ":2:1", "invalid YAML"),
    "second-doc-a-list.yml": ((b"title: first of two\nid: 0d7c1a6e-4a3b-4c1e-9b1e-2f7c3a9d5e11\n"
                               b"logsource: {product: linux}\ndetection: {sel: {a: b}, condition: sel}\n---\n- a\n"),
                              ":6:1", "this document is a list"),
}


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, (content, _, _) in BAD.items():
        (folder / name).write_bytes(content)
    return folder


def test_each_broken_file_is_its_own_problem_and_the_good_rule_still_loads(bad_folder: Path, tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path / "good.yml")
    ruleset = load_rules([tmp_path])
    # The good file, and the good first document of the file whose second document is a list.
    assert sorted(r.title for r in ruleset.rules) == ["SSH password brute force", "first of two"]
    reported = {Path(p.where.split(":")[0]).name: p for p in ruleset.problems}
    assert set(reported) == set(BAD), ruleset.problems
    for name, (_, where, reason) in BAD.items():
        problem = reported[name]
        assert problem.where.startswith(str(bad_folder / name) + where), problem
        assert reason in problem.reason, problem
        assert "\n" not in problem.where + problem.reason


@pytest.mark.parametrize("command", ["validate", "list", "test"])
def test_rules_commands_name_every_broken_file(command: str, bad_folder: Path) -> None:
    shutil.copy(GOOD, bad_folder / "good.yml")
    code, out, err = run_cli("rules", command, str(bad_folder))
    assert code == 4, (out, err)
    for name in BAD:
        assert str(bad_folder / name) in out + err, (name, out, err)
    if command == "list":
        assert "SSH password brute force" in out
    if command == "validate":
        assert "ok      " + str(bad_folder / "good.yml") in out


def test_an_offline_scan_runs_the_good_rules_and_reports_the_broken_files(bad_folder: Path, tmp_path: Path) -> None:
    shutil.copy(GOOD, bad_folder / "good.yml")
    events = tmp_path / "auth.log"
    events.write_text("".join(f"Jun 14 15:16:{s:02d} combo sshd(pam_unix)[19939]: authentication failure; logname= "
                              f"uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4\n" for s in range(20)),
                      encoding="utf-8")
    config = write_config(tmp_path / "secmon.yml", "http://127.0.0.1:9", "unused", 25)  # for its pipelines
    args = ("-c", str(config), "scan", "--input", str(events), "--source", "linux-auth", "--agency", "so-tttt",
            "--rules", str(bad_folder), "--json")
    code, out, err = run_cli(*args)
    assert code == 4 and f"{len(BAD)} rules failed to load or run" in err, err  # as the cluster scan
    assert json.loads(out)["incidents"]  # reported all the same
    code, out, err = run_cli(*args, "--rule-failures", "warn")
    assert code == 0, err
    summary = json.loads(out)
    assert [i["finding"]["rule_title"] for i in summary["incidents"]] == ["SSH password brute force"]
    failed = {Path(where.split(":")[0]).name for where, _ in summary["rules_failed"]}
    assert failed == set(BAD)


def test_the_community_corpus_and_broken_files_together(bad_folder: Path) -> None:
    corpus = DATASETS / "sigma_rules" / "rules" / "linux"
    if not corpus.is_dir():
        pytest.skip(f"community Sigma rules not found at {corpus} (../shared/datasets beside the checkout)")
    alone = load_rules([corpus])
    both = load_rules([corpus, bad_folder])
    assert len(alone.rules) + len(alone.skipped) > 150  # unmapped logsources load, and are skipped
    assert [r.id for r in both.rules] == [r.id for r in alone.rules] + ["0d7c1a6e-4a3b-4c1e-9b1e-2f7c3a9d5e11"]
    assert len(both.problems) == len(alone.problems) + len(BAD)
    code, out, _ = run_cli("rules", "validate", "--quiet", str(corpus), str(bad_folder))
    assert code == 4
    assert f"{len(alone.rules) + len(alone.skipped) + 1} compiled" in out and f"{len(alone.problems) + len(BAD)} problems" in out



def test_a_rule_id_defined_twice_runs_once_and_the_copy_is_a_problem(tmp_path: Path) -> None:
    for name in ("a.yml", "b.yml"):
        shutil.copy(GOOD, tmp_path / name)
    ruleset = load_rules([tmp_path])
    assert [r.path for r in ruleset.rules] == [str(tmp_path / "a.yml")]
    (problem,) = ruleset.problems
    assert problem.where.startswith(str(tmp_path / "b.yml")) and f"already defined in {tmp_path / 'a.yml'}" in problem.reason
