"""secmon on a real three-node cluster on loopback (`scripts/es-local cluster`): one node is killed
with SIGKILL while `collect --follow` ships and a scan runs, then started again. Every line is
indexed exactly once, and the scan's incidents equal those of the same scan on one node."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from tests.conftest import es_local, free_port, run_cli, write_config
from tests.integration.test_collect_crash import AGENCY, assert_exactly, expected_ids, make_log, secmon, wait_for_count

pytestmark = [pytest.mark.integration, pytest.mark.dataset, pytest.mark.cluster]

NODES = 3
BATCH = 1500  # lines appended at each step


def free_base() -> int:
    """A base port with NODES free HTTP ports above it, and their transport ports (+1000) free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + NODES + 1000 > 65535:
            continue
        ports = [base + k for k in range(NODES)] + [base + 1000 + k for k in range(NODES)]
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free ports for a cluster")


def incidents(config: Path) -> set[tuple[Any, ...]]:
    code, out, err = run_cli("-c", str(config), "scan", "--from", "2005-01-01", "--to", "2006-06-01", "--no-deliver",
                             "--json")
    assert code == 0, err
    return {(i["id"], i["finding"]["rule_id"], i["finding"]["count"], i["finding"]["first_seen"],
             i["finding"]["last_seen"]) for i in json.loads(out)["incidents"]}


def test_a_node_killed_while_collecting_and_scanning_loses_and_doubles_nothing(tmp_path, datasets, es, es_url,  # type: ignore[no-untyped-def]
                                                                               prefix) -> None:
    base = free_base()
    env = {**os.environ, "SECMON_ES_HOME": str(tmp_path / "cluster")}
    es_local(env, "cluster", "start", "--nodes", str(NODES), "--port", str(base))
    hosts = [f"http://127.0.0.1:{base + k}" for k in range(NODES)]
    cluster = Elasticsearch(hosts, request_timeout=60, retry_on_timeout=True, max_retries=3)
    follower = None
    try:
        config = write_config(tmp_path / "cluster.yml", ", ".join(hosts), "three", free_port())
        code, out, err = run_cli("-c", str(config), "setup")
        assert code == 0, err
        log = tmp_path / "auth.log"
        make_log(datasets, log, BATCH)
        follower = secmon(config, "collect", "--follow", str(log), "-a", AGENCY, "-s", "linux-auth", "--year", "2005",
                          "--state", str(tmp_path / "state"), "--batch-size", "500", "--batch-wait", "0.2")
        index = "three-events-*,three-deadletter-*"
        assert wait_for_count(cluster, index, BATCH, 180, follower) == BATCH
        make_log(datasets, log, BATCH, first=BATCH)  # in flight when the node goes
        scan = secmon(config, "scan", "--from", "2005-01-01", "--to", "2006-06-01", "--no-deliver", "--json")
        es_local(env, "cluster", "kill", "2")  # the elected master, or a node holding primaries: either way
        make_log(datasets, log, BATCH, first=2 * BATCH)  # written while it is down
        out, err = scan.communicate(timeout=300)
        # The scan either saw every shard (replicas answer for the dead node) or failed cleanly:
        # one line, exit 5, nothing half-written; the scan below covers the same window again.
        assert scan.returncode in (0, 5), err.decode()
        assert b"Traceback" not in err, err.decode()
        es_local(env, "cluster", "start-node", "2")
        assert wait_for_count(cluster, index, 3 * BATCH, 240, follower) == 3 * BATCH
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=120)
        assert follower.returncode == 0, err.decode()
        assert_exactly(cluster, "three", expected_ids(log))  # count and ids: each line once
        on_cluster = incidents(config)
        assert on_cluster, "no incident in a log full of SSH password guessing"

        # The same lines on one node (the session's), scanned the same way.
        single = write_config(tmp_path / "single.yml", es_url, prefix, free_port())
        code, out, err = run_cli("-c", str(single), "collect", str(log), "-a", AGENCY, "-s", "linux-auth",
                                 "--year", "2005")
        assert code == 0, err
        assert incidents(single) == on_cluster
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.communicate()
        cluster.close()
        es_local(env, "cluster", "wipe", check=False)
