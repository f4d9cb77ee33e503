"""The fast lane (common/leanserver) over real sockets on 127.0.0.1, under asyncio and uvloop:
a cairn app (make_app) with fast routes, served by common.server.running_app, talked to with
raw bytes so the tests see which side answered (aiohttp adds a Server header; the fast lane
does not)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import uvloop
from aiohttp import web

from common.leanserver import FastRequest, FastRoute, RequestHead
from common.log import request_id
from common.server import FAST_RESPONSE_HEADERS, FAST_ROUTES, make_app, running_app

pytestmark = [pytest.mark.integration]

Runner = Callable[[Coroutine[Any, Any, None]], None]
IO_TIMEOUT_S = 5.0
# What the /hold/ route keeps of each body: a view of it, and the buffer it came in.
HELD: list[memoryview] = []
BUFFERS: list[bytearray] = []


@pytest.fixture(params=["asyncio", "uvloop"])
def run_loop(request: pytest.FixtureRequest) -> Runner:
    """Each test under both event loops: the daemons run uvloop."""
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


class Gate:
    """Holds the slow route's handlers until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()


def _app(gate: Gate | None = None) -> web.Application:
    app = make_app("lane-test")

    async def echo(request: FastRequest) -> web.Response:
        body = b"%s|%s|%s" % (request.path.encode(), request_id.get().encode(), request.body)
        return web.Response(status=200, body=body, headers={"X-Route": "echo"})

    async def parts_echo(request: FastRequest) -> web.Response:
        # how many parts the body came in, and a digest of their bytes
        digest = hashlib.sha256(b"".join(request.parts)).hexdigest()
        return web.Response(status=201, text=f"{len(request.parts)} {digest}")

    async def hold(request: FastRequest) -> web.Response:
        # keeps what a handler may keep: a view of its body (HELD), and, to see which buffer
        # a body came in, the buffer object itself (BUFFERS; never handed to handlers)
        (part,) = request.parts
        BUFFERS.append(cast(bytearray, part.obj))
        digest = hashlib.sha256(part).hexdigest()
        if request.path.endswith("/keep"):
            HELD.append(part)
        else:
            part.release()
        return web.Response(status=201, text=digest)

    async def boom(_request: FastRequest) -> web.Response:
        raise RuntimeError("secret detail that must not reach the wire")

    async def slow(_request: FastRequest) -> web.Response:
        assert gate is not None
        gate.entered.set()
        await gate.release.wait()
        return web.Response(status=201, text="slow done")

    async def aio_echo(request: web.Request) -> web.Response:
        body = await request.read()
        path = request.raw_path.encode()
        return web.Response(body=b"%s|%s|%s" % (path, request_id.get().encode(), body))

    def under(prefix: str) -> Callable[[RequestHead], bool]:
        return lambda head: head.path.startswith(prefix)

    app[FAST_ROUTES] = [
        FastRoute("PUT", under("/fast/"), echo, 1024, body_timeout_s=0.3),
        FastRoute("POST", under("/boom"), boom, 1024),
        FastRoute("PUT", under("/hold/"), hold, 4 << 20, body_parts=True),
        FastRoute("PUT", under("/parts/"), parts_echo, 4 << 20, body_parts=True),
        FastRoute("POST", under("/slow"), slow, 0),
    ]
    app[FAST_RESPONSE_HEADERS] = [("X-Extra", "yes")]
    app.router.add_put("/fast/{x}", aio_echo)
    app.router.add_get("/slow-lane", aio_echo)
    return app


@asynccontextmanager
async def serving(gate: Gate | None = None) -> AsyncIterator[tuple[str, int]]:
    async with running_app(_app(gate)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


class Conn:
    """A raw client connection that reads whole responses (Content-Length framed)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> Conn:
        r, w = await asyncio.open_connection(*addr)
        return cls(r, w)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(IO_TIMEOUT_S):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def at_eof(self) -> bool:
        async with asyncio.timeout(IO_TIMEOUT_S):
            return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.close()


def put(path: str, body: bytes, *extra: str) -> bytes:
    lines = [f"PUT {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_fast_route_served_with_outer_behaviour(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            c.send(put("/fast/a%20b", b"hello", "X-Trans-Id: tx-given"))
            status, headers, body = await c.response()
            assert status == 200
            assert body == b"/fast/a%20b|tx-given|hello"
            assert "server" not in headers  # the fast lane answered, not aiohttp
            assert headers["x-trans-id"] == "tx-given"
            assert headers["x-openstack-request-id"] == "tx-given"
            assert headers["x-extra"] == "yes" and headers["x-route"] == "echo"
            assert "date" in headers
            c.send(put("/fast/b", b""))
            status, headers, body = await c.response()
            assert status == 200 and headers["x-trans-id"].startswith("tx")
            assert body == f"/fast/b|{headers['x-trans-id']}|".encode()
            c.close()

    run_loop(main())


def test_keep_alive_and_pipelined(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            for i in range(3):
                c.send(put(f"/fast/{i}", b"x" * i))
                status, _headers, body = await c.response()
                assert status == 200 and body.endswith(b"|" + b"x" * i)
            c.send(put("/fast/p1", b"one") + put("/fast/p2", b"two"))
            answers = [await c.response(), await c.response()]
            assert [a[2].split(b"|")[0] for a in answers] == [b"/fast/p1", b"/fast/p2"]
            assert all("server" not in a[1] for a in answers)
            c.close()

    run_loop(main())


def test_large_body_received_directly_into_one_part(run_loop: Runner) -> None:
    # A route that takes its body in parts gets a large body as ONE part however it was cut
    # on the wire (the socket reads straight into it), then the connection goes on: a
    # pipelined small request, another large body, and a hand-over to aiohttp.
    rnd = random.Random(3)
    big = [rnd.randbytes(n) for n in (1 << 20, (1 << 20) + 4099, 300_000)]

    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            for i, body in enumerate(big):
                data = put(f"/parts/{i}", body)
                for lo in range(0, len(data), 200_000):  # in several writes, with pauses
                    c.send(data[lo : lo + 200_000])
                    await c.writer.drain()
                    await asyncio.sleep(0.01)
                status, headers, answer = await c.response()
                assert status == 201 and "server" not in headers
                assert answer.decode() == f"1 {hashlib.sha256(body).hexdigest()}"
            # a large body and a small request in one write: both answered, in order
            c.send(put("/parts/a", big[2]) + put("/fast/after", b"tail"))
            s1, _h1, b1 = await c.response()
            s2, _h2, b2 = await c.response()
            assert s1 == 201 and b1.decode().split()[1] == hashlib.sha256(big[2]).hexdigest()
            assert s2 == 200 and b2.endswith(b"|tail")
            c.send(b"GET /slow-lane HTTP/1.1\r\nHost: x\r\n\r\n")
            s3, h3, _b3 = await c.response()
            assert s3 == 200 and "aiohttp" in h3["server"]
            c.close()

    run_loop(main())


def test_direct_body_buffers_are_reused_only_when_unviewed(run_loop: Runner) -> None:
    # A buffer is given out again once its request is over and no view of it is alive; a
    # view a handler kept keeps its bytes while later bodies of the same length arrive.
    rnd = random.Random(5)
    bodies = [rnd.randbytes(1 << 20) for _ in range(5)]
    paths = ["keep", "drop", "keep", "drop", "drop"]
    HELD.clear()
    BUFFERS.clear()

    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            for i, body in enumerate(bodies):
                c.send(put(f"/hold/{i}/{paths[i]}", body))
                status, _h, answer = await c.response()
                assert status == 201 and answer.decode() == hashlib.sha256(body).hexdigest()
            c.close()

    run_loop(main())
    assert [bytes(v) for v in HELD] == [bodies[0], bodies[2]]  # untouched by later bodies
    # 0: a new buffer, kept viewed; 1: a new one, let go; 2: 1's again, kept viewed;
    # 3: a new one, let go; 4: 3's again
    assert BUFFERS[2] is BUFFERS[1] and BUFFERS[4] is BUFFERS[3]
    assert len({id(b) for b in BUFFERS}) == 3


def test_client_gone_mid_direct_body(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            body = b"z" * (1 << 20)
            c.send(put("/parts/gone", body)[:600_000])
            await c.writer.drain()
            await asyncio.sleep(0.05)
            c.close()
            await asyncio.sleep(0.05)
            # the server carries on
            c2 = await Conn.open(addr)
            c2.send(put("/parts/ok", body))
            status, _h, answer = await c2.response()
            assert status == 201 and answer.decode().startswith("1 ")
            c2.close()

    run_loop(main())


def test_non_fast_request_hands_over_for_good(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            c.send(put("/fast/1", b"a"))
            assert "server" not in (await c.response())[1]
            # a GET, pipelined behind another fast PUT: the PUT first, then aiohttp
            c.send(put("/fast/2", b"b") + b"GET /slow-lane HTTP/1.1\r\nHost: x\r\n\r\n")
            s1, h1, b1 = await c.response()
            s2, h2, b2 = await c.response()
            assert (s1, b1.split(b"|")[0]) == (200, b"/fast/2") and "server" not in h1
            assert s2 == 200 and b2.startswith(b"/slow-lane|") and "aiohttp" in h2["server"]
            assert h2["x-trans-id"]  # aiohttp's middleware, as before
            c.send(put("/fast/3", b"c", "X-Trans-Id: tx-after"))
            s3, h3, b3 = await c.response()
            assert s3 == 200 and b3 == b"/fast/3|tx-after|c" and "aiohttp" in h3["server"]
            c.close()

    run_loop(main())


@pytest.mark.parametrize(
    "extra",
    [
        ["Expect: 100-continue"],
        ["Transfer-Encoding: chunked"],
        ["Connection: Upgrade", "Upgrade: websocket"],
    ],
)
def test_requests_the_lane_leaves_to_aiohttp(run_loop: Runner, extra: list[str]) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            if "Transfer-Encoding: chunked" in extra:
                c.send(b"PUT /fast/te HTTP/1.1\r\nHost: x\r\n" + "\r\n".join(extra).encode())
                c.send(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            else:
                c.send(put("/fast/te", b"abc", *extra))
            status, headers, body = await c.response()
            if status == 100:
                status, headers, body = await c.response()
            assert "aiohttp" in headers["server"]
            assert status == 200 and body.endswith(b"|abc")
            c.close()

    run_loop(main())


def test_absolute_form_target_goes_to_aiohttp(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            c.send(put("http://x/fast/abs", b"q"))
            status, headers, body = await c.response()
            assert status == 200 and "aiohttp" in headers["server"]
            assert body.endswith(b"|q")
            c.close()

    run_loop(main())


def test_body_over_the_route_limit_goes_to_aiohttp(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            c.send(put("/fast/big", b"y" * 2000))
            status, headers, body = await c.response()
            assert status == 200 and "aiohttp" in headers["server"] and len(body) > 2000
            c.close()

    run_loop(main())


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"PUT /fast/x HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"PUT /fast/x HTTP/1.1\r\nBad Header\r\n\r\n",
        b"PUT /fast/x HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
    ],
)
def test_malformed_request_gets_4xx_and_close(run_loop: Runner, raw: bytes) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            c.send(put("/fast/ok", b"ok"))
            assert (await c.response())[0] == 200
            c.send(raw)
            status, _headers, _body = await c.response()
            assert 400 <= status < 500
            assert await c.at_eof()
            c.close()

    run_loop(main())


def test_handler_exception_is_a_plain_500(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            c.send(b"POST /boom HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            status, headers, body = await c.response()
            assert status == 500 and body == b"Internal Server Error\n"
            assert "server" not in headers and headers["x-trans-id"]
            c.send(put("/fast/after", b"z"))  # the connection goes on
            assert (await c.response())[0] == 200
            c.close()

    run_loop(main())


def test_connection_close_is_honoured(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            c.send(put("/fast/c", b"c", "Connection: close"))
            status, headers, _body = await c.response()
            assert status == 200 and headers["connection"] == "close"
            assert await c.at_eof()
            c.close()

    run_loop(main())


def test_metrics_count_fast_requests(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            for _ in range(3):
                c.send(put("/fast/m", b"m"))
                await c.response()
            c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            _status, _headers, body = await c.response()
            line = next(
                x
                for x in body.decode().splitlines()
                if x.startswith("cairn_http_requests_total") and 'method="PUT"' in x
            )
            assert 'status="200"' in line and line.endswith(" 3.0")
            metrics = body.decode().splitlines()
            assert "cairn_fast_lane_requests_total 3.0" in metrics
            assert "cairn_fast_lane_handovers_total 1.0" in metrics  # the GET /metrics
            c.close()

    run_loop(main())


def test_graceful_stop(run_loop: Runner) -> None:
    async def main() -> None:
        gate = Gate()
        stop = asyncio.Event()
        ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

        async def server() -> None:
            async with serving(gate) as addr:
                ready.set_result(addr)
                await stop.wait()

        task = asyncio.create_task(server())
        addr = await ready
        busy = await Conn.open(addr)
        idle = await Conn.open(addr)
        idle.send(put("/fast/i", b"i"))
        assert (await idle.response())[0] == 200
        busy.send(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await asyncio.wait_for(gate.entered.wait(), IO_TIMEOUT_S)
        stop.set()
        assert await idle.at_eof()  # idle connections close at once
        gate.release.set()
        status, headers, body = await busy.response()  # the request in flight finishes
        assert (status, body) == (201, b"slow done") and headers["connection"] == "close"
        assert await busy.at_eof()
        await asyncio.wait_for(task, IO_TIMEOUT_S)
        with pytest.raises(OSError):
            await Conn.open(addr)
        busy.close()
        idle.close()

    run_loop(main())


async def _metric_lines(addr: tuple[str, int], needle: str) -> list[str]:
    c = await Conn.open(addr)
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    _status, _headers, body = await c.response()
    c.close()
    return [x for x in body.decode().splitlines() if needle in x and x.startswith("cairn_http_req")]


def test_stalled_body_gets_408_and_close(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            c.send(b"PUT /fast/s HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            status, headers, body = await c.response()
            assert status == 408 and headers["connection"] == "close"
            assert body == b"timed out reading the request body\n"
            assert await c.at_eof()
            c.close()
            lines = await _metric_lines(addr, 'status="408"')
            assert any(x.endswith(" 1.0") and 'method="PUT"' in x for x in lines)

    run_loop(main())


def test_client_gone_mid_body_is_counted_499(run_loop: Runner) -> None:
    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            c.send(b"PUT /fast/g HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            await c.writer.drain()
            c.close()
            for _ in range(200):
                lines = await _metric_lines(addr, 'status="499"')
                if lines:
                    break
                await asyncio.sleep(0.01)
            assert any(x.endswith(" 1.0") and 'method="PUT"' in x for x in lines)

    run_loop(main())


def test_an_app_with_its_own_middleware_is_served_by_aiohttp(run_loop: Runner) -> None:
    async def main() -> None:
        app = _app()

        @web.middleware
        async def tag(request: web.Request, handler: Any) -> web.StreamResponse:
            resp: web.StreamResponse = await handler(request)
            resp.headers["X-Tagged"] = "1"
            return resp

        app.middlewares.append(tag)
        async with running_app(app) as url:
            host, port = url.removeprefix("http://").split(":")
            c = await Conn.open((host, int(port)))
            c.send(put("/fast/mw", b"m"))
            status, headers, _body = await c.response()
            assert status == 200 and headers["x-tagged"] == "1" and "aiohttp" in headers["server"]
            c.close()

    run_loop(main())


def test_many_pipelined_requests_with_a_slow_reader(run_loop: Runner) -> None:
    """Answers the client does not read pause the lane (write flow control), and reading
    them lets it go on: every request is answered, in order."""

    async def main() -> None:
        async with serving() as addr:
            c = await Conn.open(addr)
            n = 1500
            c.send(b"".join(put(f"/fast/{i}", b"p" * 1000) for i in range(n)))
            await asyncio.sleep(0.2)  # (not a timing assert: lets buffers fill up)
            for i in range(n):
                status, _headers, body = await c.response()
                assert status == 200 and body.startswith(f"/fast/{i}|".encode())
            c.close()

    run_loop(main())
