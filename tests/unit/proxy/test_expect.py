"""proxy/expect.py on a real loopback socket: "100 Continue" only for requests not refused."""

from __future__ import annotations

import asyncio

from aiohttp import web

from common.server import make_app, running_app
from proxy.expect import close_after_refusal, make_expect_handler


async def _exchange(refuse: bool, expect: str, send_body: bool) -> list[bytes]:
    async def refuses(_r: web.Request) -> bool:
        return refuse

    async def handler(r: web.Request) -> web.Response:
        if refuse:
            return web.Response(status=401, text="no")
        return web.Response(status=201, text=f"got {len(await r.read())}")

    app = make_app("t")
    app.on_response_prepare.append(close_after_refusal)
    app.router.add_route("*", "/{t:.*}", handler, expect_handler=make_expect_handler(refuses))
    async with running_app(app) as url:
        host, port = url.split("//")[1].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        head = f"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: {expect}\r\n\r\n"
        writer.write(head.encode())
        got = [await asyncio.wait_for(reader.read(4096), 10)]
        if send_body:
            writer.write(b"hello")
            got.append(await asyncio.wait_for(reader.read(4096), 10))
        writer.close()
        await writer.wait_closed()
        return got


def test_refused_request_hears_its_error_and_the_connection_closes() -> None:
    (first,) = asyncio.run(_exchange(refuse=True, expect="100-continue", send_body=False))
    assert first.startswith(b"HTTP/1.1 401")  # no 100 Continue before it
    # the client knows not to send the body on this connection (aiohttp itself would still
    # read and drop a body that came anyway, for its lingering time)
    assert b"Connection: close" in first


def test_accepted_request_gets_100_then_its_answer() -> None:
    cont, final = asyncio.run(_exchange(refuse=False, expect="100-continue", send_body=True))
    assert cont == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 201") and final.endswith(b"got 5")


def test_unknown_expectation_is_417() -> None:
    (first,) = asyncio.run(_exchange(refuse=False, expect="something-else", send_body=False))
    assert first.startswith(b"HTTP/1.1 417")
