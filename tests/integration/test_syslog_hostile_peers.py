"""`collect --follow` with a TLS syslog listener on loopback and hostile peers: a connection that never
says hello does not stop other senders, whose messages are all shipped to the real node; past the
connection cap new connections are closed and counted in the collector's report."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, write_config
from tests.integration.test_collect_crash import AGENCY, secmon, wait_for_count
from tests.integration.test_collect_follow import RFC3164, _tls_files, originals, stop
from tests.unit.test_syslog_listener import send_tls

pytestmark = [pytest.mark.integration, pytest.mark.dataset]


def test_idle_tls_peer_blocks_nobody_and_the_cap_is_counted(tmp_path: Path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    files = _tls_files(tmp_path)
    if files is None:
        pytest.skip("openssl is needed to make a test certificate")
    port = free_port()
    config = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    follower = secmon(config, "collect", "--follow", "--syslog-tls", f"127.0.0.1:{port}", "--tls-cert", str(files[0]),
                      "--tls-key", str(files[1]), "--syslog-max-connections", "2", "-a", AGENCY, "-s", "syslog",
                      "--year", "2005", "--state", str(tmp_path / "state"), "--batch-wait", "0.1")
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while not held:  # wait until it listens; this first connection then stays idle: no TLS hello
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
            except OSError:
                assert follower.poll() is None and time.monotonic() < deadline, follower.communicate()
                time.sleep(0.1)
        sent = [RFC3164.replace("19939", str(i)) for i in range(30)]
        for start in range(0, len(sent), 10):  # three senders in a row, while the idle one holds a slot
            send_tls(port, files[0], sent[start:start + 10])
        wait_for_count(es, f"{prefix}-events-*,{prefix}-deadletter-*", len(sent), 90, follower)
        assert originals(es, prefix) == sorted(sent)

        held.append(socket.create_connection(("127.0.0.1", port)))  # the second slot: the cap is reached
        with socket.create_connection(("127.0.0.1", port)) as refused:
            refused.settimeout(30)
            assert refused.recv(1) == b""  # closed at once
    finally:
        for sock in held:
            sock.close()
        out, err = stop(follower)
    assert "note: syslog: 5 connections accepted, 1 refused (connection limit)" in err, err
    assert "connection from 127.0.0.1 refused: 2 connections open, the limit" in err, err
    assert "total: 30 events shipped" in out
