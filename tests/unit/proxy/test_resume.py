"""A replica that fails mid-body: the proxy's GET resumes the body from another replica.

Three small object-server stand-ins on loopback sockets serve one object; each plays a role
(good, faulty: stops after a few blocks, stale: an older version). The faulty one is fault
injection, named so. The real proxy operations layer (Ops over Backend) reads through them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from common.clock import SystemClock
from common.nodes import ErrorLimiter
from common.server import running_app
from common.wholebody import BODY_MAX_HEADER, WITHHELD_HEADER
from proxy.backend import WHOLE_GET_BYTES_MAX, Backend, Rings
from proxy.ops import Ops
from proxy.resume import Span, resumable_span
from ring import NewDevice, Ring, RingBuilder, write_ring

PREFIX, SUFFIX = "pre", "suf"
# 1,280,000 B: over WHOLE_GET_BYTES_MAX, so the proxy streams it (a smaller body is read whole)
DATA = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(40_000))
assert len(DATA) > WHOLE_GET_BYTES_MAX
VERSION = "0000001700000000.00000"
FAULT_AFTER_BYTES = 100_000


@dataclass
class Replicas:
    """port -> role ("good", "faulty", "stale"); the requests each port saw."""

    roles: dict[int, str] = field(default_factory=dict)
    seen: dict[int, list[str]] = field(default_factory=dict)


def _app(port_of: list[int], reps: Replicas) -> web.Application:
    async def get(request: web.Request) -> web.StreamResponse:
        port = port_of[0]
        role = reps.roles[port]
        reps.seen.setdefault(port, []).append(request.headers.get("Range", ""))
        version = VERSION if role != "stale" else "0000001600000000.00000"
        first, last = 0, len(DATA) - 1
        status = 200
        m = re.match(r"^bytes=(\d+)-(\d+)$", request.headers.get("Range", ""))
        if m:
            first, last, status = int(m.group(1)), min(int(m.group(2)), len(DATA) - 1), 206
        body_max = request.headers.get(BODY_MAX_HEADER)
        if body_max is not None and last - first + 1 > int(body_max):  # as objectd withholds
            headers = {WITHHELD_HEADER: str(last - first + 1), "X-Backend-Timestamp": version}
            return web.Response(status=204, headers=headers)
        resp = web.StreamResponse(status=status)
        resp.headers["X-Backend-Timestamp"] = version
        resp.headers["Content-Length"] = str(last - first + 1)
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {first}-{last}/{len(DATA)}"
        await resp.prepare(request)
        body = DATA[first : last + 1]
        if role == "faulty":
            await resp.write(body[:FAULT_AFTER_BYTES])
            assert request.transport is not None
            # a bad block found or the server died: the connection ends short of the body
            request.transport.close()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", get)
    return app


@asynccontextmanager
async def proxy_ops(tmp_path: Path, reps: Replicas) -> AsyncIterator[tuple[Ops, list[int]]]:
    async with AsyncExitStack() as stack:
        ports = []
        for _ in range(3):
            port_of: list[int] = []
            url = await stack.enter_async_context(running_app(_app(port_of, reps)))
            port_of.append(int(url.rsplit(":", 1)[1]))
            ports.append(port_of[0])
        b = RingBuilder(2, 3, 0)
        for i, port in enumerate(ports):
            b.add(NewDevice(1, i + 1, "127.0.0.1", port, "127.0.0.1", port, "sda", 100.0))
        b.rebalance(seed=1)
        write_ring(tmp_path / "object.ring", b.ring_data())
        ring = Ring(tmp_path / "object.ring", PREFIX, SUFFIX)
        clock = SystemClock()
        session = await stack.enter_async_context(aiohttp.ClientSession())
        backend = Backend(
            Rings(ring, ring, ring),
            session,
            clock,
            conn_timeout_s=1.0,
            node_timeout_s=5.0,
            error_limiter=ErrorLimiter(clock),
            shuffle_reads=False,  # each test sets which replica is asked first
        )
        part, _ = ring.get_nodes("AUTH_a", "c", "o")
        yield Ops(backend, clock), [d.port for d in ring.get_part_nodes(part)]


async def _read(ops: Ops, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    res = await ops.get_object_raw("AUTH_a", "c", "o", headers)
    out = bytearray()
    assert res.stream is not None
    try:
        async for chunk in res.stream:
            out += chunk
    finally:
        await res.close()
    return res.status, bytes(out)


def test_body_resumes_on_the_next_replica(tmp_path: Path) -> None:
    asyncio.run(_test_body_resumes_on_the_next_replica(tmp_path))


async def _test_body_resumes_on_the_next_replica(tmp_path: Path) -> None:
    reps = Replicas()
    async with proxy_ops(tmp_path, reps) as (ops, order):
        reps.roles.update({order[0]: "faulty", order[1]: "good", order[2]: "good"})
        status, body = await _read(ops)
    assert status == 200
    assert body == DATA
    # the second replica was asked for exactly the bytes the first did not send
    assert reps.seen[order[1]] == [f"bytes={FAULT_AFTER_BYTES}-{len(DATA) - 1}"]


def test_an_older_version_is_never_spliced_in(tmp_path: Path) -> None:
    asyncio.run(_test_an_older_version_is_never_spliced_in(tmp_path))


async def _test_an_older_version_is_never_spliced_in(tmp_path: Path) -> None:
    reps = Replicas()
    async with proxy_ops(tmp_path, reps) as (ops, order):
        reps.roles.update({order[0]: "faulty", order[1]: "stale", order[2]: "good"})
        status, body = await _read(ops)
    assert status == 200
    assert body == DATA
    assert len(reps.seen[order[2]]) == 1  # the stale one was asked and passed over


def test_a_single_range_resumes_within_the_range(tmp_path: Path) -> None:
    asyncio.run(_test_a_single_range_resumes_within_the_range(tmp_path))


async def _test_a_single_range_resumes_within_the_range(tmp_path: Path) -> None:
    reps = Replicas()
    async with proxy_ops(tmp_path, reps) as (ops, order):
        reps.roles.update({order[0]: "faulty", order[1]: "good", order[2]: "good"})
        status, body = await _read(ops, {"Range": "bytes=1000-1200999"})
    assert status == 206
    assert body == DATA[1000:1201000]
    assert reps.seen[order[1]] == [f"bytes={1000 + FAULT_AFTER_BYTES}-1200999"]


def test_a_small_body_cut_short_is_read_whole_from_the_next_replica(tmp_path: Path) -> None:
    asyncio.run(_test_a_small_body_cut_short_is_read_whole_from_the_next_replica(tmp_path))


async def _test_a_small_body_cut_short_is_read_whole_from_the_next_replica(
    tmp_path: Path,
) -> None:
    reps = Replicas()
    async with proxy_ops(tmp_path, reps) as (ops, order):
        reps.roles.update({order[0]: "faulty", order[1]: "good", order[2]: "good"})
        status, body = await _read(ops, {"Range": "bytes=1000-200999"})
    assert status == 206
    assert body == DATA[1000:201000]
    # read whole (no stream to resume): the next replica is asked for the same range
    assert reps.seen[order[0]] == ["bytes=1000-200999"]
    assert reps.seen[order[1]] == ["bytes=1000-200999"]
    assert order[2] not in reps.seen


def test_no_replica_left_cuts_the_body_short_never_wrong(tmp_path: Path) -> None:
    asyncio.run(_test_no_replica_left_cuts_the_body_short_never_wrong(tmp_path))


async def _test_no_replica_left_cuts_the_body_short_never_wrong(tmp_path: Path) -> None:
    reps = Replicas()
    async with proxy_ops(tmp_path, reps) as (ops, order):
        reps.roles.update({order[0]: "faulty", order[1]: "stale", order[2]: "stale"})
        res = await ops.get_object_raw("AUTH_a", "c", "o")
        got = bytearray()
        assert res.stream is not None
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in res.stream:
                got += chunk
        await res.close()
    assert bytes(got) == DATA[:FAULT_AFTER_BYTES]


def test_resumable_spans() -> None:
    assert resumable_span(200, {"Content-Length": "10"}) == Span(0, 9)
    assert resumable_span(200, {"Content-Length": "0"}) is None
    assert resumable_span(200, {}) is None
    assert resumable_span(206, {"Content-Range": "bytes 5-9/100"}) == Span(5, 9)
    # a multipart/byteranges body has no Content-Range of its own
    assert resumable_span(206, {"Content-Type": "multipart/byteranges; boundary=x"}) is None
    assert resumable_span(304, {"Content-Length": "10"}) is None
