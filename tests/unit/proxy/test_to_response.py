"""Sending an ops Result to the client: small streamed bodies go out whole, in one response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from common.server import running_app
from proxy.opstypes import Result
from proxy.swift import to_response

BODY = bytes(range(256)) * 16  # 4 KiB


def _app(make: Callable[[], Result]) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await to_response(request, make())

    app = web.Application()
    app.router.add_route("*", "/o", handler)
    return app


async def _chunks(parts: list[bytes], fail: bool = False) -> AsyncIterator[bytes]:
    for p in parts:
        yield p
    if fail:
        raise aiohttp.ClientPayloadError("the storage node cut its stream")


def _result(parts: list[bytes], declared: int, fail: bool = False) -> Result:
    h = CIMultiDict({"Content-Length": str(declared), "Content-Type": "x/y", "ETag": "e"})
    return Result(200, h, b"", _chunks(parts, fail))


def _run(make: Callable[[], Result], method: str = "GET") -> tuple[int, CIMultiDict[str], bytes]:
    async def go() -> tuple[int, CIMultiDict[str], bytes]:
        async with (
            running_app(_app(make)) as url,
            aiohttp.ClientSession() as s,
            s.request(method, url + "/o") as r,
        ):
            return r.status, CIMultiDict(r.headers), await r.read()

    return asyncio.run(go())


def test_small_body_is_sent_whole() -> None:
    status, headers, body = _run(lambda: _result([BODY[:1000], BODY[1000:]], len(BODY)))
    assert (status, body) == (200, BODY)
    assert headers["Content-Length"] == str(len(BODY))
    assert headers["Content-Type"] == "x/y" and headers["ETag"] == "e"


def test_small_body_to_a_head_has_no_body() -> None:
    status, _headers, body = _run(lambda: _result([BODY], len(BODY)), "HEAD")
    assert (status, body) == (200, b"")


def test_a_failing_small_stream_cuts_the_connection() -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        _run(lambda: _result([BODY[:100]], len(BODY), fail=True))


def test_a_short_small_stream_cuts_the_connection() -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        _run(lambda: _result([BODY[:100]], len(BODY)))


def test_a_body_longer_than_declared_is_clipped_as_when_streamed() -> None:
    status, _headers, body = _run(lambda: _result([BODY, BODY], len(BODY)))
    assert (status, body) == (200, BODY)


def test_a_large_body_still_streams() -> None:
    big = BODY * 40  # 160 KiB
    status, _headers, body = _run(lambda: _result([big[:65536], big[65536:]], len(big)))
    assert (status, body) == (200, big)


@pytest.mark.parametrize(
    ("status", "body", "declared"),
    [
        (200, BODY, True),
        (206, BODY[:10], True),
        (200, b"w" * 500_000, True),
        (200, b"", True),
        (412, b"", True),
        (304, b"", False),
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_whole_body_is_answered_as_the_same_body_streamed(
    status: int, body: bytes, declared: bool, method: str
) -> None:
    """proxy.ops.WholeBody (a body the proxy read whole): the client gets what it got when
    the same answer was streamed (status, headers but Date, body)."""
    from proxy.ops import WholeBody

    def make(stream: Callable[[], AsyncIterator[bytes]]) -> Callable[[], Result]:
        def result() -> Result:
            h = CIMultiDict({"Content-Type": "x/y", "ETag": "e"})
            if declared:
                h["Content-Length"] = str(len(body))
            res = Result(status, h, b"", stream())
            if method == "HEAD":  # as proxy/swift.py _object does
                res.stream = None
            return res

        return result

    whole = _run(make(lambda: WholeBody(body)), method)
    streamed = _run(
        make(lambda: _chunks([body[i : i + 65536] for i in range(0, len(body), 65536)])), method
    )
    for answer in (whole, streamed):
        answer[1].popall("Date", None)
    assert whole == streamed
    assert whole[0] == status and whole[2] == (body if method == "GET" else b"")
