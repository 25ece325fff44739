"""`secmon pipelines list|test`, run in-process (no Elasticsearch involved)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secmon.config import load_settings
from secmon.errors import InputError
from secmon.service.collect import find_pipeline
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
FOLDER = str(ROOT / "pipelines")
GOOD = "Dec 10 06:55:48 LabSZ sshd[24200]: Failed password for invalid user webmaster from 173.234.31.186 port 38926 ssh2"


def test_list_shows_every_pipeline_with_passing_examples() -> None:
    code, out, err = run_cli("-c", "/nonexistent.yml", "pipelines", "list", "-p", FOLDER)
    assert code == 0, err
    for source in ("linux-auth", "syslog", "apache-access", "zeek", "windows-evtx", "suricata-eve", "cef"):
        assert source in out
    assert "ok" in out and not err


def test_test_shows_the_event_and_the_dead_letter(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(f"{GOOD}\nnot syslog at all\n", encoding="utf-8")
    code, out, err = run_cli("-c", "/nonexistent.yml", "pipelines", "test", str(log), "--source", "linux-auth",
                             "--year", "2005", "-p", FOLDER)
    assert code == 4  # a line would be dead-lettered
    assert f"{log}:1: event" in out and '"ip": "173.234.31.186"' in out and '"@timestamp": "2005-12-09T23:55:48Z"' in out
    assert f"{log}:2: dead letter: line does not match" in out
    assert "1 events, 1 dead letters, 0 skipped" in out


def test_test_json_output_is_one_object_per_line(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(GOOD + "\n", encoding="utf-8")
    code, out, err = run_cli("-c", "/nonexistent.yml", "pipelines", "test", str(log), "-s", "linux-auth",
                             "--json", "-p", FOLDER)
    assert code == 0, err
    shown = [json.loads(line) for line in out.splitlines()]
    assert shown[0]["event"]["user"]["name"] == "webmaster"
    assert "1 events" in err


def test_unknown_source_is_a_usage_error(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(GOOD + "\n", encoding="utf-8")
    code, out, err = run_cli("-c", "/nonexistent.yml", "pipelines", "test", str(log), "-s", "nope", "-p", FOLDER)
    assert code == 2 and "unknown source 'nope'" in err and "linux-auth" in err


def test_a_broken_pipeline_is_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "mine.yml").write_text("id: mine\nformat: line\nparse: {regex: '(?P<ts>'}\ntimestamp: {field: ts, formats: [ISO8601]}\n",
                                       encoding="utf-8")
    code, out, err = run_cli("-c", "/nonexistent.yml", "pipelines", "list", "-p", str(tmp_path))
    assert code == 4
    assert f"{tmp_path / 'mine.yml'}:3:" in err and "regular expression" in err


def test_a_failing_example_fails_list(tmp_path: Path) -> None:
    (tmp_path / "mine.yml").write_text(
        "id: mine\nformat: line\nset: {event.kind: event}\nparse: {regex: '^(?P<ts>\\S+) (?P<msg>.*)$'}\n"
        "timestamp: {field: ts, formats: [ISO8601]}\nfields: {message: msg}\n"
        "examples:\n  - line: '2024-01-01T00:00:00Z hello'\n    expect: {message: bye}\n", encoding="utf-8")
    code, out, err = run_cli("-c", "/nonexistent.yml", "pipelines", "list", "-p", str(tmp_path))
    assert code == 4
    assert "mine.yml:8:5: example fails: message: expected 'bye', got 'hello'" in err


def test_test_reads_evtx_files_as_their_records(datasets: Path) -> None:
    evtx = sorted((datasets / "evtx_attack_samples" / "evtx").glob("*/*.evtx"))[0]
    code, out, err = run_cli("-c", "/nonexistent.yml", "pipelines", "test", str(evtx), "-s", "windows-evtx",
                             "--limit", "3", "--json", "-p", FOLDER)
    assert code == 0, out
    shown = [json.loads(line) for line in out.splitlines()]
    assert len(shown) == 3 and all(s["event"]["winlog"]["channel"] for s in shown)


def test_a_collector_reads_only_its_own_pipeline(tmp_path: Path) -> None:
    folder = tmp_path / "pipes"
    folder.mkdir()
    (folder / "linux-auth.yml").write_text((ROOT / "pipelines" / "linux-auth.yml").read_text(encoding="utf-8"),
                                           encoding="utf-8")
    (folder / "broken.yml").write_text('id: broken\nformat: line\nparse: {regex: "(?P<ts>"}\n', encoding="utf-8")
    config = tmp_path / "secmon.yml"
    config.write_text(f"""elasticsearch: {{hosts: [http://127.0.0.1:9], index_prefix: t}}
agencies: [{{id: so-tttt, name: t, language: en, recipients: [a@b.example]}}]
smtp: {{host: 127.0.0.1, port: 25, sender: s@b.example}}
rules: [{ROOT / 'rules'}]
pipelines: [{folder}]
""", encoding="utf-8")
    settings = load_settings(config)
    # A broken neighbour does not stop a collector of another source...
    assert find_pipeline(settings, "linux-auth").id == "linux-auth"
    # ...and an unknown (or path-like) source lists the ids without parsing any file.
    for wrong in ("nope", "../linux-auth"):
        with pytest.raises(InputError, match=f"unknown source {wrong!r}") as unknown:
            find_pipeline(settings, wrong)
        assert unknown.value.hint == "pipelines available: broken, linux-auth"
    # The broken one itself is reported with its file and line.
    with pytest.raises(InputError, match=r"broken\.yml:3:.*invalid regular expression"):
        find_pipeline(settings, "broken")
