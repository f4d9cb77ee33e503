"""The PUT ETag trailer format (common/puttrailer.py), sans-IO: bytes in, record or error out."""

from __future__ import annotations

import hashlib

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from common.puttrailer import (
    TRAILER_BYTES,
    PutTrailer,
    TrailerError,
    decode_trailer,
    encode_trailer,
)

BODY = b"hello trailer" * 1000
GOOD = PutTrailer(
    "commit", len(BODY), hashlib.md5(BODY).hexdigest(), xxhash.xxh3_128_hexdigest(BODY)
)


def test_round_trip_commit_and_cancel() -> None:
    for t in (GOOD, PutTrailer("cancel", 0, "00" * 16, "ff" * 16)):
        raw = encode_trailer(t)
        assert len(raw) == TRAILER_BYTES == 56
        assert decode_trailer(raw) == t
        assert decode_trailer(bytearray(raw)) == t
        assert decode_trailer(memoryview(raw)) == t


def test_golden_bytes() -> None:
    # The layout on the wire (docs/object-format.md): magic, version 1, action, reserved,
    # length, md5, xxh3-128, then the xxh3-64 of those 48 bytes.
    t = PutTrailer("commit", 0x0102030405060708, "11" * 16, "22" * 16)
    raw = encode_trailer(t)
    assert raw[:16] == b"CRNT\x01\x01\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08"
    assert raw[16:48] == b"\x11" * 16 + b"\x22" * 16
    assert raw[48:] == xxhash.xxh3_64_digest(raw[:48])


def test_every_single_bit_flip_is_refused() -> None:
    raw = encode_trailer(GOOD)
    for i in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            with pytest.raises(TrailerError):
                decode_trailer(bad)


@pytest.mark.parametrize("cut", [0, 1, 4, 55])
def test_short_input_is_refused(cut: int) -> None:
    with pytest.raises(TrailerError, match="bytes, not 56"):
        decode_trailer(encode_trailer(GOOD)[:cut])


def test_trailing_garbage_is_refused() -> None:
    with pytest.raises(TrailerError):
        decode_trailer(encode_trailer(GOOD) + b"x")


def test_other_version_or_magic_or_action_is_refused_even_with_a_valid_checksum() -> None:
    raw = encode_trailer(GOOD)
    for offset, value, needle in ((4, 2, "version"), (0, ord("X"), "magic"), (5, 9, "action")):
        fields = bytearray(raw[:48])
        fields[offset] = value
        with pytest.raises(TrailerError, match=needle):
            decode_trailer(bytes(fields) + xxhash.xxh3_64_digest(bytes(fields)))


def test_bad_records_cannot_be_built() -> None:
    with pytest.raises(TrailerError):
        PutTrailer("commit", 1, "zz" * 16, "00" * 16)
    with pytest.raises(TrailerError):
        PutTrailer("commit", 1, "00" * 15, "00" * 16)
    with pytest.raises(TrailerError):
        PutTrailer("commit", -1, "00" * 16, "00" * 16)
    with pytest.raises(TrailerError):
        PutTrailer("maybe", 1, "00" * 16, "00" * 16)  # type: ignore[arg-type]


@given(st.binary(max_size=80))
def test_garbage_parses_or_raises_trailer_error(data: bytes) -> None:
    try:
        t = decode_trailer(data)
    except TrailerError:
        return
    assert encode_trailer(t) == data
