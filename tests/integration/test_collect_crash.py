"""The collector is killed, or Elasticsearch goes away, in the middle of shipping: nothing is
lost and nothing is duplicated. Real files, a real node, the real `secmon` process."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from secmon.collect.files import read_records
from secmon.normalize.engine import Normalizer
from secmon.normalize.pipeline import load_pipelines
from tests.conftest import ROOT, es_local, free_port, write_config

pytestmark = [pytest.mark.integration, pytest.mark.dataset]

KILLS = 10
LINES = 100_000
AGENCY = "so-tttt"


def make_log(datasets: Path, path: Path, count: int, first: int = 0) -> list[str]:
    """`count` real Linux.log lines, each made unique by its pid (the content stays real)."""
    source = (datasets / "loghub_linux_full" / "Linux" / "Linux.log").read_text(encoding="utf-8", errors="replace")
    pid = re.compile(r"\[\d+\]")
    real = [line for line in source.splitlines() if pid.search(line)]
    out = [pid.sub(f"[{1_000_000 + first + i}]", real[(first + i) % len(real)], count=1) + "\n"
           for i in range(count)]
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(out))
    return out


def expected_ids(path: Path) -> list[str]:
    pipeline = load_pipelines([ROOT / "pipelines"])["linux-auth"]
    normalizer = Normalizer(pipeline, agency=AGENCY, timezone="Asia/Ho_Chi_Minh", source=str(path),
                            now=datetime(2026, 1, 1, tzinfo=timezone.utc), year=2005)
    return [normalizer.normalize(r.text, r.offset, r.record_id).id for r in read_records(path)]


def assert_exactly(es, prefix: str, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The indices hold these ids and nothing else: the count matches and every id is there."""
    ids = sorted(set(ids))  # the same record read twice (an EVTX file copied into two folders) is one document
    index = f"{prefix}-events-*,{prefix}-deadletter-*"
    es.indices.refresh(index=index, ignore_unavailable=True)
    assert es.count(index=index)["count"] == len(ids)
    found = sum(es.count(index=index, query={"ids": {"values": ids[i:i + 10_000]}})["count"]
                for i in range(0, len(ids), 10_000))
    assert found == len(ids)


def secmon(config: Path, *args: str, **kwargs) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "secmon", "-c", str(config), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def checkpoint(state: Path) -> int:
    registry = state / f"{AGENCY}-linux-auth.checkpoints.json"
    try:
        files = json.loads(registry.read_text())["files"]
    except (FileNotFoundError, ValueError):
        return 0
    return max((entry["offset"] for entry in files.values()), default=0)


def test_sigkill_ten_times_while_shipping_loses_and_duplicates_nothing(tmp_path, es, es_url, prefix, datasets  # type: ignore[no-untyped-def]
                                                                      ) -> None:
    log = tmp_path / "auth.log"
    written = len(make_log(datasets, log, LINES))
    config = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    state = tmp_path / "state"
    args = ("collect", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005", "--state", str(state),
            "--batch-size", "1000")
    rng = random.Random(7)
    kills = growths = 0
    while kills < KILLS:
        before = checkpoint(state)
        # Aim a share of what is left, so the kills spread over the file however fast the collector is.
        target = before + max(1, (log.stat().st_size - before) // (KILLS - kills + 2))
        proc = secmon(config, *args)
        while proc.poll() is None and checkpoint(state) < target:
            time.sleep(0.02)
        if proc.poll() is not None:
            # It read to the end before the kill landed (a fast machine): the log grows, as a live one
            # does, and the kills go on. A bounded number of times, so a collector that never stalls
            # still ends the test with a reason.
            out, err = proc.communicate()
            assert proc.returncode == 0, err.decode(errors="replace")
            growths += 1
            assert growths <= 2 * KILLS, f"the collector outran {growths} growths of the log after {kills} kills"
            written += len(make_log(datasets, log, LINES // 4, first=written))
            continue
        time.sleep(rng.uniform(0, 0.3))  # anywhere: mid-batch, mid-checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert checkpoint(state) > before, "a restarted collector must make progress"
    size = log.stat().st_size
    out, err = secmon(config, *args).communicate(timeout=300)
    assert b"events shipped" in out, err
    assert checkpoint(state) == size
    assert_exactly(es, prefix, expected_ids(log))


def wait_for_count(es, index: str, wanted: int, timeout: float, proc: subprocess.Popen[bytes]  # type: ignore[no-untyped-def]
                   ) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
        count = es.count(index=index, ignore_unavailable=True, allow_no_indices=True)["count"]
        if count >= wanted:
            return int(count)
        time.sleep(0.5)
    return int(count)


DOWNTIME = 60.0  # seconds: the "stopped for a minute"; many failed batches, a real spool


def test_node_stopped_mid_stream_spools_then_ships_everything_once(tmp_path, datasets, stoppable_node  # type: ignore[no-untyped-def]
                                                                  ) -> None:
    from elasticsearch import Elasticsearch

    url, env = stoppable_node
    es = Elasticsearch(url, request_timeout=30)
    log = tmp_path / "auth.log"
    make_log(datasets, log, 10_000)
    config = write_config(tmp_path / "secmon.yml", url, "stop", free_port())
    state = tmp_path / "state"
    follower = secmon(config, "-v", "collect", "--follow", str(log), "-a", AGENCY, "-s", "linux-auth",
                      "--year", "2005", "--state", str(state), "--batch-size", "500", "--batch-wait", "0.2")
    index = "stop-events-*,stop-deadletter-*"
    try:
        assert wait_for_count(es, index, 10_000, 120, follower) == 10_000
        make_log(datasets, log, 5_000, first=10_000)
        time.sleep(0.3)  # some of these are in flight when the node goes
        es_local(env, "stop")
        stopped = time.monotonic()
        for part in range(3):  # the log keeps growing while the node is down
            make_log(datasets, log, 5_000, first=15_000 + part * 5_000)
            time.sleep(DOWNTIME / 4)
        while not list((state / f"{AGENCY}-linux-auth.spool").glob("*.ndjson")):
            assert time.monotonic() - stopped < 60, "nothing was spooled while the node was down"
            time.sleep(0.2)
        time.sleep(max(0.0, DOWNTIME - (time.monotonic() - stopped)))
        es_local(env, "start")
        assert wait_for_count(es, index, 30_000, 90, follower) == 30_000
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err.decode()
    assert b"spooling batches" in err and b"Elasticsearch is back" in err
    assert b"30000 events" in out or b"total:" in out
    assert not list((state / f"{AGENCY}-linux-auth.spool").glob("*.ndjson"))
    assert_exactly(es, "stop", expected_ids(log))
    es.close()
