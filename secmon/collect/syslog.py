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

from secmon.collect.files import Record
from secmon.errors import InputError

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024  # RFC 5425 asks receivers to take at least 8 KiB; larger frames are cut
QUEUE_SIZE = 50_000
UDP_BUFFER = 8 * 1024 * 1024  # bytes asked for; the kernel caps it at net.core.rmem_max


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
                 tls_context: ssl.SSLContext | None = None, queue_size: int = QUEUE_SIZE):
        self._queue: queue.Queue[tuple[str, bytes, int]] = queue.Queue(queue_size)
        self._specs = (udp, tcp, tls)
        self._tls_context = tls_context
        self._servers: list[socketserver.BaseServer] = []
        self._seq = 0
        self._seq_lock = threading.Lock()
        self.dropped = 0
        self.received = 0
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
                peer = f"{'tls' if isinstance(self.request, ssl.SSLSocket) else 'tcp'}:{self.client_address[0]}"
                rest = b""
                while chunk := self.request.recv(65536):
                    try:
                        messages, rest = frames(rest + chunk)
                    except ValueError as exc:
                        log.warning("syslog peer %s: %s; connection closed", peer, exc)
                        return
                    for message in messages:
                        listener._put(peer, message, block=True)
                if rest.strip(b"\r\n\0 "):
                    listener._put(peer, rest.rstrip(b"\r\n\0"), block=True)

        class UDPServer(socketserver.ThreadingUDPServer):
            def server_bind(self) -> None:
                # A burst of datagrams waits in the kernel while handler threads start;
                # the default buffer (~200 KiB) is what drops them on a busy host.
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
                super().server_bind()

        class TLSServer(socketserver.ThreadingTCPServer):
            def get_request(self) -> tuple[socket.socket, object]:
                sock, address = super().get_request()
                assert listener._tls_context is not None
                return listener._tls_context.wrap_socket(sock, server_side=True), address

        for kind, address, server_class, handler in (
                ("udp", udp, UDPServer, Datagram),
                ("tcp", tcp, socketserver.ThreadingTCPServer, Stream),
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
