"""A small asyncio HTTP/1.1 client: keep-alive connection pools per (host, port).

Built on `asyncio.Protocol` and the sans-IO `ResponseParser`; whole-bytes request and
response bodies only (no streaming). Per host at most `connections_per_host_max` requests
are in flight (each on its own connection); idle connections are kept for
`idle_timeout_s` and reused. A connection is dropped, never reused, after any error,
timeout, cancellation, `Connection: close` or a body framed by the connection's close.
A request on a reused connection that the peer closed before sending one byte of the
response (it had closed the idle connection) is sent once more on a new connection.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

from common.leanhttp._errors import (
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    LeanHTTPError,
    PoolClosed,
    RequestTimeout,
)
from common.leanhttp._parser import (
    BODY_BYTES_MAX,
    HEADER_BYTES_MAX,
    Body,
    Response,
    ResponseParser,
    serialize_request_parts,
)

__all__ = ["LeanPool"]


class _Conn(asyncio.Protocol):
    """One connection; carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[Response] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        parser = self._parser
        if waiter is None or parser is None or waiter.done():
            self.close()  # bytes nobody asked for: this connection is not usable
            return
        try:
            resp = parser.feed(data)
        except LeanHTTPError as e:
            waiter.set_exception(e)
            self.close()
            return
        if resp is not None:
            waiter.set_result(resp)

    def eof_received(self) -> bool | None:
        self._peer_closed()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._peer_closed()

    def _peer_closed(self) -> None:
        waiter = self._waiter
        parser = self._parser
        if waiter is None or parser is None or waiter.done():
            self.closed = True
            return
        try:
            waiter.set_result(parser.feed_eof())
        except LeanHTTPError as e:
            waiter.set_exception(e)
        self.closed = True

    # -- use ---------------------------------------------------------------------------
    def usable(self) -> bool:
        t = self.transport
        return not self.closed and t is not None and not t.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def exchange(
        self, data: list[bytes | memoryview], parser: ResponseParser, timeout_s: float
    ) -> Response:
        """Send one request and wait for its whole response."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        self._waiter = waiter
        self._parser = parser
        timer = loop.call_later(timeout_s, _expire, waiter, timeout_s)
        try:
            if len(data) == 1:
                self.transport.write(data[0])
            else:
                self.transport.writelines(data)
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._parser = None


def _expire(waiter: asyncio.Future[Response], timeout_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(RequestTimeout(f"no whole response within {timeout_s} s"))


@dataclass
class _Host:
    slots: asyncio.Semaphore
    idle: collections.deque[_Conn] = field(default_factory=collections.deque)


class LeanPool:
    """Keep-alive connections to many (host, port)s; `request` sends one request."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        connections_per_host_max: int = 64,
        idle_timeout_s: float = 30.0,
        header_bytes_max: int = HEADER_BYTES_MAX,
        body_bytes_max: int = BODY_BYTES_MAX,
    ) -> None:
        assert connect_timeout_s > 0 and connections_per_host_max >= 1 and idle_timeout_s >= 0
        self.connect_timeout_s = connect_timeout_s
        self.connections_per_host_max = connections_per_host_max
        self.idle_timeout_s = idle_timeout_s
        self.header_bytes_max = header_bytes_max
        self.body_bytes_max = body_bytes_max
        self.connections_made = 0  # for tests and metrics: new connections opened
        self._hosts: dict[tuple[str, int], _Host] = {}
        self._closed = False

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: Body | None = None,
        *,
        timeout_s: float,
        body_bytes_max: int | None = None,
    ) -> Response:
        """Send `method target` (already percent-encoded) to host:port; the whole response.

        `body` is bytes or a sequence of parts (sent one after another, not joined: a large
        body is never copied here). `timeout_s` bounds the exchange (send and whole
        response) after the connection is made; making one is bounded by the pool's
        `connect_timeout_s`. Raises a
        `LeanHTTPError` (a `TimeoutError` too for the timeouts).
        """
        if self._closed:
            raise PoolClosed("the connection pool is closed")
        items = headers.items() if isinstance(headers, Mapping) else headers
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        data = serialize_request_parts(method, target, authority, items, body)
        key = (host, port)
        h = self._hosts.get(key)
        if h is None:
            h = self._hosts[key] = _Host(asyncio.Semaphore(self.connections_per_host_max))
        limit = self.body_bytes_max if body_bytes_max is None else body_bytes_max
        async with h.slots:
            conn = self._idle(h)
            if conn is not None:
                try:
                    return await self._exchange(h, conn, method, data, timeout_s, limit)
                except ConnectionClosed as e:
                    if not e.before_response:
                        raise
                    # The peer had closed the idle connection: once more on a new one.
            conn = await self._connect(host, port)
            return await self._exchange(h, conn, method, data, timeout_s, limit)

    async def close(self) -> None:
        """Close every idle connection; later requests raise `PoolClosed`. Requests in
        flight finish, and their connections are closed rather than kept."""
        self._closed = True
        for h in self._hosts.values():
            while h.idle:
                h.idle.pop().close()

    def idle_connections(self, host: str, port: int) -> int:
        h = self._hosts.get((host, port))
        return 0 if h is None else sum(1 for c in h.idle if c.usable())

    def _idle(self, h: _Host) -> _Conn | None:
        """The most recently used idle connection still open and fresh, else None."""
        idle = h.idle
        if not idle:
            return None
        oldest_ok = asyncio.get_running_loop().time() - self.idle_timeout_s
        while idle:
            conn = idle.pop()
            if conn.usable() and conn.idle_since >= oldest_ok:
                return conn
            conn.close()
        return None

    async def _connect(self, host: str, port: int) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _transport, conn = await loop.create_connection(_Conn, host, port)
        except TimeoutError as e:
            raise ConnectTimeout(
                f"no connection to {host}:{port} within {self.connect_timeout_s} s"
            ) from e
        except OSError as e:
            raise ConnectError(f"cannot connect to {host}:{port}: {e}") from e
        self.connections_made += 1
        return conn

    async def _exchange(
        self,
        h: _Host,
        conn: _Conn,
        method: str,
        data: list[bytes | memoryview],
        timeout_s: float,
        body_max: int,
    ) -> Response:
        parser = ResponseParser(
            head_request=method == "HEAD",
            header_bytes_max=self.header_bytes_max,
            body_bytes_max=body_max,
        )
        try:
            resp = await conn.exchange(data, parser, timeout_s)
        except BaseException:
            conn.abort()
            raise
        if resp.keep_alive and not self._closed and conn.usable():
            now = asyncio.get_running_loop().time()
            conn.idle_since = now
            h.idle.append(conn)
            # Reuse takes the newest; the oldest is pruned here, one per request, once the
            # peer closed it or it idled too long (so dead ones do not pile up).
            oldest = h.idle[0]
            if oldest is not conn and (
                not oldest.usable() or oldest.idle_since < now - self.idle_timeout_s
            ):
                h.idle.popleft().close()
        else:
            conn.close()
        return resp
