"""`Expect: 100-continue` answered only to requests that may send their body.

aiohttp's default answers "100 Continue" before any handler runs, so a client with a bad
token or a bad S3 signature would upload its whole body before hearing 401/403. Here the
proxy first checks what the headers alone decide: an S3 request's credentials and signature,
a Swift request's path, token and authorization. A request that fails gets no "100
Continue"; the normal path then answers it with the protocol's own error, marked
`Connection: close` (the client may or may not have started sending the body, so the rest of
the stream can't be trusted to be a next request; aiohttp reads and drops a body that comes
anyway for its lingering time, then closes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

__all__ = ["NO_CONTINUE", "close_after_refusal", "make_expect_handler"]

NO_CONTINUE = web.RequestKey("cairn_no_continue", bool)

Refuses = Callable[[web.Request], Awaitable[bool]]


def make_expect_handler(refuses: Refuses) -> Callable[[web.Request], Awaitable[None]]:
    """An aiohttp expect handler that withholds "100 Continue" when `refuses(request)`."""

    async def expect(request: web.Request) -> None:
        value = request.headers.get(hdrs.EXPECT, "")
        if request.version != HttpVersion11:
            return
        if value.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {value}\n")
        if await refuses(request):
            request[NO_CONTINUE] = True
            return
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the 100 is not part of the response proper

    return expect


async def close_after_refusal(request: web.Request, resp: web.StreamResponse) -> None:
    """on_response_prepare: the answer to a request refused before its body ends the
    connection."""
    if request.get(NO_CONTINUE):
        resp.force_close()  # the server closes after this response
        resp.headers["Connection"] = "close"  # (headers are already prepared by now)
