"""The journal record's hand-framed body is the msgpack encoding of the same structure.

``encode_record`` writes the msgpack framing itself (to copy the data once); any valid msgpack
would decode, but keeping the packer's exact bytes keeps the format one thing. The boundaries
of every integer, array and bin size class are covered.
"""

from __future__ import annotations

import msgpack
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.journal import decode_record, encode_record

_HEAD_BYTES = 40  # magic 12 | version 4 | seq 8 | capture 8 | body length 8
_SUM_BYTES = 8

_edges = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x100000000, 2**64 - 1]
ints = st.one_of(st.sampled_from(_edges), st.integers(0, 2**64 - 1))
lengths = st.one_of(st.sampled_from([0, 1, 0xFF, 0x100, 0xFFFF, 0x10000]), st.integers(0, 5000))
runs = st.lists(st.tuples(ints, lengths), max_size=20)
entries = st.lists(st.tuples(ints, runs), max_size=20)


def _make(
    shape: list[tuple[int, list[tuple[int, int]]]],
) -> list[tuple[int, list[tuple[int, bytes]]]]:
    out: list[tuple[int, list[tuple[int, bytes]]]] = []
    for n, (idx, rs) in enumerate(shape):
        out.append((idx, [(off, bytes([n % 251]) * length) for off, length in rs]))
    return out


@settings(max_examples=60, deadline=None)
@given(shape=entries, seq=ints, capture=ints)
def test_body_is_the_packers_bytes_and_round_trips(shape, seq, capture):
    record = _make(shape)
    data = encode_record(seq, capture, record)
    body = data[_HEAD_BYTES:-_SUM_BYTES]
    expected = msgpack.packb([[idx, [[off, b] for off, b in rs]] for idx, rs in record])
    assert body == expected
    assert int.from_bytes(data[32:40], "big") == len(body)
    assert int.from_bytes(data[-8:], "big") == xxhash.xxh3_64_intdigest(data[:-8])
    rec = decode_record(data)
    assert (rec.seq, rec.capture, rec.entries) == (seq, capture, record)


def test_views_and_buffers_encode_like_bytes():
    page = bytearray(range(256)) * 16
    as_views = [(5, [(0, memoryview(page)[:512]), (4096, page)]), (200, [(512, b"z" * 512)])]
    as_bytes = [(5, [(0, bytes(page[:512])), (4096, bytes(page))]), (200, [(512, b"z" * 512)])]
    assert encode_record(1, 2, as_views) == encode_record(1, 2, as_bytes)
    assert decode_record(encode_record(1, 2, as_views)).entries == as_bytes
    empty = encode_record(3, 4, [])
    assert empty[_HEAD_BYTES:-_SUM_BYTES] == msgpack.packb([])
