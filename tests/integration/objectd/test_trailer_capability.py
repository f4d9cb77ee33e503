"""The proxy sends the ETag trailer only to object servers that said they take it.

Two real object servers and one stand-in for an older version (an aiohttp app that stores
whatever body it gets, without the support header) behind one ring; the proxy's stream_put
writes a 300 KB object to the three. The older server must get a plain PUT every time, the
others a trailer from the first PUT on (the proxy asks each server it has not heard from yet,
once, through /healthcheck), and every replica must hold the body.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from common.clock import ManualClock
from common.nodes import ErrorLimiter
from common.puttrailer import TRAILER_HEADER, TRAILER_SUPPORT_HEADER, TRAILER_VERSION
from common.server import running_app
from objectd.server import ObjectServerConf, make_object_app
from proxy.backend import Backend
from proxy.objput import stream_put
from ring import NewDevice, Ring, RingBuilder, write_ring

pytestmark = [pytest.mark.integration]

PREFIX, SUFFIX = "pre", "suf"
BODY = os.urandom(300_000)
MD5 = hashlib.md5(BODY).hexdigest()


def _old_server(seen: list[tuple[CIMultiDict[str], int]]) -> web.Application:
    """An object server from before the trailer: stores the body it is sent, as it is."""

    async def put(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((CIMultiDict(request.headers), len(body)))
        return web.Response(status=201, headers={"Etag": hashlib.md5(body).hexdigest()})

    app = web.Application(client_max_size=1 << 24)
    app.router.add_put("/{tail:.*}", put)
    return app


async def _body() -> object:
    yield BODY


def test_the_trailer_goes_only_to_servers_that_advertise_it(tmp_path: Path) -> None:
    async def run() -> None:
        clock = ManualClock()
        seen: list[tuple[CIMultiDict[str], int]] = []
        sent: list[tuple[str, bool]] = []
        probes: list[int | None] = []

        async def on_start(_s: object, _ctx: object, params: aiohttp.TraceRequestStartParams):
            if params.method == "PUT":
                sent.append((f"{params.url.port}", TRAILER_HEADER in params.headers))
            elif params.url.path == "/healthcheck":
                probes.append(params.url.port)

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_start)
        async with (
            running_app(await _new_server(tmp_path / "n1", clock)) as u1,
            running_app(await _new_server(tmp_path / "n2", clock)) as u2,
            running_app(_old_server(seen)) as u3,
            aiohttp.ClientSession(trace_configs=[trace]) as session,
        ):
            ports = [int(u.rsplit(":", 1)[1]) for u in (u1, u2, u3)]
            builder = RingBuilder(2, 3, 0)
            for i, port in enumerate(ports):
                builder.add(NewDevice(1, i + 1, "127.0.0.1", port, "127.0.0.1", port, "sda", 1.0))
            builder.rebalance(seed=1)
            write_ring(tmp_path / "object.ring", builder.ring_data())
            ring = Ring(tmp_path / "object.ring", PREFIX, SUFFIX, clock=clock)
            backend = Backend(
                SimpleNamespace(),  # type: ignore[arg-type]  # stream_put takes the ring itself
                session,
                clock,
                conn_timeout_s=5.0,
                node_timeout_s=10.0,
                error_limiter=ErrorLimiter(clock, limit=10, interval_s=60),
            )

            async def put(name: str) -> list[int]:
                def headers_for(_i: int, _node: object) -> CIMultiDict[str]:
                    return CIMultiDict(
                        {
                            "Content-Length": str(len(BODY)),
                            "X-Timestamp": f"{clock.time():.5f}",
                            "Content-Type": "application/octet-stream",
                        }
                    )

                clock.advance(1.0)
                results = await stream_put(
                    backend,
                    ring,
                    0,
                    lambda d: f"/{d.device}/0/AUTH_a/c/{name}",
                    headers_for,
                    _body(),  # type: ignore[arg-type]
                    connect_timeout_s=5.0,
                )
                assert all(r.headers.get("Etag", "").strip('"') == MD5 for r in results)
                return [r.status for r in results]

            for name in ("first", "second"):
                sent.clear()
                assert await put(name) == [201, 201, 201]
                by_port = dict(sent)
                assert by_port[str(ports[0])] and by_port[str(ports[1])], name
                assert not by_port[str(ports[2])], name  # the older server: a plain PUT
            assert len(backend.trailer_servers) == 2  # the two that advertise it
            assert sorted(p or 0 for p in probes) == sorted(ports)  # each asked once, no more
            assert [n for _, n in seen] == [len(BODY), len(BODY)]  # never a trailer in its body
            assert all(TRAILER_HEADER not in h for h, _ in seen)

    asyncio.run(run())


async def _new_server(devices_dir: Path, clock: ManualClock) -> web.Application:
    (devices_dir / "sda").mkdir(parents=True)
    conf = ObjectServerConf(
        devices_dir=devices_dir, hash_path_prefix=PREFIX, hash_path_suffix=SUFFIX
    )
    return await make_object_app(conf, clock)


def test_every_object_server_response_says_it_takes_the_trailer(tmp_path: Path) -> None:
    async def run() -> None:
        app = await _new_server(tmp_path / "n", ManualClock())
        async with running_app(app) as url, aiohttp.ClientSession() as session:
            for path in ("/healthcheck", "/sda/0/AUTH_a/c/missing", "/nonsense"):
                async with session.get(url + path) as r:
                    assert r.headers[TRAILER_SUPPORT_HEADER] == str(TRAILER_VERSION), path

    asyncio.run(run())
