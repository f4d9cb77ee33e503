"""ObjectCluster (blockd's client) over the lean HTTP client keeps its contract with real
object servers on 127.0.0.1: handoffs past a failing primary, 503 for a refused connection
or a node that never answers (counted by the error limiter), 507 limits a node at once, the
answer body limit, X-Trans-Id on every request, and the pool's keep-alive reuse.

The failing nodes are fakes named for their fault: `SilentNode` (accepts, never answers),
`FullNode` (answers 507 to everything), `EchoNode` (answers a HEAD with the X-Trans-Id it got).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from common.clock import ManualClock
from common.leanhttp import LeanPool
from common.log import request_id
from common.nodes import ErrorLimiter, node_key
from common.server import running_app
from objectd.client import object_url
from objectd.cluster_client import ObjectCluster, QuorumError
from ring import Device, NewDevice, Ring, RingBuilder, write_ring
from tests.integration.objectd.test_trailer_capability import PREFIX, SUFFIX, _new_server

pytestmark = [pytest.mark.integration]

ACCOUNT, CONTAINER = ".cairn_block_test", "vol"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _ring(tmp_path: Path, ports: list[int], clock: ManualClock) -> Ring:
    builder = RingBuilder(2, 3, 0)
    for i, port in enumerate(ports):
        builder.add(NewDevice(1, i + 1, "127.0.0.1", port, "127.0.0.1", port, "sda", 1.0))
    builder.rebalance(seed=1)
    write_ring(tmp_path / "object.ring", builder.ring_data())
    return Ring(tmp_path / "object.ring", PREFIX, SUFFIX, clock=clock)


async def object_servers(
    stack: contextlib.AsyncExitStack, tmp_path: Path, clock: ManualClock, n: int = 3
) -> list[str]:
    """`n` real object servers (fast lane and all) on 127.0.0.1, stopped with `stack`; their
    base URLs."""
    return [
        await stack.enter_async_context(running_app(await _new_server(tmp_path / f"n{i}", clock)))
        for i in range(n)
    ]


def _name_with_primary(ring: Ring, port: int) -> tuple[str, list[Device]]:
    """An object name whose primaries include the device on `port` (not first in line, so a
    read's body request goes to a good node), and those primaries."""
    for i in range(1000):
        name = f"obj-{i}"
        nodes = ring.get_part_nodes(ring.get_part(ACCOUNT, CONTAINER, name))
        if any(n.port == port for n in nodes[1:]):
            return name, list(nodes)
    raise AssertionError("no partition has that device as a primary")


@contextlib.asynccontextmanager
async def silent_node() -> AsyncIterator[int]:
    """SilentNode: takes connections and requests, never answers; its port."""
    held: list[asyncio.StreamWriter] = []

    async def take(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(take, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in held:
            w.close()
        await server.wait_closed()


def _fake_app(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def _full(request: web.Request) -> web.Response:
    """FullNode: every device is out of space."""
    await request.read()
    return web.Response(status=507)


async def _echo(request: web.Request) -> web.Response:
    """EchoNode: the object exists, and its headers say which X-Trans-Id came."""
    headers = {"X-Timestamp": "1700000000.00000", "X-Echo-Trans-Id": request.headers["X-Trans-Id"]}
    return web.Response(status=200, headers=headers)


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_round_trip_reuses_connections_and_closes_them(tmp_path: Path) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        async with contextlib.AsyncExitStack() as stack:
            urls = await object_servers(stack, tmp_path, clock)
            cluster = ObjectCluster(_ring(tmp_path, [_port(u) for u in urls], clock), clock)
            body = os.urandom(200_000)  # trailed once the servers are known
            for i in range(4):
                clock.advance(1.0)
                await cluster.put(ACCOUNT, CONTAINER, "o", body + bytes([i]))
                got = await cluster.get(ACCOUNT, CONTAINER, "o", byte_range=(200_000, 200_009))
                assert got is not None and got[1] == bytes([i])
            assert all(cluster.trailer_servers.takes(d) for d in cluster.ring.devs if d)
            assert await cluster.post(ACCOUNT, CONTAINER, "o", {"X-Object-Meta-Color": "blue"})
            head = await cluster.head(ACCOUNT, CONTAINER, "o")
            assert head is not None and head["X-Object-Meta-Color"] == "blue"
            await cluster.delete(ACCOUNT, CONTAINER, "o")
            assert await cluster.get(ACCOUNT, CONTAINER, "o") is None
            assert not await cluster.post(ACCOUNT, CONTAINER, "o", {"X-Object-Meta-A": "b"})
            # keep-alive: a connection or a few per server, not one per request
            assert cluster.pool.connections_made <= 9
            assert cluster.pool.idle_connections("127.0.0.1", _port(urls[0])) >= 1
            await cluster.close()
            assert cluster.pool.idle_connections("127.0.0.1", _port(urls[0])) == 0

    asyncio.run(run())


@pytest.mark.parametrize("fault", ["refused", "silent", "full"])
def test_a_failing_primary_is_replaced_by_a_handoff_and_limited(tmp_path: Path, fault: str) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        async with contextlib.AsyncExitStack() as stack:
            urls = await object_servers(stack, tmp_path, clock)
            if fault == "refused":
                bad = _refused_port()
            elif fault == "silent":
                bad = await stack.enter_async_context(silent_node())
            else:
                bad = _port(await stack.enter_async_context(running_app(_fake_app(_full))))
            ring = _ring(tmp_path, [*(_port(u) for u in urls), bad], clock)
            # one error limits a node (the default needs eleven), so the test sees the count
            limiter = ErrorLimiter(clock, limit=0)
            cluster = ObjectCluster(ring, clock, node_timeout_s=0.5, limiter=limiter)
            cluster.shuffle_reads = False
            name, primaries = _name_with_primary(ring, bad)
            bad_node = next(n for n in primaries if n.port == bad)
            part = ring.get_part(ACCOUNT, CONTAINER, name)
            await cluster.put(ACCOUNT, CONTAINER, name, b"x" * 5000)
            assert limiter.is_limited(node_key(bad_node))
            # the handoff took the bad primary's replica: each good server holds one
            for node in ring.devs:
                if node is not None and node.port != bad:
                    path = object_url("", node.device, part, ACCOUNT, CONTAINER, name)
                    r = await cluster.pool.request(
                        "127.0.0.1", node.port, "HEAD", path, timeout_s=5.0
                    )
                    assert r.status == 200, node
            got = await cluster.get(ACCOUNT, CONTAINER, name)
            assert got is not None and got[1] == b"x" * 5000
            await cluster.close()

    asyncio.run(run())


def test_an_answer_body_past_the_limit_is_refused(tmp_path: Path) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        pool = LeanPool(connect_timeout_s=5.0, body_bytes_max=1000)
        async with contextlib.AsyncExitStack() as stack:
            urls = await object_servers(stack, tmp_path, clock)
            cluster = ObjectCluster(
                _ring(tmp_path, [_port(u) for u in urls], clock), clock, pool=pool
            )
            await cluster.put(ACCOUNT, CONTAINER, "small", b"s" * 1000)
            await cluster.put(ACCOUNT, CONTAINER, "big", b"b" * 1001)
            got = await cluster.get(ACCOUNT, CONTAINER, "small")
            assert got is not None and got[1] == b"s" * 1000
            assert await cluster.head(ACCOUNT, CONTAINER, "big") is not None  # no body
            with pytest.raises(QuorumError):
                await cluster.get(ACCOUNT, CONTAINER, "big")
            await pool.close()

    asyncio.run(run())


def test_every_request_carries_the_callers_trans_id(tmp_path: Path) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        async with contextlib.AsyncExitStack() as stack:
            ports = [
                _port(await stack.enter_async_context(running_app(_fake_app(_echo))))
                for _ in range(3)
            ]
            cluster = ObjectCluster(_ring(tmp_path, ports, clock), clock)
            token = request_id.set("tx-h6c-42")
            try:
                head = await cluster.head(ACCOUNT, CONTAINER, "o")
            finally:
                request_id.reset(token)
            assert head is not None and head["X-Echo-Trans-Id"] == "tx-h6c-42"
            await cluster.close()

    asyncio.run(run())
