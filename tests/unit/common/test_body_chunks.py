"""body_chunks: a request body in the parser's chunks, ending at the end of the body."""

from __future__ import annotations

import asyncio

from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import EmptyStreamReader, StreamReader

from common.server import body_chunks


async def _all(content) -> list[bytes]:
    return [chunk async for chunk in body_chunks(content)]


def test_an_empty_body_ends_even_when_read_again() -> None:
    async def go() -> tuple[list[bytes], list[bytes]]:
        empty = EmptyStreamReader()
        # aiohttp answers (b"", True) from the second read on: that is not more body
        return await _all(empty), await _all(empty)

    assert asyncio.run(asyncio.wait_for(go(), 5)) == ([], [])


def test_chunk_boundaries_are_skipped_and_chunks_kept_whole() -> None:
    async def go() -> list[bytes]:
        loop = asyncio.get_running_loop()
        content = StreamReader(BaseProtocol(loop), 1 << 16, loop=loop)  # no socket needed
        content.begin_http_chunk_receiving()
        content.feed_data(b"abc")
        content.end_http_chunk_receiving()
        content.begin_http_chunk_receiving()
        content.feed_data(b"defg")
        content.end_http_chunk_receiving()
        content.feed_eof()
        return await _all(content)

    assert asyncio.run(asyncio.wait_for(go(), 5)) == [b"abc", b"defg"]
