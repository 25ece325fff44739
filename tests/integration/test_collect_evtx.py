"""Windows EVTX files (EVTX-ATTACK-SAMPLES, 277 real files) -> the windows-evtx pipeline -> the node;
plus stdin, multi-line records, and inputs that are wrong."""

from __future__ import annotations

import io
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from secmon.collect.evtxfiles import read_evtx
from secmon.normalize.engine import Normalizer, Skipped
from secmon.normalize.pipeline import load_pipelines
from tests.conftest import ROOT, free_port, run_cli, write_config
from tests.integration.test_collect_crash import assert_exactly

pytestmark = [pytest.mark.integration]


def evtx_ids(paths: list[Path]) -> list[str]:
    pipeline = load_pipelines([ROOT / "pipelines"])["windows-evtx"]
    ids = []
    for path in paths:
        normalizer = Normalizer(pipeline, agency="so-tttt", timezone="Asia/Ho_Chi_Minh", source=str(path),
                                now=datetime(2026, 1, 1, tzinfo=timezone.utc))
        for record in read_evtx(path):
            result = normalizer.normalize(record.text, record.offset, record.record_id)
            if not isinstance(result, Skipped):
                ids.append(result.id)
    return ids


@pytest.mark.dataset
def test_evtx_attack_samples_are_collected_once_each(tmp_path, es, es_url, prefix, datasets) -> None:  # type: ignore[no-untyped-def]
    paths = sorted((datasets / "evtx_attack_samples").rglob("*.evtx"))
    assert len(paths) > 200
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    code, out, err = run_cli("-c", config, "collect", *map(str, paths), "-a", "so-tttt", "-s", "windows-evtx")
    assert code == 0, err
    ids = evtx_ids(paths)
    assert len(ids) > 8000
    shipped = sum(int(line.split(": ")[1].split()[0]) for line in out.splitlines())
    es.indices.refresh(index=f"{prefix}-events-*")
    assert shipped > 0.95 * len(ids) and es.count(index=f"{prefix}-events-*")["count"] > 0.95 * len(set(ids))
    assert_exactly(es, prefix, ids)
    # Sysmon process creation keeps its fields under winlog.event_data, the record number as record_id.
    hit = es.search(index=f"{prefix}-events-*", size=1, query={"bool": {"filter": [
        {"term": {"winlog.channel": "Microsoft-Windows-Sysmon/Operational"}}, {"term": {"winlog.event_id": "1"}}]}}
                    )["hits"]["hits"][0]["_source"]
    assert hit["winlog"]["event_data"]["Image"] and hit["winlog"]["record_id"]
    assert hit["event"]["original"].startswith('{"Event":')
    # Again: the same ids, nothing new.
    code, out, err = run_cli("-c", config, "collect", str(paths[0]), "-a", "so-tttt", "-s", "windows-evtx")
    assert code == 0, err
    assert_exactly(es, prefix, ids)


def test_stdin_and_multiline(tmp_path, es, es_url, prefix, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    text = ("Jun 14 15:16:01 combo sshd[1]: Failed password for root from 218.188.2.4 port 4222 ssh2\n"
            "\n"
            "Jun 14 15:16:02 combo app[2]: Traceback (most recent call last):\n"
            "  File \"x.py\", line 1, in <module>\n"
            "Jun 14 15:16:03 combo sshd[3]: Accepted password for ann from 10.0.0.1 port 22 ssh2\n")
    # A pipeline whose message may span lines ((?s): `.` matches the newlines of a joined record).
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "app-multiline.yml").write_text("""\
id: app-multiline
format: line
set: {event.kind: event, event.module: app, event.dataset: app.log}
parse:
  regex: '(?s)^(?P<ts>[A-Z][a-z]{2} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d) (?P<host>\\S+) (?P<message>.*)$'
timestamp: {field: ts, formats: ['%b %d %H:%M:%S']}
fields: {host.hostname: host, message: message}
""")
    config_path = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    config_path.write_text(config_path.read_text().replace(f"pipelines: [{ROOT / 'pipelines'}]",
                                                           f"pipelines: [{tmp_path / 'pipelines'}]"))
    config = str(config_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, out, err = run_cli("-c", config, "collect", "-", "-a", "so-tttt", "-s", "app-multiline", "--year", "2005",
                             "--multiline-start", r"^[A-Z][a-z]{2} [ \d]\d ")
    assert code == 0, err
    assert out.strip() == "-: 3 events shipped, 0 dead-lettered, 0 skipped"
    es.indices.refresh(index=f"{prefix}-events-*")
    hits = es.search(index=f"{prefix}-events-*", sort=[{"@timestamp": "asc"}])["hits"]["hits"]
    assert hits[1]["_source"]["message"].endswith('Traceback (most recent call last):\n  File "x.py", line 1, '
                                                  'in <module>')
    # The same input again (stdin is named by its first bytes): no duplicates.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert run_cli("-c", config, "collect", "-", "-a", "so-tttt", "-s", "app-multiline", "--year", "2005",
                   "--multiline-start", r"^[A-Z][a-z]{2} [ \d]\d ")[0] == 0
    es.indices.refresh(index=f"{prefix}-events-*")
    assert es.count(index=f"{prefix}-events-*")["count"] == 3


@pytest.mark.parametrize("args,code,message", [
    (["collect", "-a", "so-tttt", "-s", "linux-auth"], 2, "give FILES"),
    (["collect", "x.log", "-a", "so-tttt", "-s", "linux-auth", "--syslog-udp", "0.0.0.0:514"], 2, "need --follow"),
    (["collect", "--follow", "-a", "so-tttt", "-s", "linux-auth", "--syslog-udp", "nowhere"], 4, "is not HOST:PORT"),
    (["collect", "missing.log", "-a", "so-tttt", "-s", "linux-auth"], 4, "no such file"),
    (["collect", "--follow", "x.log", "-a", "so-tttt", "-s", "linux-auth", "--multiline-start", "("], 4,
     "invalid regular expression"),
    (["collect", "x.log", "-a", "so-tttt", "-s", "no-such-pipeline"], 4, "unknown source"),
])
def test_wrong_collect_input_is_one_clear_line(tmp_path, es_url, args, code, message) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "x.log").write_text("Jun 14 15:16:01 combo sshd[1]: hello\n")
    config = str(write_config(tmp_path / "secmon.yml", es_url, "unused", free_port()))
    args = [str(tmp_path / a) if a.endswith(".log") else a for a in args]
    args += ["--state", str(tmp_path / "state")] if "--follow" in args else []
    got, out, err = run_cli("-c", config, *args)
    assert got == code and message in err and "Traceback" not in err, err
    assert code == 2 or err.count("\n") == 1  # usage errors come with click's usage line
