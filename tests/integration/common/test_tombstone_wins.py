"""A copy older than a deletion another node reported is stale: the proxy's object reads
(`open_stream` for GET, `read_first(tombstones_win=True)` for HEAD) answer the deletion's 404
instead of a handoff's leftover copy (a handoff that took a PUT while a primary was slow and
never saw the DELETE, which went to the primaries). Storage nodes here are small aiohttp
apps on 127.0.0.1 that answer as object servers do for a deleted object (404 with the
tombstone's X-Backend-Timestamp) or for a live copy (200 with its own)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.clock import ManualClock
from common.nodes import ErrorLimiter
from common.server import running_app
from proxy.backend import Backend, open_stream
from ring import Device

pytestmark = [pytest.mark.integration]

PUT_TS = "1700000000.00000"
DELETE_TS = "1700000005.00000"
NEWER_TS = "1700000009.00000"


def node_app(state: str) -> web.Application:
    """An object server's answers for one object: "deleted" (404 naming the tombstone),
    "missing" (plain 404), "older" (a copy from before the DELETE), "newer" (a copy PUT after
    it)."""

    async def handle(request: web.Request) -> web.Response:
        if state == "deleted":
            return web.Response(status=404, headers={"X-Backend-Timestamp": DELETE_TS})
        if state == "missing":
            return web.Response(status=404)
        ts = PUT_TS if state == "older" else NEWER_TS
        return web.Response(body=state.encode(), headers={"X-Backend-Timestamp": ts})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class ThreePrimariesOneHandoff:
    """Ring placement for one partition: the first three devices, then the fourth."""

    def __init__(self, devices: list[Device]) -> None:
        self.devices = devices

    def get_part_nodes(self, part: int) -> list[Device]:
        return self.devices[:3]

    def get_more_nodes(self, part: int) -> list[Device]:
        return self.devices[3:]


@contextlib.asynccontextmanager
async def four_nodes(states: tuple[str, str, str, str]) -> AsyncIterator[tuple[Any, Backend]]:
    """Three primaries and a handoff answering as `states` say, and a Backend to ask them."""
    async with contextlib.AsyncExitStack() as stack:
        devices = []
        for i, state in enumerate(states):
            url = await stack.enter_async_context(running_app(node_app(state)))
            port = int(url.rsplit(":", 1)[1])
            devices.append(Device(i, 1, 1, "127.0.0.1", port, "127.0.0.1", port, f"d{i}", 1.0))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        clock = ManualClock()
        backend = Backend(
            SimpleNamespace(),  # type: ignore[arg-type]  # the ring is passed per call
            session,
            clock,
            conn_timeout_s=2.0,
            node_timeout_s=2.0,
            error_limiter=ErrorLimiter(clock, limit=10, interval_s=60),
            shuffle_reads=False,
        )
        try:
            yield ThreePrimariesOneHandoff(devices), backend
        finally:
            await backend.close()


def path_for(node: Device) -> str:
    return "/d/0/a/c/o"


@pytest.mark.parametrize("primaries", [("deleted",) * 3, ("deleted", "missing", "deleted")])
def test_a_handoffs_copy_older_than_the_tombstone_is_not_served(
    primaries: tuple[str, str, str],
) -> None:
    async def run() -> None:
        async with four_nodes((*primaries, "older")) as (ring, backend):
            resp, summary = await open_stream(backend, ring, 0, "GET", path_for, {})
            assert resp is None
            assert summary.status == 404
            head = await backend.read_first(ring, 0, "HEAD", path_for, {}, tombstones_win=True)
            assert head.status == 404
            # Without the rule (account and container reads), the copy is served.
            plain = await backend.read_first(ring, 0, "HEAD", path_for, {})
            assert plain.status == 200 and plain.node is ring.devices[3]

    asyncio.run(run())


def test_a_copy_newer_than_the_tombstone_is_served() -> None:
    """A PUT after the DELETE: the handoff's copy is the newest, so it is the answer."""

    async def run() -> None:
        async with four_nodes(("deleted", "deleted", "deleted", "newer")) as (ring, backend):
            resp, summary = await open_stream(backend, ring, 0, "GET", path_for, {})
            assert resp is not None and summary.status == 200
            assert await resp.read() == b"newer"
            resp.release()

    asyncio.run(run())
