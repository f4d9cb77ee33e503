"""The fast lane: an asyncio.Protocol that serves a connection's requests itself while they
match a registered fast route, and hands the connection, for good, to a fallback protocol
(aiohttp's) at the first request that does not (docs/lean-http-server.md).

One request at a time per connection: the next request's bytes wait in the parser (reading
pauses past `buffered_bytes_max`) until the answer to the current one is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from multidict import CIMultiDict

from common.leanserver._bodies import BodyBuffers
from common.leanserver._errors import LeanServerError
from common.leanserver._parser import (
    DIRECT_BODY_BYTES_MIN,
    HEADER_BYTES_MAX,
    RequestHead,
    RequestParser,
    serialize_response,
    serialize_response_parts,
)

__all__ = [
    "FastLane",
    "FastLaneProtocol",
    "FastRequest",
    "FastRoute",
    "Reply",
]

# Status, headers, body: what a dispatcher answers.
Reply = tuple[int, list[tuple[str, str]], bytes]
# Bytes a connection may hold beyond the request being answered before it stops reading.
BUFFERED_BYTES_MAX = 256 * 1024
# What one socket read takes at most when no body is being received directly (as uvloop's
# own read buffer), and at the start of a request: a head and a little of its body, so that
# little is copied before a large body goes straight into its own buffer.
READ_BYTES_MAX = 256 * 1024
_HEAD_READ_BYTES = 16 * 1024
KEEPALIVE_TIMEOUT_S = 75.0  # as aiohttp's default: an idle connection is closed after this
_SWEEP_INTERVAL_S = 5.0


@dataclass(slots=True)
class FastRequest:
    """One whole request on the fast lane."""

    head: RequestHead
    body: bytes
    remote: str | None
    # The body as the pieces it arrived in, for a route that takes it so (`body` is then
    # empty): `FastRoute.body_parts`.
    parts: tuple[memoryview, ...] = ()

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def path(self) -> str:
        """The raw (percent-encoded) path, without the query."""
        return self.head.path

    @property
    def headers(self) -> CIMultiDict[str]:
        return self.head.headers


@dataclass(frozen=True, slots=True)
class FastRoute:
    """`method` requests whose head `accept` takes, with a Content-Length body of at most
    `body_bytes_max`, are served by `handler` on the fast lane. `accept` sees the head only
    (path and headers) and must be cheap: it runs for every request of a fast connection."""

    method: str
    accept: Callable[[RequestHead], bool]
    handler: Callable[[FastRequest], Awaitable[object]]
    body_bytes_max: int
    # A body that has not arrived whole this long after its head is answered 408.
    body_timeout_s: float = 60.0
    # The handler takes the body as `FastRequest.parts` (views of the pieces it arrived in,
    # not copied into one bytes).
    body_parts: bool = False


Dispatch = Callable[[FastRoute, FastRequest], Awaitable[Reply]]
# Told of a fast request given up before its handler ran: its status (408 body timed out,
# 499 the client went away mid-body) and the seconds since its head arrived.
Abandoned = Callable[[FastRequest, int, float], None]
BODY_TIMEOUT_TEXT = b"timed out reading the request body\n"


def _no_record(_request: FastRequest, _status: int, _elapsed_s: float) -> None:
    return None


class FastLane:
    """What the connections of one listening server share: the routes, the dispatcher (which
    wraps a route's handler in the server's outer behaviour and never raises), the fallback
    protocol's factory, and the bookkeeping for a graceful stop."""

    def __init__(
        self,
        routes: list[FastRoute],
        dispatch: Dispatch,
        fallback: Callable[[], asyncio.Protocol],
        *,
        abandoned: Abandoned = _no_record,
        on_hand_over: Callable[[], None] | None = None,
        header_bytes_max: int = HEADER_BYTES_MAX,
        buffered_bytes_max: int = BUFFERED_BYTES_MAX,
        keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S,
    ) -> None:
        self._by_method: dict[str, list[FastRoute]] = {}
        for route in routes:
            self._by_method.setdefault(route.method, []).append(route)
        self.dispatch = dispatch
        self.fallback = fallback
        self.abandoned = abandoned
        self.on_hand_over = on_hand_over
        self.header_bytes_max = header_bytes_max
        self.body_bytes_max = max((r.body_bytes_max for r in routes), default=0)
        self.buffered_bytes_max = buffered_bytes_max
        self.keepalive_timeout_s = keepalive_timeout_s
        self.closing = False
        self.handed_over = 0  # connections given to the fallback (a figure for tests/metrics)
        self._connections: set[FastLaneProtocol] = set()
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # The read buffer of every connection not receiving a body directly: a transport
        # fills it and hands it over (`buffer_updated`) before it asks any protocol for
        # another (one event loop thread per lane).
        self._read_buf: memoryview | None = None
        # Directly received bodies' buffers, given out again once their request is over.
        self.bodies = BodyBuffers()

    def read_buffer(self) -> memoryview:
        if self._read_buf is None:
            self._read_buf = memoryview(bytearray(READ_BYTES_MAX))
        return self._read_buf

    def protocol(self) -> FastLaneProtocol:
        """The protocol factory for `loop.create_server`."""
        return FastLaneProtocol(self)

    def route(self, head: RequestHead) -> FastRoute | None:
        """The fast route for `head`, or None: the request goes to the fallback."""
        routes = self._by_method.get(head.method)
        if routes is None or not head.framed or head.version != (1, 1):
            return None
        if not head.path.startswith("/"):  # absolute-form or "*": aiohttp's to interpret
            return None
        headers = head.headers
        if "Expect" in headers or "Upgrade" in headers:
            return None
        for route in routes:
            if head.content_length <= route.body_bytes_max and route.accept(head):
                return route
        return None

    # -- bookkeeping -------------------------------------------------------------------
    def _opened(self, conn: FastLaneProtocol) -> None:
        self._connections.add(conn)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(_SWEEP_INTERVAL_S, self._sweep)

    def _forget(self, conn: FastLaneProtocol) -> None:
        self._connections.discard(conn)

    def _started(self) -> None:
        self._in_flight += 1

    def _ended(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._idle is not None:
            self._idle.set()

    def _sweep(self) -> None:
        """Close connections idle (no request being answered, no byte received) for longer
        than the keep-alive timeout: dead peers and stalled partial requests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() - self.keepalive_timeout_s
        for conn in list(self._connections):
            conn.close_if_idle(deadline)
        self._sweeper = None
        if self._connections and not self.closing:
            self._sweeper = loop.call_later(_SWEEP_INTERVAL_S, self._sweep)

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def shutdown(self, timeout_s: float) -> None:
        """Stop: idle connections close now, busy ones after their answer; wait (at most
        `timeout_s`) for the requests being answered, then close whatever is left."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._connections):
            conn.close_if_idle(None)
        if self._in_flight:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
            except TimeoutError:
                pass
        for conn in list(self._connections):
            conn.abort()


class FastLaneProtocol(asyncio.BufferedProtocol):
    """One connection on the fast lane (see the module's docstring).

    A buffered protocol: the transport reads into the buffer `get_buffer` gives. That is
    the lane's shared read buffer, copied out once per read as before (`data_received`),
    except while a large body of a route that takes its body in parts arrives: then the
    socket reads straight into the one buffer that becomes the body (the parser's
    `receive_direct`), and no byte of it is copied in user space (a 1 MiB chunk PUT:
    docs/lean-http-server.md, "Direct receive")."""

    def __init__(self, lane: FastLane) -> None:
        self.lane = lane
        self.parser = RequestParser(
            header_bytes_max=lane.header_bytes_max, body_bytes_max=lane.body_bytes_max
        )
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._write_paused = False  # the peer is not reading its answers
        self._eof = False
        self._last_active = 0.0
        # A routed request whose body is still arriving: route, head, when the head came.
        self._partial: tuple[FastRoute, RequestHead, float] | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._reading_direct = False
        # The buffer of the body being received directly, or of the request being served
        # with one: the lane's again when the request is over (`_serve`).
        self._direct_body: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but have its methods)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self._last_active = asyncio.get_running_loop().time()
        if self.lane.closing:
            transport.close()
            return
        self.lane._opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # A handler already running is left to finish (as aiohttp does by default): a PUT
        # commits or not on its own terms; its answer has nowhere to go.
        self.lane._forget(self)
        self.transport = None
        if self._partial is not None:
            self._give_up(499)

    def get_buffer(self, sizehint: int) -> memoryview:
        direct = self.parser.direct_buffer()
        self._reading_direct = direct is not None  # which buffer `buffer_updated` is about
        if direct is not None:
            return direct
        buf = self.lane.read_buffer()
        return buf[:_HEAD_READ_BYTES] if not self.parser.buffered_bytes else buf

    def buffer_updated(self, nbytes: int) -> None:
        parser = self.parser
        if self._reading_direct:
            parser.direct_received(nbytes)
            self._last_active = asyncio.get_running_loop().time()
            if parser.direct_buffer() is None and not self._write_paused:  # the body is whole
                self._next()
            return
        self.data_received(bytes(self.lane.read_buffer()[:nbytes]))

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        if self._task is None and not self._write_paused:
            self._last_active = asyncio.get_running_loop().time()
            self._next()
        elif self.parser.buffered_bytes > self.lane.buffered_bytes_max and not self._paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self._paused = True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._task is None and self.parser.buffered_bytes:
            self._next()

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._task is not None:
            return True  # keep the transport: the answer is still to be written
        return None  # the transport closes itself

    # -- serving -----------------------------------------------------------------------
    def _next(self) -> None:
        """Start on the next buffered request: serve it, wait for more bytes, or hand over."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._paused:  # nothing is being answered: take bytes again
            self._paused = False
            transport.resume_reading()
        lane = self.lane
        try:
            head = self.parser.head()
        except LeanServerError:
            self._hand_over()  # the fallback answers what the lean parser refuses
            return
        if head is None:
            return
        route = lane.route(head)
        if route is None:
            self._hand_over()
            return
        parts = None
        if route.body_parts:
            parts = self.parser.take_body_parts(head)
            body = None if parts is None else b""
        else:
            body = self.parser.take_body(head)
        if body is None:
            if (
                route.body_parts
                and head.content_length >= DIRECT_BODY_BYTES_MIN
                and not self.parser.receiving_direct
            ):
                self._direct_body = self.lane.bodies.take(head.content_length)
                self.parser.receive_direct(head, self._direct_body)
            if self._partial is None:
                loop = asyncio.get_running_loop()
                self._partial = (route, head, loop.time())
                self._body_timer = loop.call_later(route.body_timeout_s, self._body_timed_out)
            return
        if self._partial is not None:
            self._partial = None
            assert self._body_timer is not None
            self._body_timer.cancel()
            self._body_timer = None
        lane._started()
        request = FastRequest(head, body, self.remote, tuple(parts or ()))
        self._task = asyncio.get_running_loop().create_task(self._serve(route, request))

    async def _serve(self, route: FastRoute, request: FastRequest) -> None:
        lane = self.lane
        try:
            status, headers, body = await lane.dispatch(route, request)
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            keep = request.head.keep_alive and not lane.closing and not self._eof
            try:
                parts = serialize_response_parts(
                    status, headers, body, keep_alive=keep, head_request=request.method == "HEAD"
                )
            except ValueError:
                parts = serialize_response_parts(
                    500,
                    [("Content-Type", "text/plain; charset=utf-8")],
                    b"bad header\n",
                    keep_alive=False,
                )
                keep = False
            if len(parts) == 1:
                transport.write(parts[0])
            else:
                transport.writelines(parts)
            if not keep:
                transport.close()
                return
        finally:
            self._task = None
            lane._ended()
            direct, self._direct_body = self._direct_body, None
            if direct is not None:
                del request  # its parts are views of the buffer
                lane.bodies.give_back(direct)
        self._last_active = asyncio.get_running_loop().time()
        if self._write_paused:
            return  # the next request waits for resume_writing
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if self.parser.buffered_bytes:
            self._next()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        transport = self.transport
        if self._partial is None or transport is None:
            return
        self._give_up(408)
        transport.write(
            serialize_response(
                408,
                [("Content-Type", "text/plain; charset=utf-8")],
                BODY_TIMEOUT_TEXT,
                keep_alive=False,
            )
        )
        transport.close()

    def _give_up(self, status: int) -> None:
        """The routed request in `_partial` will not be served: record it with `status`."""
        assert self._partial is not None
        _route, head, started = self._partial
        self._partial = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        elapsed = asyncio.get_running_loop().time() - started
        self.lane.abandoned(FastRequest(head, b"", self.remote), status, elapsed)

    def _hand_over(self) -> None:
        """Give the connection and every byte not yet served to the fallback protocol."""
        transport = self.transport
        assert transport is not None and self._task is None
        lane = self.lane
        lane._forget(self)
        lane.handed_over += 1
        if lane.on_hand_over is not None:
            lane.on_hand_over()
        data = self.parser.pending()
        self.transport = None
        proto = lane.fallback()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if data:
            proto.data_received(data)
        if self._eof:
            proto.eof_received()

    # -- stopping ----------------------------------------------------------------------
    def close_if_idle(self, deadline: float | None) -> None:
        """Close the connection unless a request is being answered; with a `deadline`
        (loop time), only if nothing happened on it since."""
        if self._task is not None or self.transport is None:
            return
        if deadline is not None and self._last_active > deadline:
            return
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
