"""Logsource coverage: rules whose logsource secmon does not map are listed, counted and not run
unless asked (`--unmapped-logsources run`), never silently run on every event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sigma.rule import SigmaLogSource

from secmon.detect.sigma.load import load_rules
from secmon.detect.sigma.pipeline import logsources
from tests.conftest import run_cli


@pytest.mark.parametrize("category,product,service,mapped", [
    (None, "windows", "security", True),
    ("process_creation", "windows", None, True),
    ("file_access", "windows", None, True),  # Security 4663
    ("file_rename", "windows", None, False),  # no Windows event records it
    ("webserver", None, None, True),
    (None, "linux", "sshd", True),
    ("process_creation", "linux", None, False),  # would run on every Linux log line
    (None, "linux", "cron", False),
    ("proxy", None, None, False),  # would run on every event
    (None, "aws", "cloudtrail", True),  # event.module aws, event.dataset aws.cloudtrail
    ("application", "django", None, True),
    ("process_creation", "macos", None, False),
])
def test_what_is_mapped(category: str | None, product: str | None, service: str | None, mapped: bool) -> None:
    assert logsources().known(SigmaLogSource(category, product, service)) is mapped


def write(folder: Path) -> None:
    rules = {
        "proxy.yml": "title: proxy rule\nlogsource: {category: proxy}\n",
        "linux.yml": "title: linux process\nlogsource: {product: linux, category: process_creation}\n",
        "web.yml": "title: web rule\nlogsource: {category: webserver}\n",
    }
    for name, head in rules.items():
        (folder / name).write_text(f"{head}detection:\n  sel:\n    message|contains: evil\n  condition: sel\n"
                                   "level: high\n", encoding="utf-8")


def test_validate_lists_them_with_their_count(tmp_path: Path) -> None:
    write(tmp_path)
    code, out, err = run_cli("rules", "validate", str(tmp_path))
    assert code == 0, err
    unmapped = [line for line in out.splitlines() if line.startswith("UNMAPPED")]
    assert len(unmapped) == 2
    assert any("proxy rule" in line and "{category: proxy}" in line for line in unmapped)
    assert "3 rules: 3 compiled (100.0%), 0 problems, 2 with an unmapped logsource" in out


def test_scans_skip_them_and_say_so_unless_asked(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    write(rules)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"@timestamp": "2026-01-01T00:00:00Z", "message": "GET /evil",
                                  "event": {"category": "web", "module": "linux"}}) + "\n", encoding="utf-8")
    code, out, err = run_cli("scan", "--input", str(events), "--rules", str(rules), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert [i["finding"]["rule_title"] for i in summary["incidents"]] == ["web rule"]
    assert summary["rules_run"] == 1
    assert any("2 rules not run" in note and "--unmapped-logsources run" in note for note in summary["notes"])
    code, out, err = run_cli("scan", "--input", str(events), "--rules", str(rules), "--json",
                             "--unmapped-logsources", "run")
    summary = json.loads(out)
    assert code == 0 and summary["rules_run"] == 3
    assert sorted(i["finding"]["rule_title"] for i in summary["incidents"]) == ["proxy rule", "web rule"]
    assert any("2 rules with an unmapped logsource run" in note for note in summary["notes"])


def test_the_community_corpus(datasets: Path) -> None:
    web = datasets / "sigma_rules" / "rules-threat-hunting" / "web"
    ruleset = load_rules([web])
    code, out, err = run_cli("rules", "validate", "--quiet", str(web))
    listed = [line for line in out.splitlines() if line.startswith("UNMAPPED")]
    assert ruleset.skipped and len(listed) == len(ruleset.skipped)
    assert f"{len(ruleset.skipped)} with an unmapped logsource" in out
    assert all(rule.unmapped for rule in ruleset.skipped) and not any(rule.unmapped for rule in ruleset.rules)
