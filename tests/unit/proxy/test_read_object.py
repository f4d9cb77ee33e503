"""proxy.backend.read_object: object GETs read whole on the lean read pool when the object
server's answer is small, streamed by aiohttp (open_stream) when it withholds a longer body,
with open_stream's node order, tombstone rule and error limiting. The storage nodes are
small aiohttp apps on 127.0.0.1 answering as object servers do (objectd/reads.py: 404 with
the tombstone's X-Backend-Timestamp, a copy with its own, 204 withheld past
X-Backend-Body-Bytes-Max) and recording what they were asked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from common.clock import ManualClock
from common.nodes import ErrorLimiter, node_key
from common.server import running_app
from common.wholebody import BODY_MAX_HEADER, WITHHELD_HEADER
from proxy.backend import WHOLE_GET_BYTES_MAX, Backend, read_object
from ring import Device

DELETE_TS = "1700000005.00000"
OLDER_TS = "1700000000.00000"
NEWER_TS = "1700000009.00000"
BIG = b"B" * (WHOLE_GET_BYTES_MAX + 1)
HUGE = b"H" * (2 * WHOLE_GET_BYTES_MAX)  # over the read pool's answer limit too
TIMEOUT_S = 30.0


def node_app(state: str, seen: list[tuple[str, str | None, str | None]]) -> web.Application:
    """ "deleted", "missing", "older"/"newer" (a small copy), "big" (a newer copy over the
    whole-read size), "broken" (503)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        limit = request.headers.get(BODY_MAX_HEADER)
        seen.append((request.method, limit, request.headers.get("Range")))
        if state == "deleted":
            return web.Response(status=404, headers={"X-Backend-Timestamp": DELETE_TS})
        if state == "missing":
            return web.Response(status=404)
        if state == "broken":
            return web.Response(status=503)
        body = {"big": BIG, "old": HUGE}.get(state, state.encode())
        ts = OLDER_TS if state == "older" else NEWER_TS
        if limit is not None and len(body) > int(limit) and state != "old":
            withheld = {WITHHELD_HEADER: str(len(body)), "X-Backend-Timestamp": ts}
            return web.Response(status=204, headers=withheld)
        return web.Response(body=body, headers={"X-Backend-Timestamp": ts})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class Placement:
    """The first three devices are the primaries, the rest handoffs."""

    def __init__(self, devices: list[Device]) -> None:
        self.devices = devices

    def get_part_nodes(self, part: int) -> list[Device]:
        return self.devices[:3]

    def get_more_nodes(self, part: int) -> list[Device]:
        return self.devices[3:]


Seen = list[list[tuple[str, str | None, str | None]]]


@contextlib.asynccontextmanager
async def nodes(*states: str) -> AsyncIterator[tuple[Any, Backend, Seen]]:
    async with contextlib.AsyncExitStack() as stack:
        devices, seen = [], []
        for i, state in enumerate(states):
            asked: list[tuple[str, str | None, str | None]] = []
            url = await stack.enter_async_context(running_app(node_app(state, asked)))
            port = int(url.rsplit(":", 1)[1])
            devices.append(Device(i, 1, 1, "127.0.0.1", port, "127.0.0.1", port, f"d{i}", 1.0))
            seen.append(asked)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        clock = ManualClock()
        backend = Backend(
            SimpleNamespace(),  # type: ignore[arg-type]  # the ring is passed per call
            session,
            clock,
            conn_timeout_s=2.0,
            node_timeout_s=5.0,
            error_limiter=ErrorLimiter(clock, limit=10, interval_s=60),
            shuffle_reads=False,
        )
        try:
            yield Placement(devices), backend, seen
        finally:
            await backend.close()


def path_for(node: Device) -> str:
    return "/d/0/a/c/o"


def run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


def test_a_small_body_is_read_whole_on_the_read_pool() -> None:
    async def go() -> None:
        async with nodes("missing", "newer", "older") as (ring, backend, seen):
            resp, summary = await read_object(backend, ring, 0, path_for, {"X-Trans-Id": "t"})
            assert resp is None and (summary.status, summary.body) == (200, b"newer")
            assert summary.node is ring.devices[1]
            assert seen[0] == seen[1] == [("GET", str(WHOLE_GET_BYTES_MAX), None)]
            assert seen[2] == []
            assert backend.read_pool.connections_made == 2
            assert backend.pool.connections_made == 0

    run(go())


def test_a_withheld_body_is_streamed_from_the_same_node() -> None:
    async def go() -> None:
        async with nodes("missing", "big", "newer") as (ring, backend, seen):
            resp, summary = await read_object(backend, ring, 0, path_for, {"Range": "bytes=0-"})
            assert resp is not None and summary.node is ring.devices[1]
            try:
                assert await resp.read() == BIG
            finally:
                resp.release()
            limit = str(WHOLE_GET_BYTES_MAX)
            assert seen[1] == [("GET", limit, "bytes=0-"), ("GET", None, "bytes=0-")]
            assert seen[2] == []

    run(go())


def test_tombstones_win_on_both_paths() -> None:
    async def go() -> None:
        # A handoff's copy older than the primaries' deletion is not served, whole or not.
        async with nodes("deleted", "missing", "deleted", "older") as (ring, backend, seen):
            resp, summary = await read_object(backend, ring, 0, path_for, {})
            assert resp is None and summary.status == 404
            assert summary.headers["X-Backend-Timestamp"] == DELETE_TS
            assert len(seen[3]) == 1
        # A big copy newer than the deletion is streamed: the tombstone carried over.
        async with nodes("deleted", "missing", "missing", "big") as (ring, backend, seen):
            resp, summary = await read_object(backend, ring, 0, path_for, {})
            assert resp is not None and resp.status == 200
            resp.release()

    run(go())


def test_a_failing_node_counts_and_the_next_is_asked() -> None:
    async def go() -> None:
        async with nodes("broken", "newer", "newer") as (ring, backend, _seen):
            resp, summary = await read_object(backend, ring, 0, path_for, {})
            assert resp is None and summary.body == b"newer"
            counts = {k: e.count for k, e in backend.errors._errors.items()}
            assert counts == {node_key(ring.devices[0]): 1}

    run(go())


def test_multi_range_gets_are_streamed() -> None:
    async def go() -> None:
        async with nodes("newer", "newer", "newer") as (ring, backend, seen):
            h = {"Range": "bytes=0-0,2-3"}
            resp, _summary = await read_object(backend, ring, 0, path_for, h)
            assert resp is not None
            resp.release()
            assert seen[0] == [("GET", None, "bytes=0-0,2-3")]
            assert backend.read_pool.connections_made == 0

    run(go())


def test_object_heads_use_the_read_pool() -> None:
    async def go() -> None:
        async with nodes("newer", "newer", "newer") as (ring, backend, seen):
            r = await backend.read_first(ring, 0, "HEAD", path_for, {}, tombstones_win=True)
            assert r.status == 200 and seen[0] == [("HEAD", None, None)]
            assert backend.read_pool.connections_made == 1
            assert backend.pool.connections_made == 0

    run(go())


def test_a_server_that_ignores_the_limit_is_streamed_without_blame() -> None:
    async def go() -> None:
        async with nodes("old", "newer", "newer") as (ring, backend, seen):
            resp, summary = await read_object(backend, ring, 0, path_for, {})
            assert resp is not None and summary.node is ring.devices[0]
            try:
                assert await resp.read() == HUGE
            finally:
                resp.release()
            assert [limit for _m, limit, _r in seen[0]] == [str(WHOLE_GET_BYTES_MAX), None]
            assert backend.errors._errors == {}

    run(go())
