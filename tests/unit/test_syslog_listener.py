"""The syslog listener against idle, slow and too many peers: each costs only itself, is bounded
and counted. Real sockets on loopback, a real TLS handshake; no Elasticsearch needed."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from secmon.collect.syslog import Address, Limits, Listener, tls_context

LOOPBACK = Address("127.0.0.1", 0)
DEADLINE = 30.0  # seconds to wait for a condition on a busy machine; each returns as soon as it holds


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def wait_until(what: str, condition: Callable[[], bool], listener: Listener) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE}s; {listener.connections}"
        time.sleep(0.02)


def receive(listener: Listener, count: int) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + DEADLINE
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} messages: {got}; {listener.connections}"
        got += [r.text for r in listener.records(1000, 0.1)]
    return got


@pytest.fixture
def make_listener() -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def make(**kwargs) -> Listener:  # type: ignore[no-untyped-def]
        listener = Listener(**kwargs).start()
        started.append(listener)
        return listener

    yield make
    for listener in started:
        listener.stop()


def send_tls(port: int, cafile: Path, messages: list[str]) -> None:
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall("".join(f"{len(m)} {m}" for m in messages).encode())
        conn.shutdown(socket.SHUT_WR)  # half-close and drain, as a well-behaved sender does
        while conn.recv(4096):
            pass


def test_an_idle_tls_connection_blocks_no_other_sender(cert: tuple[Path, Path], make_listener) -> None:  # type: ignore[no-untyped-def]
    listener = make_listener(tls=LOOPBACK, tls_context=tls_context(str(cert[0]), str(cert[1])))
    port = listener.addresses["tls"][1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # connect, never say hello
    try:
        wait_until("the idle connections are accepted", lambda: listener.connections.active == 3, listener)
        messages = [f"<38>Jun 14 15:16:01 combo sshd[{i}]: Failed password for root" for i in range(50)]
        for start in range(0, 50, 10):  # five senders in a row, each through a full handshake
            send_tls(port, cert[0], messages[start:start + 10])
        assert sorted(receive(listener, 50)) == sorted(messages)
        assert listener.connections.active == 3 and listener.connections.accepted == 8
    finally:
        for sock in idle:
            sock.close()


def test_a_peer_that_never_completes_the_handshake_is_closed_and_counted(cert: tuple[Path, Path],  # type: ignore[no-untyped-def]
                                                                          make_listener) -> None:
    listener = make_listener(tls=LOOPBACK, tls_context=tls_context(str(cert[0]), str(cert[1])),
                             limits=Limits(handshake_timeout=0.3))
    with socket.create_connection(("127.0.0.1", listener.addresses["tls"][1])) as idle:
        idle.settimeout(DEADLINE)
        assert idle.recv(1) == b""  # the listener closed it
    wait_until("the timeout is counted", lambda: listener.connections.timed_out == 1, listener)
    assert listener.connections.active == 0


def test_the_connection_cap_refuses_and_counts_and_frees_slots(make_listener) -> None:  # type: ignore[no-untyped-def]
    listener = make_listener(tcp=LOOPBACK, limits=Limits(max_connections=2))
    port = listener.addresses["tcp"][1]
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    wait_until("two connections are held", lambda: listener.connections.active == 2, listener)
    with socket.create_connection(("127.0.0.1", port)) as third:
        third.settimeout(DEADLINE)
        assert third.recv(1) == b""  # closed at once, not left hanging
    assert listener.connections.refused == 1
    held.pop().close()
    wait_until("a slot is free again", lambda: listener.connections.active == 1, listener)
    with socket.create_connection(("127.0.0.1", port)) as fourth:
        fourth.sendall(b"<38>Jun 14 15:16:01 combo sshd[1]: after the cap\n")
    assert receive(listener, 1) == ["<38>Jun 14 15:16:01 combo sshd[1]: after the cap"]
    held.pop().close()
    assert "1 refused (connection limit)" in listener.connections.summary()


def test_slowloris_is_cut_at_the_message_deadline_and_what_came_is_delivered(make_listener) -> None:  # type: ignore[no-untyped-def]
    listener = make_listener(tcp=LOOPBACK, limits=Limits(message_timeout=0.5))
    port = listener.addresses["tcp"][1]
    with socket.create_connection(("127.0.0.1", port)) as slow, \
            socket.create_connection(("127.0.0.1", port)) as fast:
        slow.settimeout(DEADLINE)
        slow.sendall(b"<38>Jun 14 15:16:01 combo sshd[2]: a message that ")
        fast.sendall(b"<38>Jun 14 15:16:01 combo sshd[3]: complete\n")
        sent = 0
        try:
            while sent < 200:  # a byte at a time, never finishing, until the listener gives up
                slow.sendall(b"x")
                sent += 1
                time.sleep(0.05)
        except OSError:  # reset: the listener closed it
            pass
        got = receive(listener, 2)
    assert "<38>Jun 14 15:16:01 combo sshd[3]: complete" in got
    (cut,) = [m for m in got if "sshd[2]" in m]
    assert cut.startswith("<38>Jun 14 15:16:01 combo sshd[2]: a message that ")
    wait_until("the timeout is counted", lambda: listener.connections.timed_out == 1, listener)
    assert sent < 200


def test_an_idle_connection_is_closed_after_the_idle_timeout(make_listener) -> None:  # type: ignore[no-untyped-def]
    listener = make_listener(tcp=LOOPBACK, limits=Limits(idle_timeout=0.3))
    with socket.create_connection(("127.0.0.1", listener.addresses["tcp"][1])) as idle:
        idle.sendall(b"<38>Jun 14 15:16:01 combo sshd[4]: one message, then silence\n")
        idle.settimeout(DEADLINE)
        assert idle.recv(1) == b""
    assert receive(listener, 1) == ["<38>Jun 14 15:16:01 combo sshd[4]: one message, then silence"]
    wait_until("the timeout is counted", lambda: listener.connections.timed_out == 1, listener)
