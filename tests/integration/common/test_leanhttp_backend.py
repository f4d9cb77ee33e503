"""proxy.backend.Backend.call on the lean client, over 127.0.0.1: what the callers rely on
stays as it was with aiohttp (statuses and bodies, headers as a Mapping for trailer
learning, error limiting on 5xx and 507, a 503 Resp on connection trouble or a timeout)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from common.clock import ManualClock
from common.nodes import ErrorLimiter, node_key
from common.puttrailer import TRAILER_SUPPORT_HEADER, TRAILER_VERSION
from common.server import running_app
from proxy.backend import Backend
from ring import Device

pytestmark = [pytest.mark.integration]


def storage_stub(seen: list[tuple[str, str, CIMultiDict[str], bytes]]) -> web.Application:
    """Answers with the status in the path's last part; PUT bodies are echoed reversed."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.method, request.path_qs, CIMultiDict(request.headers), body))
        status = int(request.match_info["status"])
        if status == 599:
            await asyncio.sleep(2)  # longer than node_timeout_s
        return web.Response(
            status=status,
            body=body[::-1] if status < 300 and request.method != "HEAD" else b"",
            headers={TRAILER_SUPPORT_HEADER: str(TRAILER_VERSION), "X-Seen": "yes"},
        )

    app = web.Application()
    app.router.add_route("*", "/sda/1/{acct}/{status}", handle)
    return app


def device(port: int) -> Device:
    return Device(1, 1, 1, "127.0.0.1", port, "127.0.0.1", port, "sda", 1.0)


def test_call_statuses_errors_and_learning() -> None:
    async def run() -> None:
        clock = ManualClock()
        seen: list[tuple[str, str, CIMultiDict[str], bytes]] = []
        limiter = ErrorLimiter(clock, limit=1, interval_s=60)
        async with running_app(storage_stub(seen)) as url, aiohttp.ClientSession() as session:
            node = device(int(url.rsplit(":", 1)[1]))
            backend = Backend(
                SimpleNamespace(),  # type: ignore[arg-type]  # call() uses no ring
                session,
                clock,
                conn_timeout_s=2.0,
                node_timeout_s=0.5,
                error_limiter=limiter,
            )
            r = await backend.call(
                node, "PUT", "/sda/1/AUTH_a/201", {"X-Timestamp": "1.00000"}, body=b"abc"
            )
            assert (r.status, r.body, r.node) == (201, b"cba", node)
            assert r.headers["x-seen"] == "yes"
            assert backend.takes_trailer(node)  # learnt from the answer's headers
            method, _path, headers, body = seen[-1]
            assert (method, body, headers["Content-Length"]) == ("PUT", b"abc", "3")
            assert headers["Content-Type"] == "application/octet-stream"  # as aiohttp sent

            r = await backend.call(
                node, "GET", "/sda/1/AUTH_a/200", {}, query={"format": "json", "prefix": "a b/c"}
            )
            assert r.status == 200
            assert seen[-1][1] == "/sda/1/AUTH_a/200?format=json&prefix=a+b/c"
            h = await backend.call(node, "HEAD", "/sda/1/AUTH_a/204", {})
            assert (h.status, h.body) == (204, b"")

            assert (await backend.call(node, "DELETE", "/sda/1/AUTH_a/503", {})).status == 503
            assert not limiter.is_limited(node_key(node))
            assert (await backend.call(node, "DELETE", "/sda/1/AUTH_b/507", {})).status == 507
            assert limiter.is_limited(node_key(node))  # 507: limited at once
            assert backend.pool.connections_made == 1  # all on one kept-alive connection

            slow = await backend.call(node, "GET", "/sda/1/AUTH_a/599", {})
            assert (slow.status, slow.body) == (503, b"")  # timed out: a 503 Resp, no raise
            await backend.close()

        gone = Backend(
            SimpleNamespace(),  # type: ignore[arg-type]
            aiohttp.ClientSession(),
            clock,
            conn_timeout_s=2.0,
            node_timeout_s=1.0,
            error_limiter=ErrorLimiter(clock, limit=0, interval_s=60),
        )
        r = await gone.call(node, "HEAD", "/sda/1/AUTH_a/204", {})  # the server is gone
        assert (r.status, r.node) == (503, node)
        assert gone.errors.is_limited(node_key(node))
        await gone.close()

    asyncio.run(run())
