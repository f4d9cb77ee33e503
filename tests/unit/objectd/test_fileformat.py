"""The object file footer: golden bytes, round trips, and every kind of damage detected."""

from __future__ import annotations

import struct

import pytest
import xxhash

from common.timestamps import Timestamp
from objectd.fileformat import (
    MAGIC,
    TRAILER,
    FileFormatError,
    ObjectMetadata,
    encode_footer,
    parse_footer,
)

GOLDEN_HEX = (
    "89a46b696e64a464617461a46e616d65a62f612f632f6fa974696d657374616d70b0313730303030303030302e"
    "3132333435ac636f6e74656e745f74797065aa746578742f706c61696eae636f6e74656e745f6c656e67746805"
    "a465746167d9203564343134303261626334623261373662393731396439313130313763353932a76865616465"
    "727381b3582d4f626a6563742d4d6574612d436f6c6f72a4626c7565ab626c6f636b5f6279746573ce00010000"
    "aa626c6f636b5f78786833c4089555e8555c62dcfd434149524e4f424a00010000000000c90000000000000005"
    "bd7584411de6a563"
)


def sample() -> ObjectMetadata:
    return ObjectMetadata(
        kind="data",
        name="/a/c/o",
        timestamp=Timestamp.parse("1700000000.12345"),
        content_type="text/plain",
        content_length=5,
        etag="5d41402abc4b2a76b9719d911017c592",
        headers={"X-Object-Meta-Color": "blue"},
        block_xxh3=xxhash.xxh3_64_digest(b"hello"),
    )


def parse_file(blob: bytes) -> ObjectMetadata:
    trailer = blob[-TRAILER.size :]
    meta_len = struct.unpack(">I", trailer[12:16])[0]
    meta = blob[len(blob) - TRAILER.size - meta_len : len(blob) - TRAILER.size]
    return parse_footer(meta, trailer, len(blob))


def test_golden_bytes():
    footer = encode_footer(sample())
    assert footer.hex() == GOLDEN_HEX
    magic, version, flags, meta_len, body_len, _ = TRAILER.unpack(footer[-32:])
    assert (magic, version, flags, body_len) == (MAGIC, 1, 0, 5)
    assert meta_len == len(footer) - 32


def test_round_trip_with_body():
    md = sample()
    assert parse_file(b"hello" + encode_footer(md)) == md


@pytest.mark.parametrize("kind", ["ts", "meta"])
def test_bodyless_kinds(kind):
    md = ObjectMetadata(kind=kind, name="/a/c/o", timestamp=Timestamp(1), headers={"A": "b"})
    assert parse_file(encode_footer(md)) == md


def test_every_single_byte_flip_in_the_footer_is_detected():
    footer = encode_footer(sample())
    blob = b"hello" + footer
    for i in range(5, len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(FileFormatError):
            parse_file(bytes(bad))


@pytest.mark.parametrize("cut", [0, 1, 10, 31, 32, 40])
def test_truncated_files_are_rejected(cut):
    blob = b"hello" + encode_footer(sample())
    with pytest.raises(FileFormatError):
        parse_file(blob[: len(blob) - cut - 1] if cut else blob[:-1])


def test_extra_body_byte_is_rejected():
    with pytest.raises(FileFormatError):
        parse_file(b"hello!" + encode_footer(sample()))


def test_invalid_metadata_is_refused_before_writing():
    with pytest.raises(FileFormatError):
        ObjectMetadata(kind="data", name="/a/c/o", timestamp=Timestamp(1), content_length=1)
    with pytest.raises(FileFormatError):
        ObjectMetadata(kind="ts", name="/a/c/o", timestamp=Timestamp(1), content_length=3)
    with pytest.raises(FileFormatError):
        ObjectMetadata(kind="data", name="no-slash", timestamp=Timestamp(1))
