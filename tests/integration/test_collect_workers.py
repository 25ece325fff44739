"""`collect --workers N` on the real node, with real `secmon` processes: the same documents under the
same ids as one process, dead letters that name their file and offset, and a run killed with -9
resumes from its checkpoint to exactly the expected documents."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, scratch_prefix, write_config
from tests.integration.test_collect_crash import AGENCY, assert_exactly, checkpoint, expected_ids, make_log, secmon

pytestmark = [pytest.mark.integration, pytest.mark.dataset]

GARBAGE = "this line has no syslog header at all\n"


def stored(es, prefix: str) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Every document of the prefix by id, without the time it was sent (which differs between runs)."""
    index = f"{prefix}-events-*,{prefix}-deadletter-*"
    es.indices.refresh(index=index, ignore_unavailable=True)
    docs: dict[str, dict[str, Any]] = {}
    for hit in es.search(index=index, size=10_000, sort=["_doc"])["hits"]["hits"]:
        source = hit["_source"]
        source["event"].pop("ingested")
        if hit["_index"].startswith(f"{prefix}-deadletter-"):
            source.pop("@timestamp")  # a dead letter is stamped with the time it was read
        docs[hit["_id"]] = source
    return docs


def run(config: Path, log: Path, *args: str) -> str:
    proc = secmon(config, "collect", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005",
                  "--batch-size", "200", *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def test_workers_store_the_same_documents_and_dead_letters_as_one_process(tmp_path, es, es_url, prefix,  # type: ignore[no-untyped-def]
                                                                          datasets) -> None:
    log = tmp_path / "auth.log"
    make_log(datasets, log, 2000)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(GARBAGE)  # a dead letter in the middle of a batch, then more events
    make_log(datasets, log, 1000, first=2000)
    bad_offset = log.read_bytes().index(GARBAGE.encode())
    with scratch_prefix(es) as other:
        one = run(write_config(tmp_path / "one.yml", es_url, other, free_port()), log, "--workers", "1")
        three = run(write_config(tmp_path / "three.yml", es_url, prefix, free_port()), log, "--workers", "3")
        assert "3000 events shipped, 1 dead-lettered" in one and "3000 events shipped, 1 dead-lettered" in three
        single, parallel = stored(es, other), stored(es, prefix)
    assert len(single) == 3001
    assert single == parallel
    letters = [doc for doc in parallel.values() if "error" in doc]
    assert len(letters) == 1
    assert letters[0]["secmon"]["source"] == str(log) and letters[0]["secmon"]["offset"] == bad_offset
    assert letters[0]["event"]["original"] == GARBAGE.strip()


LINES = 40_000


def test_workers_killed_with_sigkill_resume_from_the_checkpoint(tmp_path, es, es_url, prefix, datasets  # type: ignore[no-untyped-def]
                                                                ) -> None:
    log = tmp_path / "auth.log"
    make_log(datasets, log, LINES)  # enough that a fast collector is still running at its first checkpoint
    size = log.stat().st_size
    config = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    state = tmp_path / "state"
    args = ("collect", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005", "--state", str(state),
            "--batch-size", "500", "--workers", "2")
    proc = secmon(config, *args)
    deadline = time.monotonic() + 120
    while proc.poll() is None and checkpoint(state) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before the kill: {proc.communicate()}"
    assert checkpoint(state) > 0, "no checkpoint within the deadline"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint(state) < size
    out, err = secmon(config, *args).communicate(timeout=300)
    assert f"{LINES} events shipped".encode() not in out, "the second run must resume, not start over"
    assert b"events shipped" in out, err
    assert checkpoint(state) == size
    assert_exactly(es, prefix, expected_ids(log))
