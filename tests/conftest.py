"""Shared fixtures: the real local Elasticsearch node, a real SMTP server on loopback, datasets.

The node is started once per session by the project's own `scripts/es-local`
(on port 9250, so a developer's node on 9200 is left alone), unless
SECMON_TEST_ES_URL points at a running one. Each session writes under its own
index prefix, so runs never see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
TEST_PORT = int(os.environ.get("SECMON_TEST_ES_PORT", "9250"))


@pytest.fixture(scope="session", autouse=True)
def rule_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Offline scans cache compiled rules (detect/cache.py): in a folder of the test session, never
    the user's own ~/.cache/secmon (subprocesses inherit it through the environment)."""
    folder = tmp_path_factory.mktemp("rule-cache")
    before = os.environ.get("SECMON_CACHE_DIR")
    os.environ["SECMON_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("SECMON_CACHE_DIR", None)
    else:
        os.environ["SECMON_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS} (../shared/datasets beside the checkout)")
    return DATASETS


_NODE_NOTES: list[str] = []


def _announce(config: pytest.Config, text: str) -> None:
    _NODE_NOTES.append(text.strip())


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """CI logs say which real node the integration tests ran against."""
    for note in _NODE_NOTES:
        terminalreporter.write_line(note)


@pytest.fixture(scope="session")
def es_url(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[str]:
    url = os.environ.get("SECMON_TEST_ES_URL")
    if url:
        _announce(pytestconfig, f"\nintegration tests use the Elasticsearch node at {url}")
        yield url
        return
    home = tmp_path_factory.mktemp("es-node")
    env = {**os.environ, "SECMON_ES_HOME": str(home), "SECMON_ES_PORT": str(TEST_PORT)}
    started = time.monotonic()
    try:
        subprocess.run(["bash", str(ROOT / "scripts" / "es-local"), "start"], check=True, env=env)
    except subprocess.CalledProcessError:
        # A node that came up too late must not outlive the session holding the port.
        subprocess.run(["bash", str(ROOT / "scripts" / "es-local"), "wipe"], check=False, env=env)
        raise
    _announce(pytestconfig, f"\nintegration tests use a real local Elasticsearch node on 127.0.0.1:{TEST_PORT}, "
                            f"started by scripts/es-local in {time.monotonic() - started:.1f}s")
    try:
        yield f"http://127.0.0.1:{TEST_PORT}"
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "es-local"), "wipe"], check=False, env=env)


@pytest.fixture(scope="session")
def es(es_url: str):  # type: ignore[no-untyped-def]
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_url, request_timeout=60)
    yield client
    client.close()


def drop_prefix(es, name: str) -> None:  # type: ignore[no-untyped-def]
    """Delete the prefix's indices and index templates: two requests. One wildcard delete of the
    templates is one cluster-state update; one delete per template (9 after `setup`) cost seconds
    per test on a busy node. A 404 means the test created no template."""
    es.indices.delete(index=f"{name}-*", ignore_unavailable=True, allow_no_indices=True)
    es.options(ignore_status=404).indices.delete_index_template(name=f"{name}-*")


@contextlib.contextmanager
def scratch_prefix(es) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh index prefix; its indices and index templates are deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        drop_prefix(es, name)


@pytest.fixture
def prefix(es) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh index prefix for one test; its indices are deleted afterwards."""
    with scratch_prefix(es) as name:
        yield name


class Mailbox:
    """Messages received by the loopback SMTP server, parsed as real MIME."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # aiosmtpd hook
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[str, int, Mailbox]]:
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, mailbox
    finally:
        controller.stop()


def es_local(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `scripts/es-local ARGS`; with `check`, a failure is an AssertionError that shows what it said."""
    result = subprocess.run(["bash", str(ROOT / "scripts" / "es-local"), *args], env=env, capture_output=True,
                            text=True, timeout=900, check=False)
    if check:
        assert result.returncode == 0, (f"es-local {' '.join(args)} exited {result.returncode}:\n"
                                        f"{result.stdout}\n{result.stderr}")
    return result


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A free HTTP port whose default transport port (es-local: +1000) is free too."""
    import socket

    for _ in range(50):
        port = free_port()
        if port > 64535:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port + 1000))
            except OSError:
                continue
        return port
    raise AssertionError("no free pair of ports found")


@pytest.fixture(scope="session")
def _stoppable_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    port = int(os.environ.get("SECMON_TEST_STOP_ES_PORT", "0")) or free_port_pair()
    env = {**os.environ, "SECMON_ES_HOME": str(tmp_path_factory.mktemp("stoppable-node")),
           "SECMON_ES_PORT": str(port)}
    env.pop("SECMON_ES_TRANSPORT_PORT", None)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        es_local(env, "wipe", check=False)


@pytest.fixture
def stoppable_node(_stoppable_node: tuple[str, dict[str, str]]) -> tuple[str, dict[str, str]]:
    """A node of the session's own, which a test may stop and start again (the shared `es` node never
    stops): (url, env for `es_local`). Its start costs 10 to 30 s on a busy machine, so the tests that
    stop a node share one, each under its own index prefix, and leave it running. `es-local start`
    here starts it the first time, and again if a test failed while it was stopped; when it already
    runs it only waits for its health. The pid file says the node on the port is ours, not a node of
    someone else that es-local found answering there."""
    url, env = _stoppable_node
    result = es_local(env, "start")
    assert (Path(env["SECMON_ES_HOME"]) / "es.pid").is_file(), f"not our node on {url}: {result.stdout}"
    return url, env


def write_config(path: Path, es_url: str, prefix: str, smtp_port: int, extra: str = "", digest_over: int = 5) -> Path:
    path.write_text(f"""\
elasticsearch:
  hosts: [{es_url}]
  index_prefix: {prefix}
agencies:
  - id: so-tttt
    name: "Sở Thông tin và Truyền thông"
    language: vi
    recipients: [soc@so-tttt.example.vn]
    retention: 36500d  # the tests load real logs of 2005 and later: none is too old to collect
  - id: portal
    name: Provincial public portal
    language: en
    recipients: [admin@portal.example.vn]
    retention: 36500d
smtp:
  host: 127.0.0.1
  port: {smtp_port}
  sender: secmon@monitoring.example.vn
  digest_over: {digest_over}
rules: [{ROOT / 'rules'}]
pipelines: [{ROOT / 'pipelines'}]
{extra}""", encoding="utf-8")
    return path


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `secmon ARGS` in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from secmon.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as done:
            code = int(done.code or 0)
        else:
            code = 0
    return code, out.getvalue(), err.getvalue()
