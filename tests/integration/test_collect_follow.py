"""`secmon collect --follow`: files rotated under the collector's feet, and the syslog listener
(UDP, TCP with both framings, TLS) on loopback. Real process, real node."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, write_config
from tests.integration.test_collect_crash import AGENCY, make_log, secmon, wait_for_count

pytestmark = [pytest.mark.integration, pytest.mark.dataset]


def originals(es, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    index = f"{prefix}-events-*,{prefix}-deadletter-*"
    es.indices.refresh(index=index, ignore_unavailable=True)
    hits = es.search(index=index, size=10_000, source=["event.original"])["hits"]["hits"]
    return sorted(h["_source"]["event"]["original"] for h in hits)


def stop(proc: subprocess.Popen[bytes]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


def test_rotation_by_rename_and_copytruncate_while_shipping_loses_nothing(tmp_path, es, es_url, prefix,  # type: ignore[no-untyped-def]
                                                                          datasets) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "auth.log"
    config = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    written = make_log(datasets, log, 1000)
    follower = secmon(config, "collect", "--follow", str(logs / "auth.log*"), "-a", AGENCY, "-s", "linux-auth",
                      "--year", "2005", "--state", str(tmp_path / "state"), "--batch-size", "200",
                      "--batch-wait", "0.1")
    try:
        for step in range(1, 13):
            written += make_log(datasets, log, 250, first=len(written))
            if step == 4:  # logrotate's default: rename, then the daemon reopens a new file
                log.rename(logs / "auth.log.1")
                written += make_log(datasets, log, 250, first=len(written))
            if step == 8:  # logrotate's copytruncate: copy, then truncate in place
                shutil.copyfile(log, logs / "auth.log.2")
                with log.open("r+") as handle:
                    handle.truncate(0)
            time.sleep(0.15)
        assert wait_for_count(es, f"{prefix}-events-*,{prefix}-deadletter-*", len(written), 60,
                              follower) == len(written)
        time.sleep(1.0)  # anything shipped twice under another id would show up now
    finally:
        out, err = stop(follower)
    assert originals(es, prefix) == sorted(line.rstrip("\n") for line in written)
    assert "total:" in out


def _tls_files(tmp_path: Path) -> tuple[Path, Path] | None:
    if shutil.which("openssl") is None:
        return None
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


RFC3164 = "<38>Jun 14 15:16:01 combo sshd[19939]: Failed password for root from 218.188.2.4 port 4222 ssh2"
RFC5424 = ('<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
           '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry')


def test_syslog_listener_udp_tcp_tls_on_loopback(tmp_path, es, es_url, prefix) -> None:  # type: ignore[no-untyped-def]
    udp, tcp, tls = free_port(), free_port(), free_port()
    config = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    tls_files = _tls_files(tmp_path)
    extra = ["--syslog-tls", f"127.0.0.1:{tls}", "--tls-cert", str(tls_files[0]), "--tls-key",
             str(tls_files[1])] if tls_files else []
    follower = secmon(config, "collect", "--follow", "--syslog-udp", f"127.0.0.1:{udp}", "--syslog-tcp",
                      f"127.0.0.1:{tcp}", *extra, "-a", AGENCY, "-s", "syslog", "--year", "2005",
                      "--state", str(tmp_path / "state"), "--batch-wait", "0.1")
    sent: list[str] = []
    try:
        for _ in range(100):  # wait until it listens
            try:
                socket.create_connection(("127.0.0.1", tcp), timeout=1).close()
                break
            except OSError:
                assert follower.poll() is None, follower.communicate()
                time.sleep(0.1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(20):
                for message in (RFC3164.replace("19939", str(i)), RFC5424.replace("ID47", f"ID{i}")):
                    sock.sendto(message.encode() + b"\n", ("127.0.0.1", udp))
                    sent.append(message)
                    time.sleep(0.002)  # loopback UDP can still drop a burst
        with socket.create_connection(("127.0.0.1", tcp)) as conn:
            stream = b""
            for i in range(20):
                counted = RFC5424.replace("ID47", f"TCP{i}").encode()
                stream += str(len(counted)).encode() + b" " + counted  # RFC 6587 octet counting
                stream += RFC3164.replace("19939", str(1000 + i)).encode() + b"\n"  # newline framing
                sent += [counted.decode(), RFC3164.replace("19939", str(1000 + i))]
            conn.sendall(stream)
        if tls_files:
            context = ssl.create_default_context(cafile=str(tls_files[0]))
            with socket.create_connection(("127.0.0.1", tls)) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                for i in range(5):
                    message = RFC5424.replace("ID47", f"TLS{i}")
                    conn.sendall(f"{len(message)} {message}".encode())
                    sent.append(message)
                # Close as a well-behaved sender does: half-close, then read to EOF. Closing with
                # unread TLS 1.3 session tickets in the buffer makes the kernel send a RST, and a
                # RST discards what the receiver has not read yet (seen: TLS2-4 lost under load).
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(4096):
                    pass
        # Generous: returns as soon as all arrived; on a loaded 2-core machine shipping can lag.
        # The assertion below then names any message that is missing.
        wait_for_count(es, f"{prefix}-events-*,{prefix}-deadletter-*", len(sent), 90, follower)
    finally:
        out, err = stop(follower)
    stored = originals(es, prefix)
    assert stored == sorted(sent), (set(stored) ^ set(sent), err)
    hosts = es.search(index=f"{prefix}-events-*", size=0, aggs={"h": {"terms": {"field": "host.hostname"}}})
    assert {b["key"] for b in hosts["aggregations"]["h"]["buckets"]} == {"combo", "mymachine.example.com"}
    assert "total:" in out


def test_a_pattern_that_matches_no_file_is_said_and_followed_and_fails_only_if_it_never_matched(  # type: ignore[no-untyped-def]
        tmp_path, es, es_url, prefix, datasets) -> None:
    import json
    import queue
    import threading

    logs = tmp_path / "logs"
    logs.mkdir()
    config = write_config(tmp_path / "secmon.yml", es_url, prefix, free_port())
    never, later = str(logs / "never*.log"), str(logs / "auth*.log")
    follower = secmon(config, "collect", "--follow", never, later, "-a", AGENCY, "-s", "linux-auth", "--year",
                      "2005", "--state", str(tmp_path / "state"), "--batch-wait", "0.1", "--json")
    lines: queue.Queue[str] = queue.Queue()
    assert follower.stderr is not None and follower.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line.decode()) for line in follower.stderr], daemon=True)
    reader.start()
    said: list[str] = []
    deadline = time.monotonic() + 60
    while not any(later in line for line in said):  # said before it reads anything (and after its SIGTERM handler)
        assert time.monotonic() < deadline and follower.poll() is None, ("no warning about the pattern", said)
        try:
            said.append(lines.get(timeout=1))
        except queue.Empty:
            pass
    assert any(f"{never!r} matches no file (yet)" in line for line in said), said
    written = make_log(datasets, logs / "auth.log", 50)  # the file appears: it is read
    try:
        assert wait_for_count(es, f"{prefix}-events-*,{prefix}-deadletter-*", len(written), 60,
                              follower) == len(written)
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=60)
        reader.join(timeout=10)
    while not lines.empty():
        said.append(lines.get())
    out = json.loads(follower.stdout.read().decode())
    assert follower.returncode == 4, said  # the one that never matched a file
    assert out["inputs"][0]["unmatched_patterns"] == [never] and out["inputs"][0]["events"] == len(written)
    assert any(f"{never!r} matched no file while collect ran" in line for line in said), said
    assert not any(f"{later!r} matched no file" in line for line in said), said
