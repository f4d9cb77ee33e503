"""piece_lists (proxy/putbody.py) and BodyHasher.feed_parts: pieces as lists of chunks."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections.abc import AsyncIterator

import xxhash

from proxy.etagtrailer import BodyHasher
from proxy.putbody import piece_lists


async def _gen(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


def _lists(chunks: list[bytes], size: int) -> list[list[bytes]]:
    async def run() -> list[list[bytes]]:
        return [p async for p in piece_lists(_gen(chunks), size)]

    return asyncio.run(run())


def test_chunks_are_grouped_not_joined() -> None:
    chunks = [b"ab", b"cd", b"ef", b"g"]
    out = _lists(chunks, 4)
    assert out == [[b"ab", b"cd"], [b"ef", b"g"]]
    assert out[0][0] is chunks[0]  # the same objects: nothing copied


def test_big_chunk_alone_and_empty_ones_dropped() -> None:
    big = b"x" * 10
    assert _lists([b"", big, b"", b"y"], 4) == [[big], [b"y"]]
    assert _lists([], 4) == []
    assert _lists([b"", b""], 4) == []


def test_every_byte_in_order_whatever_the_sizes() -> None:
    data = os.urandom(50_000)
    cuts = sorted({0, len(data), *(int.from_bytes(os.urandom(2)) % len(data) for _ in range(40))})
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    for size in (1, 777, 4096, 100_000):
        out = _lists(chunks, size)
        assert b"".join(b"".join(p) for p in out) == data
        assert all(sum(map(len, p)) >= size for p in out[:-1])


def test_feed_parts_hashes_like_the_joined_body() -> None:
    parts = [os.urandom(n) for n in (1, 3000, 70_000, 0, 5)]

    async def run() -> tuple[str, str, int]:
        h = BodyHasher()
        await h.feed_parts(parts[:2])
        await h.feed(parts[2])
        await h.feed_parts(parts[3:])
        md5_hex, xxh_hex = await h.finish()
        return md5_hex, xxh_hex, h.total

    body = b"".join(parts)
    assert asyncio.run(run()) == (
        hashlib.md5(body).hexdigest(),
        xxhash.xxh3_128(body).hexdigest(),
        len(body),
    )
