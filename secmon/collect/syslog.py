"""A syslog listener: UDP, TCP and TLS; RFC 3164 and RFC 5424 messages.

The listener only frames messages; parsing them is the pipeline's job
(`syslog`, `linux-auth`, ...), so the raw message, priority included, is what
reaches the pipeline and `event.original`. TCP and TLS accept both framings of
RFC 6587: octet counting (`123 <34>1 ...`) and a newline (or NUL) after each
message.

Messages wait in a bounded queue. When it is full (Elasticsearch slow and the
spool full), TCP peers are simply not read any more, which slows them down
(backpressure); UDP has no way to say "wait", so datagrams are counted as
dropped.

Every TCP/TLS connection has a thread of its own, so a slow peer slows only
itself; the TLS handshake runs in that thread too, never in the accept loop.
What one peer can hold is bounded (`Limits`): a connection cap (past it new
connections are closed at once and counted), a handshake deadline, a deadline
for finishing a message once it has started (slowloris) and an idle timeout.
A message cut by a deadline is still delivered, so nothing is lost silently.
"""

from __future__ import annotations

import logging
import queue
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from secmon.collect.files import Record
from secmon.errors import InputError

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024  # RFC 5425 asks receivers to take at least 8 KiB; larger frames are cut
QUEUE_SIZE = 50_000
UDP_BUFFER = 8 * 1024 * 1024  # bytes asked for; the kernel caps it at net.core.rmem_max


@dataclass(frozen=True)
class Limits:
    """What one TCP/TLS peer may hold of the listener."""

    max_connections: int = 512  # at once, over TCP and TLS together; each is a thread
    handshake_timeout: float = 10.0  # seconds for the TLS handshake
    message_timeout: float = 60.0  # seconds to finish a message once its first byte came (slowloris)
    idle_timeout: float = 3600.0  # seconds without a byte; senders such as rsyslog reconnect


@dataclass
class ConnectionCounts:
    """Counted, never silent: what happened to TCP/TLS connections."""

    accepted: int = 0
    refused: int = 0  # the connection cap was reached: closed at once
    timed_out: int = 0  # handshake, message or idle deadline passed: closed
    failed: int = 0  # TLS handshake or socket errors
    active: int = 0

    def summary(self) -> str:
        return (f"{self.accepted} connections accepted, {self.refused} refused (connection limit), "
                f"{self.timed_out} closed by a timeout, {self.failed} failed")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @staticmethod
    def parse(text: str, flag: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"{flag}: {text!r} is not HOST:PORT", hint="e.g. 0.0.0.0:514 or 127.0.0.1:5514")
        return Address(host.strip("[]") or "0.0.0.0", int(port))


def frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split a TCP stream into messages; returns (complete messages, the unfinished rest)."""
    out: list[bytes] = []
    while buffer:
        head, space, _ = buffer[:12].partition(b" ")
        if head.isdigit() and space and not head.startswith(b"0"):
            size = int(head)
            start = len(head) + 1
            if len(buffer) < start + size:
                if size > MAX_MESSAGE * 16:
                    raise ValueError(f"octet count {size} is larger than allowed")
                break
            out.append(buffer[start:start + size])
            buffer = buffer[start + size:]
            continue
        cut = min((i for i in (buffer.find(b"\n"), buffer.find(b"\0")) if i >= 0), default=-1)
        if cut < 0:
            if len(buffer) > MAX_MESSAGE:  # no terminator in sight: cut rather than grow without bound
                out.append(buffer[:MAX_MESSAGE])
                buffer = buffer[MAX_MESSAGE:]
                continue
            break
        out.append(buffer[:cut])
        buffer = buffer[cut + 1:]
    return [m.rstrip(b"\r\n\0") for m in out if m.strip(b"\r\n\0 ")], buffer


class Listener:
    """Receives syslog on the given addresses; `records()` hands out what arrived."""

    def __init__(self, *, udp: Address | None = None, tcp: Address | None = None, tls: Address | None = None,
                 tls_context: ssl.SSLContext | None = None, queue_size: int = QUEUE_SIZE, limits: Limits = Limits()):
        self._queue: queue.Queue[tuple[str, bytes, int]] = queue.Queue(queue_size)
        self._specs = (udp, tcp, tls)
        self._tls_context = tls_context
        self._servers: list[socketserver.BaseServer] = []
        self._seq = 0
        self._seq_lock = threading.Lock()
        self.dropped = 0
        self.received = 0
        self.limits = limits
        self.connections = ConnectionCounts()
        self._conn_lock = threading.Lock()
        self.addresses: dict[str, tuple[str, int]] = {}  # kind -> bound address (port 0 = any free port)

    def start(self) -> Listener:
        udp, tcp, tls = self._specs
        listener = self

        class Datagram(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = self.request[0]
                listener._put(f"udp:{self.client_address[0]}", data[:MAX_MESSAGE].rstrip(b"\r\n\0"), block=False)

        class Stream(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                listener._serve(self.request, self.client_address[0], tls=isinstance(self.server, TLSServer))

        class UDPServer(socketserver.ThreadingUDPServer):
            def server_bind(self) -> None:
                # A burst of datagrams waits in the kernel while handler threads start;
                # the default buffer (~200 KiB) is what drops them on a busy host.
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
                super().server_bind()

        class StreamServer(socketserver.ThreadingTCPServer):
            request_queue_size = 128  # backlog: a burst of connects waits for the accept loop

            def verify_request(self, request: Any, client_address: Any) -> bool:
                # Admitted: Listener._serve releases the slot. Refused: socketserver closes it at once.
                return listener._admit(client_address[0])

        class TLSServer(StreamServer):
            pass  # the handshake runs in the connection's thread (Listener._serve), with a deadline

        for kind, address, server_class, handler in (
                ("udp", udp, UDPServer, Datagram),
                ("tcp", tcp, StreamServer, Stream),
                ("tls", tls, TLSServer, Stream)):
            if address is None:
                continue
            if kind == "tls" and self._tls_context is None:
                raise InputError("a TLS syslog listener needs a certificate and key (--tls-cert, --tls-key)")
            server_class.allow_reuse_address = True
            server_class.daemon_threads = True
            try:
                server = server_class((address.host, address.port), handler)
            except OSError as exc:
                self.stop()
                raise InputError(f"cannot listen for syslog on {kind} {address.host}:{address.port}: {exc.strerror}"
                                 ) from None
            host, port = server.server_address[:2]
            self.addresses[kind] = (str(host), int(port))
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                             name=f"syslog-{kind}").start()
        return self

    def _admit(self, peer: str) -> bool:
        with self._conn_lock:
            counts = self.connections
            if counts.active >= self.limits.max_connections:
                counts.refused += 1
                refused = counts.refused
            else:
                counts.active += 1
                counts.accepted += 1
                return True
        if refused in (1, 10, 100) or refused % 1000 == 0:
            log.warning("syslog: connection from %s refused: %d connections open, the limit; %d refused so far",
                        peer, self.limits.max_connections, refused)
        return False

    def _release(self) -> None:
        with self._conn_lock:
            self.connections.active -= 1

    def _count(self, what: str) -> None:
        with self._conn_lock:
            setattr(self.connections, what, getattr(self.connections, what) + 1)

    def _serve(self, sock: socket.socket, address: str, *, tls: bool) -> None:
        """One admitted connection, in its own thread: handshake, then frames until EOF or a deadline."""
        peer = f"{'tls' if tls else 'tcp'}:{address}"
        try:
            if tls:
                assert self._tls_context is not None
                sock.settimeout(self.limits.handshake_timeout)
                sock = self._tls_context.wrap_socket(sock, server_side=True)
            self._read(sock, peer)
        except TimeoutError:
            self._count("timed_out")
            log.info("syslog peer %s: no TLS handshake within %gs; closed", peer, self.limits.handshake_timeout)
        except (ssl.SSLError, OSError) as exc:
            self._count("failed")
            log.info("syslog peer %s: TLS handshake failed: %s", peer, exc)
        finally:
            self._release()  # before the close: a peer that sees it closed may connect again at once
            sock.close()

    def _read(self, sock: socket.socket, peer: str) -> None:
        limits = self.limits
        rest = b""
        started = 0.0  # when the unfinished message in `rest` got its first byte
        try:
            while True:
                if rest:
                    sock.settimeout(max(0.01, started + limits.message_timeout - time.monotonic()))
                else:
                    sock.settimeout(limits.idle_timeout)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                had_rest = bool(rest)
                try:
                    messages, rest = frames(rest + chunk)
                except ValueError as exc:
                    self._count("failed")
                    log.warning("syslog peer %s: %s; connection closed", peer, exc)
                    return
                for message in messages:
                    self._put(peer, message, block=True)
                if rest and (messages or not had_rest):
                    started = time.monotonic()
        except TimeoutError:
            self._count("timed_out")
            log.info("syslog peer %s: %s; closed", peer, f"a message unfinished after {limits.message_timeout:g}s"
                     if rest else f"idle for {limits.idle_timeout:g}s")
        except OSError as exc:  # reset by the peer, TLS errors mid-stream
            self._count("failed")
            log.info("syslog peer %s: %s; closed", peer, exc)
        if rest.strip(b"\r\n\0 "):  # what came of a message cut short is still delivered
            self._put(peer, rest.rstrip(b"\r\n\0"), block=True)

    def _put(self, peer: str, message: bytes, *, block: bool) -> None:
        item = (peer, message, time.time_ns())
        try:
            self._queue.put(item, block=block)
            self.received += 1
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 1000) or self.dropped % 100_000 == 0:
                log.warning("syslog queue full: %d UDP messages dropped so far", self.dropped)

    def records(self, limit: int, wait: float) -> list[Record]:
        """Up to `limit` messages; waits at most `wait` seconds for the first."""
        out: list[Record] = []
        try:
            item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return out
        while True:
            peer, message, received = item
            with self._seq_lock:
                self._seq += 1
                seq = self._seq
            # No offset to resume from: the id is the arrival (peer, time, order), unique per message.
            out.append(Record(seq, message.decode("utf-8", errors="replace"), f"syslog:{peer}:{received}:{seq}"))
            if len(out) >= limit:
                return out
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot load the TLS certificate {cert} and key {key}: {exc}") from None
    return context
