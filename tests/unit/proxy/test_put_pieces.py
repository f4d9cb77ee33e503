"""How a streamed PUT body is regrouped into pieces before it is copied to each replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from proxy.objput import pieces


async def _gen(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


def _pieces(chunks: list[bytes], size: int) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [p async for p in pieces(_gen(chunks), size)]

    return asyncio.run(collect())


def test_small_chunks_are_joined_up_to_the_piece_size() -> None:
    out = _pieces([b"ab", b"cd", b"ef", b"g"], 4)
    assert out == [b"abcd", b"efg"]


def test_a_big_chunk_passes_through_as_it_is() -> None:
    big = b"x" * 10
    out = _pieces([big, b"y"], 4)
    assert out[0] is big and out == [big, b"y"]


def test_empty_chunks_and_an_empty_body_give_no_piece() -> None:
    assert _pieces([], 4) == []
    assert _pieces([b"", b""], 4) == []
    assert _pieces([b"", b"a", b""], 4) == [b"a"]


@given(
    st.lists(st.binary(max_size=50), max_size=30),
    st.integers(min_value=1, max_value=64),
)
def test_pieces_keep_every_byte_in_order(chunks: list[bytes], size: int) -> None:
    out = _pieces(chunks, size)
    assert b"".join(out) == b"".join(chunks)
    assert all(out)  # no empty piece
    assert all(len(p) >= size for p in out[:-1])  # only the last may be short
