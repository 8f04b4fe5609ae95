"""A real HTTP server on 127.0.0.1 for tests, which can misbehave on demand.

It serves the files under ``root`` (HEAD with Content-Length, GET with single byte ranges,
``Accept-Ranges: bytes``), records every request, and on demand answers a path with an
error status, cuts the connection part-way through a body, ignores range requests, serves
a body made on the fly (any size, none of it on disk), or serves a path's successive
versions (a file that changes between requests).

    def test_x(http_server):
        (http_server.root / "a.json").write_bytes(b"{}")
        http_server.fail("a.json", 500, times=2)      # next two requests get HTTP 500
        http_server.cut("a.json", after=10, times=1)  # next body stops after 10 bytes
        http_server.ranges = False                    # answer 200 + whole file to Range
        http_server.generate("big.json", 1 << 30, lambda start, end: b"x" * (end - start))
        http_server.versions("v.json", [b"old", b"new"])  # 1st request: old, then new
        url = http_server.url("a.json")
        ...
        assert http_server.count("a.json", "GET") == 3

The ``http_server`` fixture (function scope, a fresh root under tmp_path) is registered for
the whole test suite by ``pytest_plugins`` in tests/conftest.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str  # relative to the root, no leading slash
    range: str | None  # the Range header as sent


class HTTPTestServer:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.ranges = True
        self.requests: list[Request] = []
        self._failures: dict[str, list] = {}  # path -> [status, remaining or None]
        self._cuts: dict[str, list] = {}  # path -> [after_bytes, remaining or None]
        self._generated: dict[str, tuple] = {}  # path -> (size, piece(start, end) -> bytes)
        self._versions: dict[str, list[bytes]] = {}  # path -> bodies still to serve, in order
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control
    def fail(self, path: str, status: int, times: int | None = None) -> None:
        """Answer ``path`` with ``status`` for the next ``times`` requests (None: always)."""
        with self._lock:
            self._failures[path.lstrip("/")] = [status, times]

    def cut(self, path: str, after: int, times: int | None = None) -> None:
        """Send only ``after`` bytes of the body, then drop the connection."""
        with self._lock:
            self._cuts[path.lstrip("/")] = [after, times]

    def generate(self, path: str, size: int, piece) -> None:
        """Serve ``size`` bytes at ``path``, bytes ``[start, end)`` being ``piece(start, end)``.

        The body is made 1 MB at a time as it is sent: a gigabyte document costs no disk
        and no memory. A client that hangs up part-way is not an error.
        """
        with self._lock:
            self._generated[path.lstrip("/")] = (size, piece)

    def versions(self, path: str, bodies: list[bytes]) -> None:
        """Each request for ``path`` gets the next of ``bodies``; the last one stays."""
        with self._lock:
            self._versions[path.lstrip("/")] = list(bodies)

    def count(self, path: str | None = None, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests
                       if (path is None or r.path == path.lstrip("/")) and (method is None or r.method == method))

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{quote(path.lstrip('/'))}"

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    # -- lifecycle
    def start(self) -> HTTPTestServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-http-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> HTTPTestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- used by the handler
    def _take(self, table: dict, path: str):
        with self._lock:
            rule = table.get(path)
            if rule is None:
                return None
            value, remaining = rule
            if remaining is not None:
                if remaining <= 0:
                    return None
                rule[1] = remaining - 1
            return value

    def _body(self, rel: str) -> tuple[bytes | None, int, object]:
        """(data, size, piece): the file's bytes, or a generated body's size and maker."""
        with self._lock:
            if rel in self._generated:
                size, piece = self._generated[rel]
                return None, size, piece
            bodies = self._versions.get(rel)
            if bodies:
                return (bodies.pop(0) if len(bodies) > 1 else bodies[0]), 0, None
        target = (self.root / rel).resolve()
        if self.root not in target.parents or not target.is_file():
            return None, 0, None
        return target.read_bytes(), 0, None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    owner: HTTPTestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        owner = self.owner
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        owner._record(Request(self.command, rel, self.headers.get("Range")))
        status = owner._take(owner._failures, rel)
        if status is not None:
            return self._plain(status, f"{status} on request\n".encode(), head)
        data, size, piece = owner._body(rel)
        if data is None and piece is None:
            return self._plain(404, b"not found\n", head)
        if piece is None:
            size = len(data)
        start, end, code = 0, size, 200
        wanted = self.headers.get("Range") if owner.ranges else None
        if wanted:
            m = _RANGE.match(wanted.strip())
            if m and (m[1] or m[2]):
                if m[1]:
                    start = int(m[1])
                    end = min(size, int(m[2]) + 1) if m[2] else size
                else:
                    start = max(0, size - int(m[2]))
                if start >= size or start >= end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                code = 206
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if owner.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return
        if piece is not None:
            return self._stream(piece, start, end)
        body = data[start:end]
        after = owner._take(owner._cuts, rel)
        if after is not None and after < len(body):
            self.wfile.write(body[:after])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)

    def _stream(self, piece, start: int, end: int) -> None:
        try:
            for a in range(start, end, 1 << 20):
                self.wfile.write(piece(a, min(a + (1 << 20), end)))
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            self.close_connection = True

    def _plain(self, status: int, body: bytes, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


@pytest.fixture
def http_server(tmp_path_factory) -> Iterator[HTTPTestServer]:
    """A started ``HTTPTestServer`` serving a fresh, empty directory (``.root``)."""
    server = HTTPTestServer(tmp_path_factory.mktemp("www")).start()
    try:
        yield server
    finally:
        server.stop()
