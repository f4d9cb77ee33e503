"""Streaming object PUT to all replicas at once.

Each replica gets its own bounded queue and its own backend request (with
``Expect: 100-continue``, so a full or missing device answers before any body is sent and a
handoff takes its place). The client's body is read once and offered to every live queue;
a replica that fails mid-stream is dropped. The PUT succeeds only when a quorum of replicas
answered 201 after writing durably.

If the client's body ends early (disconnect, short body) every backend request is aborted,
so no replica commits a truncated object.

A body with a declared Content-Length above SMALL_PUT_BYTES_MAX is hashed once here (MD5 and
xxh3-128, proxy/etagtrailer.py) and followed, on each backend request, by an ETag trailer
(common/puttrailer.py): the object servers check the xxh3-128 of what they received against
it and store the proxy's MD5 instead of computing their own. A client ETag that is not the
body's MD5 makes the trailer say cancel, so no replica commits (the client gets their 422).

Such a body of at least LEAN_PUT_BYTES_MIN bytes goes to the replicas on plain connections
instead of aiohttp's streamed requests (proxy/leanput.py: same handoffs, quorum, trailer and
checks, less CPU per byte); the queue-per-replica path below serves the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict

from common.log import get_logger
from common.nodes import node_key
from common.puttrailer import TRAILER_HEADER, trailed_headers
from proxy.backend import Backend, Resp, quorum_size, stale_connection
from proxy.etagtrailer import BodyHasher, TrailerPlan, trailer_plan
from proxy.leanput import LEAN_PUT_BYTES_MIN, lean_put
from proxy.putbody import ClientBodyError
from ring import Device, Ring

__all__ = [
    "PIECE_BYTES",
    "SMALL_PUT_BYTES_MAX",
    "ClientBodyError",
    "pieces",
    "put_buffered",
    "stream_put",
]

log = get_logger("cairn.proxy.objput")

# The client's body goes to the replicas in pieces of about this size: per-piece costs (a
# queue hand-off and a socket write per replica) are paid 16 times less often than with the
# 64 KiB pieces the body arrives in, for one copy of the bytes when small pieces are joined.
PIECE_BYTES = 1024 * 1024
# Pieces waiting per replica (bounded memory: at most this many pieces per replica per PUT).
_QUEUE_CHUNKS = 3
# A body of at most this many bytes (declared Content-Length) is read whole and sent with the
# headers in one request per replica, without Expect: 100-continue: the 100 round trip cost
# more than the body. A node that refuses (507, 5xx, connection trouble) is replaced by the
# next handoff exactly as before, since the proxy still holds the whole body.
SMALL_PUT_BYTES_MAX = 64 * 1024
_STALE = -1  # internal status: a pooled connection the node had closed; retry once
_EOF = b""


class _Abort(Exception):
    """Raised inside a backend body generator to abort that backend request."""


@dataclass
class _Slot:
    """One replica's upload. `ready` is set once it either accepted the body (100 Continue)
    or finished; `failed` says it finished without success."""

    index: int
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(_QUEUE_CHUNKS))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Resp] | None = None
    node: Device | None = None
    started: bool = False
    failed: bool = False
    trailed: bool = False  # this replica's request announced the ETag trailer

    @property
    def live(self) -> bool:
        return not self.failed and self.task is not None and not self.task.done()


async def _body_gen(slot: _Slot) -> AsyncIterator[bytes]:
    slot.started = True
    slot.ready.set()  # the backend said 100 Continue
    while True:
        chunk = await slot.queue.get()
        if chunk is None:
            raise _Abort()
        if chunk is _EOF:
            return
        yield chunk


async def _one_backend(
    backend: Backend,
    slot: _Slot,
    next_node: Callable[[], Device | None],
    path_for: Callable[[Device], str],
    headers_for: Callable[[int, Device], Mapping[str, str]],
) -> Resp:
    """Run one replica's request, trying handoffs while the body hasn't started."""
    last = Resp(503, CIMultiDict())
    try:
        while True:
            node = next_node()
            if node is None:
                break
            slot.node = node
            last = await _put_one(backend, slot, node, path_for, headers_for)
            if last.status == _STALE and not slot.started:
                last = await _put_one(backend, slot, node, path_for, headers_for)
            if last.status == _STALE:
                last = Resp(503, CIMultiDict(), b"", node)
            # A node that failed before taking any body is replaced by the next handoff.
            if slot.started or last.status < 500:
                break
    finally:
        slot.failed = last.status >= 300
        slot.ready.set()
    return last


async def _put_one(
    backend: Backend,
    slot: _Slot,
    node: Device,
    path_for: Callable[[Device], str],
    headers_for: Callable[[int, Device], Mapping[str, str]],
) -> Resp:
    key = node_key(node)
    try:
        headers = headers_for(slot.index, node)
        slot.trailed = TRAILER_HEADER in headers
        async with backend.session.put(
            backend.url(node, path_for(node)),
            headers=headers,
            data=_body_gen(slot),
            expect100=True,
            timeout=backend._timeout(),
        ) as r:
            body = await r.read()
            backend.learn(node, r.headers)
            resp = Resp(r.status, r.headers, body, node)
    except _Abort:
        return Resp(499, CIMultiDict(), b"", node)
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        if isinstance(e, aiohttp.ClientError) and stale_connection(e) and not slot.started:
            return Resp(_STALE, CIMultiDict(), b"", node)
        backend.errors.error(key)
        return Resp(503, CIMultiDict(), b"", node)
    except Exception:
        log.exception("object PUT to a storage node failed unexpectedly")
        return Resp(503, CIMultiDict(), b"", node)
    if resp.status == 507:
        backend.errors.limit_now(key)
    elif resp.status >= 500:
        backend.errors.error(key)
    return resp


async def stream_put(
    backend: Backend,
    ring: Ring,
    part: int,
    path_for: Callable[[Device], str],
    headers_for: Callable[[int, Device], Mapping[str, str]],
    body: AsyncIterator[bytes],
    *,
    connect_timeout_s: float,
) -> list[Resp]:
    """Stream `body` to every replica; returns each replica's final response."""
    primaries = ring.get_part_nodes(part)
    n = len(primaries)
    plan = trailer_plan(headers_for(0, primaries[0])) if primaries else None
    if plan is not None:
        await backend.probe_trailer_support(primaries)
        headers_for = _with_trailer(backend, headers_for, plan)
    nodes = backend.nodes(ring, part)
    slots = [_Slot(i) for i in range(n)]

    def next_node() -> Device | None:
        return next(nodes, None)

    if plan is not None and plan.body_len >= LEAN_PUT_BYTES_MIN:
        results, lean_md5 = await lean_put(
            backend,
            next_node,
            n,
            path_for,
            headers_for,
            body,
            plan,
            ready_timeout_s=connect_timeout_s + backend.node_timeout_s,
        )
        return _all_checked(backend, results, lean_md5)
    for s in slots:
        s.task = asyncio.create_task(_one_backend(backend, s, next_node, path_for, headers_for))
    md5_hex = ""
    try:
        await _wait_ready(slots, connect_timeout_s + backend.node_timeout_s)
        if sum(1 for s in slots if not s.failed) < quorum_size(n):
            await _abort_all(slots)
        else:
            md5_hex = await _pump(body, slots, backend.node_timeout_s, plan)
    except BaseException:
        await _abort_all(slots)
        raise
    results = await _results(slots)
    if plan is None:
        return results
    return _all_checked(backend, results, md5_hex)


def _all_checked(backend: Backend, results: list[Resp], md5_hex: str) -> list[Resp]:
    checked = [_checked(r, md5_hex) for r in results]
    for before, after in zip(results, checked, strict=True):
        if after is not before and after.node is not None:
            backend.forget_trailer(after.node)
    return checked


def _with_trailer(
    backend: Backend, headers_for: Callable[[int, Device], Mapping[str, str]], plan: TrailerPlan
) -> Callable[[int, Device], Mapping[str, str]]:
    """Trailer headers for the object servers known to take a trailer; the others (not heard
    from yet, or an older version) get the plain PUT and compute the MD5 themselves."""

    def trailed(i: int, node: Device) -> Mapping[str, str]:
        headers = headers_for(i, node)
        if not backend.takes_trailer(node):
            return headers
        return trailed_headers(headers, plan.body_len)

    return trailed


def _checked(resp: Resp, md5_hex: str) -> Resp:
    """A replica's 201 counts only with the ETag the proxy computed: an object server that
    ignored the trailer headers (an older version) stored the trailer as body bytes."""
    if resp.status != 201 or resp.headers.get("Etag", "").strip('"') == md5_hex:
        return resp
    log.error(
        "object server acknowledged a trailed PUT with a different ETag",
        extra={"fields": {"node": node_key(resp.node) if resp.node else "", "want": md5_hex}},
    )
    return Resp(503, CIMultiDict(), b"", resp.node)


async def put_buffered(
    backend: Backend,
    ring: Ring,
    part: int,
    path_for: Callable[[Device], str],
    headers_for: Callable[[int, Device], Mapping[str, str]],
    body: AsyncIterator[bytes],
    length: int,
) -> list[Resp]:
    """Read a small body of `length` bytes whole, then write it to every replica.

    Each replica gets one plain request (headers and body together); a primary that answers
    507/5xx or cannot be reached is replaced by the next handoff (`Backend.write_all`).
    """
    if length > SMALL_PUT_BYTES_MAX:
        raise ValueError(f"put_buffered is for bodies of at most {SMALL_PUT_BYTES_MAX} bytes")
    data = bytearray()
    async for chunk in body:
        data += chunk
        if len(data) > length:
            raise ClientBodyError(400, "request body longer than its Content-Length")
    if len(data) != length:
        raise ClientBodyError(499, "Client disconnected before sending the whole body")
    return await backend.write_all(ring, part, "PUT", path_for, headers_for, bytes(data))


async def _wait_ready(slots: list[_Slot], timeout_s: float) -> None:
    """Wait for every replica to accept the body or fail; a replica still silent after
    `timeout_s` (say its link was cut and the pooled connection never answers 100 Continue)
    is given up, so the others can go on if they are a quorum: never a 500 for a slow node."""
    waiters = [asyncio.ensure_future(s.ready.wait()) for s in slots]
    _done, pending = await asyncio.wait(waiters, timeout=timeout_s)
    for w in pending:
        w.cancel()
    for s in slots:
        if not s.ready.is_set():
            s.failed = True
            if s.task is not None:
                s.task.cancel()


async def _results(slots: list[_Slot]) -> list[Resp]:
    tasks = [s.task for s in slots if s.task is not None]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    return [r if isinstance(r, Resp) else Resp(503, CIMultiDict()) for r in done]


async def pieces(body: AsyncIterator[bytes], piece_bytes: int) -> AsyncIterator[bytes]:
    """`body` regrouped into pieces of at least `piece_bytes` (the last may be shorter).

    A chunk that is already big enough passes through as it is; smaller ones are joined.
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in body:
        if not chunk:
            continue
        parts.append(chunk)
        size += len(chunk)
        if size >= piece_bytes:
            yield parts[0] if len(parts) == 1 else b"".join(parts)
            parts, size = [], 0
    if parts:
        yield parts[0] if len(parts) == 1 else b"".join(parts)


async def _pump(
    body: AsyncIterator[bytes], slots: list[_Slot], timeout_s: float, plan: TrailerPlan | None
) -> str:
    """Send the body to every live replica; with a `plan`, hash it and send the trailer
    after it. Returns the body's MD5 hex with a plan, "" without."""
    quorum = quorum_size(len(slots))
    hasher = BodyHasher() if plan is not None else None
    async for chunk in pieces(body, PIECE_BYTES):
        if hasher is not None and plan is not None:
            await hasher.feed(chunk)
            if hasher.total > plan.body_len:
                raise ClientBodyError(400, "request body longer than its Content-Length")
        await _send_all(slots, chunk, timeout_s)
        if sum(1 for s in slots if not s.failed) < quorum:
            raise ClientBodyError(503, "too few storage nodes kept up with the upload")
    md5_hex = ""
    if plan is not None and hasher is not None:
        if hasher.total != plan.body_len:
            raise ClientBodyError(499, "Client disconnected before sending the whole body")
        md5_hex, xxh_hex = await hasher.finish()
        await _send_all([s for s in slots if s.trailed], plan.trailer(md5_hex, xxh_hex), timeout_s)
    for s in slots:
        if s.live:
            await s.queue.put(_EOF)
    return md5_hex


async def _send_all(slots: list[_Slot], piece: bytes, timeout_s: float) -> None:
    for s in slots:
        if not s.live:
            continue
        try:
            async with asyncio.timeout(timeout_s):
                await s.queue.put(piece)
        except TimeoutError:
            s.failed = True
            if s.task:
                s.task.cancel()


async def _abort_all(slots: list[_Slot]) -> None:
    for s in slots:
        if s.task is None or s.task.done():
            continue
        if s.started:
            while not s.queue.empty():
                s.queue.get_nowait()
            s.queue.put_nowait(None)
        else:
            s.task.cancel()
    await asyncio.gather(*(s.task for s in slots if s.task is not None), return_exceptions=True)
