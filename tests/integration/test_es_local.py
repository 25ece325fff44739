"""`scripts/es-local` on a busy machine: the transport port is outside the HTTP range and configurable,
any listener on a port it needs is named before a JVM starts, a failed start says why, and a node
restarts right after it stopped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

ES_LOCAL = ROOT / "scripts" / "es-local"


def es_local(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run es-local for `home`; the caller asserts on the result, whose output it can show."""
    full = {**os.environ, "SECMON_ES_HOME": str(home), **(env or {})}
    full.pop("SECMON_ES_PORT", None)
    full.pop("SECMON_ES_TRANSPORT_PORT", None)
    return subprocess.run(["bash", str(ES_LOCAL), *args], env=full, capture_output=True, text=True, timeout=600,
                          check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"es-local {result.args[2:]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_pair() -> int:
    """A free HTTP port whose default transport port (+1000) is free too."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port <= 64535 and bindable(port + 1000):
            return port
    raise AssertionError("no free pair of ports found")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A plain TCP listener that speaks no HTTP: what the old probe took for a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_any_listener_on_the_http_or_transport_port_is_named_before_a_jvm_starts(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                                listener) -> None:
    taken = listener.getsockname()[1]
    result = es_local(tmp_path / "a", "start", "--port", str(taken))
    assert result.returncode == 1
    assert f"the HTTP port {taken} is taken" in result.stderr, result.stderr
    assert "python" in result.stderr or "choose another" in result.stderr  # ss names the holder when it can
    assert not (tmp_path / "a" / "es.pid").exists()

    port = free_pair()
    result = es_local(tmp_path / "b", "start", "--port", str(port), "--transport-port", str(taken))
    assert result.returncode == 1
    assert f"the transport port {taken} is taken" in result.stderr, result.stderr
    assert "SECMON_ES_TRANSPORT_PORT" in result.stderr
    result = es_local(tmp_path / "c", "start", "--port", str(port), "--transport-port", str(port))
    assert result.returncode == 1 and "must differ from the HTTP port" in result.stderr


def test_a_failed_start_prints_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "broken"
    home.mkdir()
    (home / "data").write_text("a file where the data folder should be\n")
    result = es_local(home, "start", "--port", str(free_pair()))
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert "exited during start-up: Exception in thread" in first and "FileAlreadyExistsException" in first, \
        result.stderr


def test_stop_then_start_at_once_on_the_same_ports(stoppable_node: tuple[str, dict[str, str]]) -> None:
    # The session's stoppable node (conftest), started by `es-local start` on a free port: a start of
    # its own would cost this test 10 to 30 s more on a busy machine.
    url, env = stoppable_node
    home, port = Path(env["SECMON_ES_HOME"]), int(env["SECMON_ES_PORT"])
    ok(es_local(home, "start", "--port", str(port)))  # it runs: es-local says so and waits for its health
    with urllib.request.urlopen(f"{url}/_nodes/_local/transport", timeout=30) as answer:
        (node,) = json.load(answer)["nodes"].values()
    assert node["transport"]["bound_address"] == [f"127.0.0.1:{port + 1000}"]
    pid, start = (home / "es.pid").read_text().split()
    assert start == Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    ok(es_local(home, "stop"))
    # At once: the stopped node's ports and data lock are free when stop returns.
    ok(es_local(home, "start", "--port", str(port)))
    assert "health:" in ok(es_local(home, "status", "--port", str(port)))
