"""A counting HTTP proxy on loopback, in front of the Elasticsearch node, for the rules benchmark.

    python bench/rules/proxy.py --port 9299 --upstream http://127.0.0.1:9200

Both tools of the benchmark (secmon and ElastAlert 2) talk to the node through it, so
their requests are counted the same way, at the transport: for every request, its method
and kind (where: events indices, search context or other; the last `_name` of its path), the bytes
each way, the wall time from the proxy's send to the last byte of the answer (the node's
answer time plus loopback), and the node's own `took` (milliseconds) when the answer has
one (searches, multi-searches, scrolls, bulks).

Control paths (not forwarded, not counted): `GET /__bench/stats` returns the counts since
the last `POST /__bench/reset`. One upstream connection per client connection, kept alive.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# The answer's own `took` is among its first keys (after `_scroll_id` or `pit_id` when there is one).
TOOK = re.compile(rb'"took":(\d+)')
PIT = re.compile(rb'"pit"\s*:\s*\{')  # a search body that pages a point in time
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.kinds: dict[str, dict[str, float]] = defaultdict(
                lambda: {"requests": 0, "bytes_out": 0, "bytes_in": 0, "wall_ms": 0.0, "took_ms": 0, "errors": 0})

    def add(self, kind: str, sent: int, received: int, wall: float, took: int | None, status: int) -> None:
        with self.lock:
            row = self.kinds[kind]
            row["requests"] += 1
            row["bytes_out"] += sent
            row["bytes_in"] += received
            row["wall_ms"] += wall * 1000
            row["took_ms"] += took or 0
            row["errors"] += status >= 400

    def abandoned(self) -> None:
        with self.lock:
            self.kinds["client left before the answer"]["requests"] += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {k: dict(v) for k, v in self.kinds.items()}


def kind_of(method: str, path: str, body: bytes) -> str:
    """`events|context|other METHOD _endpoint`: on the events indices (in the path, or in the header
    lines of a multi-search), on a search context that has no index in its path (scroll, clear
    scroll, point in time), or anything else (the tools' own bookkeeping indices, cluster calls)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    named = next((p for p in reversed(parts) if p.startswith("_")), "index" if parts else "/")
    if (parts and "-events-" in parts[0]) or (named == "_msearch" and b"-events-" in body.split(b"\n", 1)[0]):
        where = "events"
    elif parts[:2] in (["_search", "scroll"], ["_pit"]) or (parts == ["_search"] and PIT.search(body[:4096])):
        where = "context"  # a search of a point in time names no index: its pages are the events'; not "other"
    else:
        where = "other"
    return f"{where} {method} {named}"


def took_of(body: bytes, encoding: str) -> int | None:
    head = body[:4096]
    if encoding == "gzip":
        try:
            head = gzip.decompress(body)[:4096]
        except OSError:
            return None
    found = TOOK.search(head.split(b'"hits"', 1)[0].split(b'"items"', 1)[0])
    return int(found.group(1)) if found else None


def handler(upstream: str, stats: Stats) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        conn: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
            pass

        def _control(self) -> bool:
            if not self.path.startswith("/__bench/"):
                return False
            if self.path == "/__bench/reset":
                stats.reset()
                body = b"{}"
            else:
                body = json.dumps(stats.snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self._control():
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
            headers["Host"] = target.netloc
            if self.conn is None:
                self.conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port or 9200,
                                                       timeout=600)
            started = time.perf_counter()
            try:
                self.conn.request(self.command, self.path, body=body or None, headers=headers)
                answer = self.conn.getresponse()
                data = answer.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                raise
            wall = time.perf_counter() - started
            encoding = answer.getheader("Content-Encoding", "") or ""
            stats.add(kind_of(self.command, self.path, body), len(body) + len(self.path), len(data), wall,
                      took_of(data, encoding), answer.status)
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            try:
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left: counted, not printed
                stats.abandoned()
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

    return Forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="http://127.0.0.1:9200")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(args.upstream, Stats()))
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
