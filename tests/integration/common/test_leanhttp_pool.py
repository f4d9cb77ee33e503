"""common.leanhttp.LeanPool over real sockets on 127.0.0.1: a real cairn server (make_app via
running_app) for the ordinary exchanges, and small raw asyncio servers for the peers that
misbehave (close an idle connection, never answer, answer garbage, hang up mid-body)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
from aiohttp import web

from common.leanhttp import (
    BodyTooLarge,
    ConnectError,
    ConnectionClosed,
    LeanPool,
    PoolClosed,
    ProtocolError,
    RequestTimeout,
)
from common.server import make_app, running_app

pytestmark = [pytest.mark.integration]

Runner = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run_loop(request: pytest.FixtureRequest) -> Runner:
    """Each test under both event loops: the servers and proxy workers run uvloop."""
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[int]:
    """A bare TCP server on 127.0.0.1:0 whose connections `handler` serves; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(r, w)
        finally:
            w.close()
            tasks.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await server.wait_closed()


async def read_request(r: asyncio.StreamReader) -> bytes:
    """One request head (and a Content-Length body); b"" at end of stream."""
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await r.readexactly(int(line.split(b":", 1)[1]))
    return head


def cairn_app() -> web.Application:
    app = make_app("leanhttp-test")

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(
            status=201,
            body=body[::-1],
            headers={"X-Method": request.method, "X-Got": request.headers.get("X-Send", "")},
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"one ", b"two ", b"three"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/chunked", chunked)
    return app


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_exchanges_with_a_cairn_server_reuse_one_connection(run_loop: Runner) -> None:
    async def run() -> None:
        pool = LeanPool(connect_timeout_s=2.0)
        async with running_app(cairn_app()) as url:
            port = port_of(url)
            r = await pool.request(
                "127.0.0.1",
                port,
                "PUT",
                "/echo/a%20b",
                {"X-Send": "caf\u00e9"},
                b"abc",
                timeout_s=5.0,
            )
            assert (r.status, r.body, r.keep_alive) == (201, b"cba", True)
            assert r.headers["x-got"] == "caf\u00e9"  # UTF-8 both ways, as aiohttp does
            h = await pool.request("127.0.0.1", port, "HEAD", "/echo/x", timeout_s=5.0)
            assert (h.status, h.body, h.headers["X-Method"]) == (201, b"", "HEAD")
            c = await pool.request("127.0.0.1", port, "GET", "/chunked", timeout_s=5.0)
            assert (c.status, c.body) == (200, b"one two three")
            hc = await pool.request("127.0.0.1", port, "GET", "/healthcheck", timeout_s=5.0)
            assert hc.status == 200
            assert pool.connections_made == 1
            assert pool.idle_connections("127.0.0.1", port) == 1
            await pool.close()
            with pytest.raises(PoolClosed):
                await pool.request("127.0.0.1", port, "GET", "/healthcheck", timeout_s=5.0)

    run_loop(run())


def test_a_body_in_parts_arrives_whole(run_loop: Runner) -> None:
    async def run() -> None:
        pool = LeanPool(connect_timeout_s=2.0)
        big = bytes(range(256)) * 2048  # 512 KiB: written after the head, not joined to it
        async with running_app(cairn_app()) as url:
            r = await pool.request(
                "127.0.0.1",
                port_of(url),
                "PUT",
                "/echo/parts",
                {},
                (big, memoryview(b"-trailer")),
                timeout_s=10.0,
            )
            assert (r.status, r.body) == (201, (big + b"-trailer")[::-1])
            await pool.close()

    run_loop(run())


def test_concurrent_requests_stay_within_the_per_host_limit(run_loop: Runner) -> None:
    in_flight = 0
    most = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal in_flight, most
        while await read_request(r):
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            w.write(OK)
            await w.drain()

    async def run() -> None:
        pool = LeanPool(connect_timeout_s=2.0, connections_per_host_max=2)
        async with raw_server(handler) as port:
            got = await asyncio.gather(
                *(pool.request("127.0.0.1", port, "GET", "/", timeout_s=5.0) for _ in range(6))
            )
            assert [r.body for r in got] == [b"ok"] * 6
            assert pool.connections_made == 2
            await pool.close()
        assert most == 2

    run_loop(run())


def test_idle_connection_closed_by_the_server_is_retried_once_on_a_new_one(
    run_loop: Runner,
) -> None:
    """The server answers the first request on each connection, then closes it when the
    next request arrives, without a byte of answer: what a server that had timed out the
    idle connection looks like to a client that sent just then."""
    seen = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal seen
        if await read_request(r):
            seen += 1
            w.write(OK)
            await w.drain()
        if await read_request(r):
            seen += 1  # and hang up without answering

    async def run() -> None:
        pool = LeanPool(connect_timeout_s=2.0)
        async with raw_server(handler) as port:
            for _ in range(3):
                r = await pool.request("127.0.0.1", port, "GET", "/", timeout_s=5.0)
                assert r.body == b"ok"
            # 1st: new connection; 2nd and 3rd: reused one refused, then a new one.
            assert pool.connections_made == 3
            assert seen == 5
            await pool.close()

    run_loop(run())


def test_a_new_connection_closed_before_an_answer_is_not_retried(run_loop: Runner) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)

    async def run() -> None:
        pool = LeanPool(connect_timeout_s=2.0)
        async with raw_server(handler) as port:
            with pytest.raises(ConnectionClosed) as e:
                await pool.request("127.0.0.1", port, "GET", "/", timeout_s=5.0)
            assert e.value.before_response
            assert pool.connections_made == 1
            await pool.close()

    run_loop(run())


def test_a_silent_server_times_out_and_the_connection_is_dropped(run_loop: Runner) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if await read_request(r):
            w.write(OK)
            await w.drain()
        await read_request(r)
        await asyncio.sleep(30)  # never answers the second request

    async def run() -> None:
        pool = LeanPool(connect_timeout_s=2.0)
        async with raw_server(handler) as port:
            assert (await pool.request("127.0.0.1", port, "GET", "/", timeout_s=5.0)).body == b"ok"
            with pytest.raises(RequestTimeout):
                await pool.request("127.0.0.1", port, "GET", "/", timeout_s=0.2)
            assert pool.idle_connections("127.0.0.1", port) == 0
            await pool.close()

    run_loop(run())


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", ConnectionClosed),
        (b"220 smtp.example ready\r\n", ProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n", BodyTooLarge),
    ],
)
def test_bad_answers_raise_clear_errors(
    answer: bytes, error: type[Exception], run_loop: Runner
) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(answer)
        await w.drain()

    async def run() -> None:
        pool = LeanPool(connect_timeout_s=2.0, body_bytes_max=1000)
        async with raw_server(handler) as port:
            with pytest.raises(error):
                await pool.request("127.0.0.1", port, "GET", "/", timeout_s=5.0)
            assert pool.idle_connections("127.0.0.1", port) == 0
            await pool.close()

    run_loop(run())


def test_connection_close_is_honoured(run_loop: Runner) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()

    async def run() -> None:
        pool = LeanPool(connect_timeout_s=2.0)
        async with raw_server(handler) as port:
            for _ in range(2):
                r = await pool.request("127.0.0.1", port, "GET", "/", timeout_s=5.0)
                assert (r.body, r.keep_alive) == (b"ok", False)
            assert pool.connections_made == 2
            await pool.close()

    run_loop(run())


def test_refused_connection_is_a_connect_error(run_loop: Runner) -> None:
    async def run() -> None:
        async with raw_server(read_request_only) as port:
            pass  # the port is free again once the server is closed
        pool = LeanPool(connect_timeout_s=2.0)
        with pytest.raises(ConnectError):
            await pool.request("127.0.0.1", port, "GET", "/", timeout_s=5.0)
        await pool.close()

    run_loop(run())


async def read_request_only(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await read_request(r)
