"""A copy older than a deletion another node reported is stale: the proxy's object reads
(`open_stream` for GET, `read_first(tombstones_win=True)` for HEAD) answer the deletion's 404
instead of a handoff's leftover copy (a handoff that took a PUT while a primary was slow and
never saw the DELETE, which went to the primaries). Storage nodes here are small aiohttp
apps on 127.0.0.1 that answer as object servers do for a deleted object (404 with the
tombstone's X-Backend-Timestamp) or for a live copy (200 with its own)."""

from __future__ import annotations

import asyncio
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


def node_app(state: str) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        if state == "deleted":
            return web.Response(status=404, headers={"X-Backend-Timestamp": DELETE_TS})
        if state == "missing":
            return web.Response(status=404)
        return web.Response(body=b"stale body", headers={"X-Backend-Timestamp": PUT_TS})

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


def device(url: str, i: int) -> Device:
    port = int(url.rsplit(":", 1)[1])
    return Device(i, 1, 1, "127.0.0.1", port, "127.0.0.1", port, f"d{i}", 1.0)


def _backend(session: aiohttp.ClientSession) -> Backend:
    clock = ManualClock()
    return Backend(
        SimpleNamespace(),  # type: ignore[arg-type]  # the ring is passed per call
        session,
        clock,
        conn_timeout_s=2.0,
        node_timeout_s=2.0,
        error_limiter=ErrorLimiter(clock, limit=10, interval_s=60),
        shuffle_reads=False,
    )


@pytest.mark.parametrize("primaries", [("deleted",) * 3, ("deleted", "missing", "deleted")])
def test_a_handoffs_copy_older_than_the_tombstone_is_not_served(
    primaries: tuple[str, ...],
) -> None:
    async def run() -> None:
        async with (
            running_app(node_app(primaries[0])) as u0,
            running_app(node_app(primaries[1])) as u1,
            running_app(node_app(primaries[2])) as u2,
            running_app(node_app("live")) as u3,
            aiohttp.ClientSession() as session,
        ):
            ring: Any = ThreePrimariesOneHandoff(
                [device(u, i) for i, u in enumerate((u0, u1, u2, u3))]
            )
            backend = _backend(session)
            try:
                resp, summary = await open_stream(
                    backend,
                    ring,
                    0,
                    "GET",
                    lambda n: "/d/0/a/c/o",
                    {},
                )
                assert resp is None
                assert summary.status == 404
                head = await backend.read_first(
                    ring,
                    0,
                    "HEAD",
                    lambda n: "/d/0/a/c/o",
                    {},
                    tombstones_win=True,
                )
                assert head.status == 404
                # Without the rule (account and container reads), the copy is served.
                plain = await backend.read_first(
                    ring,
                    0,
                    "HEAD",
                    lambda n: "/d/0/a/c/o",
                    {},
                )
                assert plain.status == 200 and plain.node is ring.devices[3]
            finally:
                await backend.close()

    asyncio.run(run())


def test_a_copy_newer_than_the_tombstone_is_served() -> None:
    """A PUT after the DELETE: the handoff's copy is the newest, so it is the answer."""

    async def run() -> None:
        async with (
            running_app(node_app("deleted")) as u0,
            running_app(node_app("deleted")) as u1,
            running_app(node_app("deleted")) as u2,
            aiohttp.ClientSession() as session,
        ):
            newer = web.Application()

            async def handle(request: web.Request) -> web.Response:
                return web.Response(body=b"new", headers={"X-Backend-Timestamp": "1700000009.0"})

            newer.router.add_route("*", "/{tail:.*}", handle)
            async with running_app(newer) as u3:
                ring: Any = ThreePrimariesOneHandoff(
                    [device(u, i) for i, u in enumerate((u0, u1, u2, u3))]
                )
                backend = _backend(session)
                try:
                    resp, summary = await open_stream(
                        backend,
                        ring,
                        0,
                        "GET",
                        lambda n: "/d/0/a/c/o",
                        {},
                    )
                    assert resp is not None and summary.status == 200
                    assert await resp.read() == b"new"
                    resp.release()
                finally:
                    await backend.close()

    asyncio.run(run())
