"""Events whose URL cannot be decoded exactly are stored (url.original as sent, tagged url_undecodable)
and never silent: `collect` counts them per input in text and --json, warns on stderr, and exits 4 for
them with `--undecodable-urls error` (issue 10, item 6). Real lines of an Acunetix scan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secmon.model import Event
from tests.conftest import free_port, run_cli, write_config
from tests.unit.test_pipelines import PIPELINES, normalize

pytestmark = [pytest.mark.integration, pytest.mark.dataset]


def scan_lines(datasets: Path) -> tuple[list[str], int]:
    """Real Acunetix lines, some whose URL cannot be decoded exactly (%f0 alone, %bf: not UTF-8), and how many."""
    lines = (datasets / "web_scanner_accesslogs" / "acunetix.txt").read_text(encoding="utf-8").splitlines()
    bad, good = [], []
    for line in lines:
        event = normalize(PIPELINES["apache-access"], line)
        if isinstance(event, Event):
            (bad if "url_undecodable" in (event.doc.get("tags") or []) else good).append(line)
        if len(bad) >= 4 and len(good) >= 6:
            break
    return bad[:4] + good[:6], 4


def test_collect_counts_and_says_them(tmp_path, es, es_url, prefix, datasets) -> None:  # type: ignore[no-untyped-def]
    lines, undecodable = scan_lines(datasets)
    log = tmp_path / "access.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", "so-tttt", "-s", "apache-access", "--json")
    assert code == 0, err
    (summary,) = json.loads(out)["inputs"]
    assert summary["input"] == str(log) and summary["events"] == len(lines), summary
    assert summary["url_undecodable"] == undecodable and summary["dead_letters"] == 0, summary
    assert f"{undecodable} events have a URL that could not be decoded exactly" in err, err
    es.indices.refresh(index=f"{prefix}-*")
    tagged = es.count(index=f"{prefix}-events-*", query={"term": {"tags": "url_undecodable"}})["count"]
    assert tagged == undecodable
    audit = es.search(index=f"{prefix}-audit*", query={"term": {"event.action": "collect"}}, size=5)["hits"]["hits"]
    assert [hit["_source"]["secmon"]["details"]["url_undecodable"] for hit in audit] == [undecodable], audit

    # the text summary says it too; with --undecodable-urls error they fail the run (exit 4)
    code, out, err = run_cli("-c", config, "collect", str(log), "-a", "so-tttt", "-s", "apache-access",
                             "--undecodable-urls", "error")
    assert code == 4, err
    assert f"{len(lines)} events shipped" in out and f"{undecodable} with a URL not decoded exactly" in out, out
    assert "secmon: error:" in err and "url_undecodable" in err, err


def test_the_offline_scan_counts_them_per_input(tmp_path, es_url, prefix, datasets) -> None:  # type: ignore[no-untyped-def]
    """`scan --input` (no node read) counts them per file as `collect` does, in text and --json."""
    lines, undecodable = scan_lines(datasets)
    log = tmp_path / "access.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = str(write_config(tmp_path / "secmon.yml", es_url, prefix, free_port()))
    rules = str(Path(__file__).resolve().parents[2] / "rules" / "web")
    common = ["-c", config, "scan", "--input", str(log), "--source", "apache-access", "--rules", rules, "--no-rule-cache"]
    code, out, err = run_cli(*common, "--json")
    assert code == 0, err
    (report,) = json.loads(out)["inputs"]
    assert (report["events"], report["url_undecodable"]) == (len(lines), undecodable), report
    code, out, err = run_cli(*common)
    assert f"{undecodable} with a URL not decoded exactly (tagged url_undecodable)" in out, out
