"""Large object PUTs to the replicas on plain connections (no aiohttp client).

Used by `proxy.objput.stream_put` for a body of at least LEAN_PUT_BYTES_MIN declared bytes
that carries the ETag trailer (proxy/etagtrailer.py). Per replica: a new connection, the
request head with `Expect: 100-continue`, and once the object server said "100 Continue",
the client's body written as it arrives, then the trailer. A node that answers before
taking the body (507, 5xx, cannot connect) is replaced by the next handoff, as on the
aiohttp path.

What it saves against aiohttp's streamed request: per piece of the body, one `writelines`
of the chunks it arrived in per replica (no join, no queue, no task wake-up per replica),
and a wait only while a replica's connection holds more than WRITE_HIGH_BYTES unsent.

Bounds: at most WRITE_HIGH_BYTES plus one piece wait unsent per replica (the replicas share
the bytes objects); a replica that takes no byte for `node_timeout_s` while the proxy waits
on it is dropped; every answer is awaited at most `node_timeout_s` after the body's end.
The connection is closed after the answer (large PUTs are few: a connection per replica
costs little next to the body).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import cast

from multidict import CIMultiDict

from common.http11 import encode_head
from common.leanhttp import HEADER_BYTES_MAX, ConnectionClosed, LeanHTTPError, ResponseParser
from common.log import get_logger
from common.nodes import node_key
from common.puttrailer import TRAILER_HEADER
from proxy.backend import PUT_RESPONSE_BYTES_MAX, Backend, Resp, quorum_size
from proxy.etagtrailer import BodyHasher, TrailerPlan
from proxy.putbody import ClientBodyError, piece_lists
from ring import Device

__all__ = ["LEAN_PUT_BYTES_MIN", "PutStream", "lean_put"]

log = get_logger("cairn.proxy.leanput")

# Declared bodies of at least this many bytes go this way (smaller streamed ones stay on
# aiohttp's pooled connections, where a new connection per replica would cost more).
LEAN_PUT_BYTES_MIN = 4 * 1024 * 1024
# The client's body is forwarded in pieces of at least this many bytes.
PIECE_BYTES = 1024 * 1024
# Per replica connection: unsent bytes above which the sender waits, and below which it
# goes on (asyncio's write buffer limits).
WRITE_HIGH_BYTES = 4 * 1024 * 1024
WRITE_LOW_BYTES = 1024 * 1024


class PutStream(asyncio.Protocol):
    """One streamed PUT on one connection: tells when the server said 100 Continue
    (`continued`: True) or answered first (False), gives the final answer (`answer`), and
    lets the sender wait while the connection's unsent bytes are above the high mark."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.continued: asyncio.Future[bool] = loop.create_future()
        self.answer: asyncio.Future[Resp | LeanHTTPError] = loop.create_future()
        self._parser = ResponseParser(body_bytes_max=PUT_RESPONSE_BYTES_MAX)
        self._first: bytes | None = b""  # bytes until the first status line; None after it
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_BYTES, low=WRITE_LOW_BYTES)

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        if self._first is not None:
            first = self._first + data
            line_end = first.find(b"\r\n")
            if line_end < 0:
                if len(first) > HEADER_BYTES_MAX:
                    self._end(ConnectionClosed("no status line", before_response=False))
                else:
                    self._first = first
                return
            self._first = None
            status = first[:line_end].split(b" ", 2)
            interim = len(status) > 1 and len(status[1]) == 3 and status[1][:1] == b"1"
            if not self.continued.done():
                self.continued.set_result(interim)
            data = first
        try:
            resp = self._parser.feed(data)
        except LeanHTTPError as e:
            self._end(e)
            return
        if resp is not None:
            self._end(Resp(resp.status, resp.headers, resp.body))

    def eof_received(self) -> bool | None:
        self._lost()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    # -- use ---------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """The server answered, or the connection is gone: nothing more is sent."""
        return self.answer.done()

    async def drain(self) -> None:
        """Return once the unsent bytes are below the low mark (or the stream finished)."""
        if not self._paused or self.answer.done():
            return
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)

    def write(self, parts: list[bytes]) -> None:
        if self.transport is not None and not self.answer.done():
            self.transport.writelines(parts)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._end(ConnectionClosed("aborted by the proxy", before_response=False))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _lost(self) -> None:
        if self.answer.done():
            return
        try:
            resp = self._parser.feed_eof()
        except LeanHTTPError as e:
            self._end(e)
            return
        self._end(Resp(resp.status, resp.headers, resp.body))

    def _end(self, outcome: Resp | LeanHTTPError) -> None:
        if not self.continued.done():
            self.continued.set_result(False)
        if not self.answer.done():
            self.answer.set_result(outcome)
        self._wake()

    def _wake(self) -> None:
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass
class _Replica:
    index: int
    node: Device | None = None
    stream: PutStream | None = None  # the connection taking the body
    result: Resp | None = None  # final, once known
    trailed: bool = False

    @property
    def live(self) -> bool:
        return self.result is None and self.stream is not None and not self.stream.finished


def _head(node: Device, path: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"PUT {path} HTTP/1.1", f"Host: {node.ip}:{node.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "expect")]
    lines.append("Expect: 100-continue")
    return encode_head(lines)


def _resp_of(backend: Backend, node: Device, outcome: Resp | LeanHTTPError) -> Resp:
    """The replica's answer with its node, the node's health noted as `Backend.call` does."""
    key = node_key(node)
    if isinstance(outcome, LeanHTTPError):
        backend.errors.error(key)
        return Resp(503, CIMultiDict(), b"", node)
    backend.learn(node, outcome.headers)
    if outcome.status == 507:
        backend.errors.limit_now(key)
    elif outcome.status >= 500:
        backend.errors.error(key)
    return Resp(outcome.status, outcome.headers, outcome.body, node)


async def _open(
    backend: Backend, rep: _Replica, node: Device, path: str, headers: Mapping[str, str]
) -> Resp | None:
    """Send the head to `node`; None once it said 100 Continue (`rep.stream` is set), else
    its answer."""
    rep.trailed = TRAILER_HEADER in headers
    try:
        head = _head(node, path, headers)
    except ValueError:
        log.error("object PUT headers with a control character", extra={"fields": {}})
        return Resp(400, CIMultiDict(), b"Bad header value\n", node)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(backend.conn_timeout_s):
            _t, stream = await loop.create_connection(PutStream, node.ip, node.port)
    except (TimeoutError, OSError):
        backend.errors.error(node_key(node))
        return Resp(503, CIMultiDict(), b"", node)
    try:
        assert stream.transport is not None
        stream.transport.write(head)
        if await asyncio.shield(stream.continued):
            rep.stream = stream
            return None
        outcome = await asyncio.shield(stream.answer)
    except BaseException:
        stream.abort()
        raise
    stream.close()
    return _resp_of(backend, node, outcome)


async def _start(
    backend: Backend,
    rep: _Replica,
    next_node: Callable[[], Device | None],
    path_for: Callable[[Device], str],
    headers_for: Callable[[int, Device], Mapping[str, str]],
) -> None:
    """Find this replica a node that takes the body; else settle its result."""
    last = Resp(503, CIMultiDict())
    while (node := next_node()) is not None:
        rep.node = node
        got = await _open(backend, rep, node, path_for(node), headers_for(rep.index, node))
        if got is None:
            return
        last = got
        if got.status < 500:  # a refusal another node would give too (412, 409, 400...)
            break
    rep.result = last


async def lean_put(
    backend: Backend,
    nodes: Callable[[], Device | None],
    n: int,
    path_for: Callable[[Device], str],
    headers_for: Callable[[int, Device], Mapping[str, str]],
    body: AsyncIterator[bytes],
    plan: TrailerPlan,
    *,
    ready_timeout_s: float,
) -> tuple[list[Resp], str]:
    """Stream `body` to `n` replicas (nodes taken from `nodes` in turn); each replica's
    final answer, and the body's MD5 hex ("" when the upload was given up)."""
    reps = [_Replica(i) for i in range(n)]
    starts = [asyncio.create_task(_start(backend, r, nodes, path_for, headers_for)) for r in reps]
    for t in starts:
        t.add_done_callback(_log_failure)
    md5_hex = ""
    try:
        _done, pending = await asyncio.wait(starts, timeout=ready_timeout_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for r in reps:
            if r.stream is None and r.result is None:
                r.result = Resp(503, CIMultiDict(), b"", r.node)
        if sum(1 for r in reps if r.live) >= quorum_size(n):
            md5_hex = await _pump(backend, body, reps, plan)
            await _answers(backend, reps)
    except BaseException:
        for t in starts:
            t.cancel()
        _abort(reps)
        raise
    _abort(reps)  # only ones given up (quorum never reached): their bodies never end
    return [r.result or Resp(499, CIMultiDict(), b"", r.node) for r in reps], md5_hex


def _log_failure(task: asyncio.Task[None]) -> None:
    """A replica's start that raised (a bug, not a node's answer: those are results): logged
    and retrieved; its replica counts as a 503."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("replica PUT start failed", extra={"fields": {"error": repr(exc)}})


def _abort(reps: list[_Replica]) -> None:
    for r in reps:
        if r.stream is not None and r.result is None:
            r.stream.abort()
            r.result = Resp(499, CIMultiDict(), b"", r.node)


async def _pump(
    backend: Backend, body: AsyncIterator[bytes], reps: list[_Replica], plan: TrailerPlan
) -> str:
    """Send the body and the trailer to every live replica; the body's MD5 hex."""
    quorum = quorum_size(len(reps))
    hasher = BodyHasher()
    async for parts in piece_lists(body, PIECE_BYTES):
        await hasher.feed_parts(parts)
        if hasher.total > plan.body_len:
            raise ClientBodyError(400, "request body longer than its Content-Length")
        for r in reps:
            if r.stream is not None and r.live:
                r.stream.write(parts)
        await _drain(backend, reps)
        if sum(1 for r in reps if r.live) < quorum:
            raise ClientBodyError(503, "too few storage nodes kept up with the upload")
    if hasher.total != plan.body_len:
        raise ClientBodyError(499, "Client disconnected before sending the whole body")
    md5_hex, xxh_hex = await hasher.finish()
    trailer = [plan.trailer(md5_hex, xxh_hex)]
    for r in reps:
        if r.stream is not None and r.live and r.trailed:
            r.stream.write(trailer)
    return md5_hex


async def _drain(backend: Backend, reps: list[_Replica]) -> None:
    """Wait until every live replica's unsent bytes are below the low mark; one that takes
    no byte for `node_timeout_s` is dropped."""
    deadline = asyncio.get_running_loop().time() + backend.node_timeout_s
    for r in reps:
        stream = r.stream
        if stream is None or not r.live:
            continue
        try:
            async with asyncio.timeout_at(deadline):
                await stream.drain()
        except TimeoutError:
            stream.abort()
            r.result = Resp(503, CIMultiDict(), b"", r.node)
            if r.node is not None:
                backend.errors.error(node_key(r.node))


async def _answers(backend: Backend, reps: list[_Replica]) -> None:
    """Every replica's final answer, each awaited at most `node_timeout_s`."""

    async def one(r: _Replica) -> None:
        stream = r.stream
        if stream is None or r.result is not None or r.node is None:
            return
        try:
            async with asyncio.timeout(backend.node_timeout_s):
                outcome = await asyncio.shield(stream.answer)
        except TimeoutError:
            outcome = ConnectionClosed("no answer in time", before_response=False)
            stream.abort()  # close() would wait to flush to a peer that may never read
        else:
            stream.close()
        r.result = _resp_of(backend, r.node, outcome)

    await asyncio.gather(*(one(r) for r in reps))
