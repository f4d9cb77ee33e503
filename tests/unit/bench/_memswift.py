"""MemorySwift: a tiny in-memory Swift-like HTTP endpoint on 127.0.0.1, for load-generator tests.

It is a test twin of an object store (PUT/GET/HEAD/DELETE of objects, PUT of containers,
JSON listings), served by the standard library's threading HTTP server on a real socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

TOKEN = "tok"


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, int]] = {}  # container -> name -> size
        self.requests: list[tuple[str, str]] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: _Store

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _reply(self, status: int, body: bytes = b"", length: int | None = None) -> None:
        if status >= 400:  # the request body may be unread: do not reuse the connection
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drain(self) -> int:
        left, got = int(self.headers.get("Content-Length", "0")), 0
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            got += len(chunk)
            left -= len(chunk)
        return got

    def _route(self) -> tuple[str, str | None] | None:
        parts = unquote(urlsplit(self.path).path).split("/")
        if self.headers.get("X-Auth-Token") != TOKEN:
            self._drain()
            self._reply(401)
            return None
        # /v1/AUTH_test/<container>[/<object>]
        if len(parts) == 4:
            return parts[3], None
        if len(parts) == 5:
            return parts[3], parts[4]
        self._drain()
        self._reply(400)
        return None

    def do_PUT(self) -> None:
        route = self._route()
        if route is None:
            return
        container, obj = route
        got = self._drain()
        with self.store.lock:
            self.store.requests.append(("PUT", self.path))
            if obj is None:
                self.store.objects.setdefault(container, {})
            elif container not in self.store.objects:
                self._reply(404)
                return
            else:
                self.store.objects[container][obj] = got
        self._reply(201)

    def _get(self) -> None:
        route = self._route()
        if route is None:
            return
        container, obj = route
        with self.store.lock:
            self.store.requests.append((self.command, self.path))
            names = self.store.objects.get(container)
            size = None if names is None or obj is None else names.get(obj)
        if names is None or (obj is not None and size is None):
            self._reply(404)
        elif obj is None:
            self._reply(200, json.dumps([{"name": k} for k in sorted(names)]).encode())
        elif self.command == "HEAD":
            self._reply(200, length=size)
        else:
            assert size is not None
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            left = size
            while left:
                n = min(left, 1 << 20)
                self.wfile.write(b"y" * n)
                left -= n

    do_GET = _get
    do_HEAD = _get

    def do_DELETE(self) -> None:
        route = self._route()
        if route is None:
            return
        container, obj = route
        with self.store.lock:
            self.store.requests.append(("DELETE", self.path))
            found = obj is not None and obj in self.store.objects.get(container, {})
            if found:
                assert obj is not None
                del self.store.objects[container][obj]
        self._reply(204 if found else 404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Load generators drop connections when a timed run ends; that is not an error here.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def memory_swift() -> Iterator[tuple[str, _Store]]:
    """Yields (storage URL, store) of a running MemorySwift."""
    store = _Store()
    handler = type("Handler", (_Handler,), {"store": store})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/AUTH_test", store
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
