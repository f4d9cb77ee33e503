"""The proxy's half of the ETag trailer (proxy/etagtrailer.py): which PUTs carry one, the
headers that announce it, the hashing, and commit versus cancel."""

from __future__ import annotations

import asyncio
import hashlib
import os

import xxhash
from multidict import CIMultiDict

from common.puttrailer import TRAILER_BYTES, decode_trailer, trailed_headers
from proxy.backend import Resp
from proxy.etagtrailer import (
    TRAILER_BODY_BYTES_MIN,
    BodyHasher,
    TrailerPlan,
    trailer_plan,
)
from proxy.objput import SMALL_PUT_BYTES_MAX, _checked


def test_every_put_too_big_for_put_buffered_carries_a_trailer() -> None:
    assert TRAILER_BODY_BYTES_MIN == SMALL_PUT_BYTES_MAX + 1


def test_which_puts_carry_a_trailer() -> None:
    big = str(TRAILER_BODY_BYTES_MIN)
    assert trailer_plan(CIMultiDict({"Content-Length": big})) == TrailerPlan(int(big), "")
    assert trailer_plan(CIMultiDict({"Content-Length": big, "ETag": '"ABC"'})) == TrailerPlan(
        int(big), "abc"
    )
    assert trailer_plan(CIMultiDict({"Content-Length": str(SMALL_PUT_BYTES_MAX)})) is None
    assert trailer_plan(CIMultiDict({"Transfer-Encoding": "chunked"})) is None
    assert trailer_plan(CIMultiDict({"Content-Length": big, "Transfer-Encoding": "x"})) is None
    assert trailer_plan(CIMultiDict({"Content-Length": "-5"})) is None
    assert trailer_plan(CIMultiDict()) is None


def test_trailed_headers_announce_where_the_body_ends() -> None:
    h = trailed_headers(CIMultiDict({"Content-Length": "100000", "X-Timestamp": "1"}), 100000)
    assert h["Content-Length"] == str(100000 + TRAILER_BYTES)
    assert h["X-Backend-Body-Length"] == "100000"
    assert h["X-Backend-Etag-Trailer"] == "1"
    assert h["X-Timestamp"] == "1"


def test_body_hasher_matches_hashlib_and_xxhash() -> None:
    pieces = [os.urandom(n) for n in (1, 1 << 20, 12345, 0, 70000)]
    body = b"".join(pieces)

    async def go() -> tuple[str, str]:
        hasher = BodyHasher()
        for p in pieces:
            await hasher.feed(p)
        assert hasher.total == len(body)
        return await hasher.finish()

    assert asyncio.run(go()) == (hashlib.md5(body).hexdigest(), xxhash.xxh3_128_hexdigest(body))


def test_a_wrong_client_etag_makes_the_trailer_cancel() -> None:
    md5, xxh = "ab" * 16, "cd" * 16
    assert decode_trailer(TrailerPlan(9, "").trailer(md5, xxh)).action == "commit"
    assert decode_trailer(TrailerPlan(9, md5).trailer(md5, xxh)).action == "commit"
    bad = decode_trailer(TrailerPlan(9, "ef" * 16).trailer(md5, xxh))
    assert (bad.action, bad.body_length, bad.md5_hex, bad.xxh3_128_hex) == ("cancel", 9, md5, xxh)


def test_a_201_with_another_etag_does_not_count() -> None:
    # An object server that ignored the trailer headers stored body + trailer under another
    # MD5: its 201 must not count toward the quorum.
    md5 = "ab" * 16
    good = Resp(201, CIMultiDict({"Etag": f'"{md5}"'}))
    other = Resp(201, CIMultiDict({"Etag": "cd" * 16}))
    refused = Resp(422, CIMultiDict())
    assert _checked(good, md5) is good
    assert _checked(refused, md5) is refused
    assert _checked(other, md5).status == 503
