"""GET/HEAD over HTTP: ranges, conditional requests, and never serving a corrupt byte."""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import os
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from tests.integration.objectd.conftest import object_server, run, ts

pytestmark = pytest.mark.integration

OBJ = "/sda/7/AUTH_a/c/o"


def body_of(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


async def put(s, url, clock, body: bytes, delta: float = 0.0) -> None:
    hdrs = {"X-Timestamp": ts(clock, delta), "Content-Type": "application/x-test"}
    hdrs["Content-Length"] = str(len(body))
    async with s.put(url + OBJ, data=io.BytesIO(body), headers=hdrs) as r:
        assert r.status == 201


@pytest.mark.parametrize("use_sendfile", [True, False])
@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=65530-65545", 65530, 65545),  # crosses a 64 KiB block boundary
        ("bytes=-5", 199995, 199999),
        ("bytes=199990-", 199990, 199999),
        ("bytes=5-999999", 5, 199999),
    ],
)
def test_single_range(conf, clock, spec, first, last, use_sendfile):
    body = body_of(200_000)
    conf = replace(conf, use_sendfile=use_sendfile, read_chunk_bytes=65536)

    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, body)
            async with s.get(url + OBJ, headers={"Range": spec}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes {first}-{last}/{len(body)}"
                assert await r.read() == body[first : last + 1]

    run(go())


def test_whole_large_object_streams_intact(conf, clock):
    body = os.urandom(3 * 1024 * 1024 + 17)

    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, body)
            async with s.get(url + OBJ) as r:
                assert r.status == 200
                got = await r.read()
            assert hashlib.md5(got).hexdigest() == hashlib.md5(body).hexdigest()

    run(go())


def test_multi_range_is_multipart_byteranges(conf, clock):
    body = body_of(100_000)

    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, body)
            async with s.get(url + OBJ, headers={"Range": "bytes=0-9,70000-70009,-3"}) as r:
                assert r.status == 206
                ctype = r.headers["Content-Type"]
                raw = await r.read()
                assert int(r.headers["Content-Length"]) == len(raw)
            return ctype, raw

    ctype, raw = run(go())
    assert ctype.startswith("multipart/byteranges;boundary=")
    msg = email.message_from_bytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + raw, policy=email.policy.HTTP
    )
    parts = list(msg.iter_parts())
    assert [p["Content-Range"] for p in parts] == [
        "bytes 0-9/100000",
        "bytes 70000-70009/100000",
        "bytes 99997-99999/100000",
    ]
    assert [p.get_payload(decode=True) for p in parts] == [
        body[0:10],
        body[70000:70010],
        body[99997:],
    ]
    assert all(p["Content-Type"] == "application/x-test" for p in parts)


@pytest.mark.parametrize("spec", ["bytes=100000-", "bytes=200000-200010", "bytes=-0"])
def test_unsatisfiable_range_is_416(conf, clock, spec):
    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, body_of(100_000))
            async with s.get(url + OBJ, headers={"Range": spec}) as r:
                assert r.status == 416
                assert r.headers["Content-Range"] == "bytes */100000"

    run(go())


@pytest.mark.parametrize("spec", ["bytes=5-1", "items=0-1", "bytes=a-b", "garbage"])
def test_malformed_range_is_ignored(conf, clock, spec):
    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, b"0123456789")
            async with s.get(url + OBJ, headers={"Range": spec}) as r:
                assert r.status == 200
                assert await r.read() == b"0123456789"

    run(go())


def test_conditional_requests(conf, clock):
    body = b"conditional"
    etag = hashlib.md5(body).hexdigest()

    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, body)

            async def status(method: str, **headers: str) -> int:
                async with s.request(method, url + OBJ, headers=headers) as r:
                    await r.read()
                    return int(r.status)

            assert await status("GET", **{"If-Match": f'"{etag}"'}) == 200
            assert await status("GET", **{"If-Match": '"nope"'}) == 412
            assert await status("HEAD", **{"If-Match": "*"}) == 200
            assert await status("GET", **{"If-None-Match": etag}) == 304
            assert await status("GET", **{"If-None-Match": '"other", "*"'}) == 304
            assert await status("GET", **{"If-None-Match": '"other"'}) == 200
            later = "Tue, 14 Nov 2023 22:20:00 GMT"  # after 1_700_000_000 (22:13:20)
            earlier = "Tue, 14 Nov 2023 22:00:00 GMT"
            assert await status("GET", **{"If-Modified-Since": later}) == 304
            assert await status("GET", **{"If-Modified-Since": earlier}) == 200
            assert await status("GET", **{"If-Modified-Since": "not a date"}) == 200
            assert await status("GET", **{"If-Unmodified-Since": earlier}) == 412
            assert await status("GET", **{"If-Unmodified-Since": later}) == 200
            # If-None-Match takes precedence over If-Modified-Since
            assert (
                await status("GET", **{"If-None-Match": '"x"', "If-Modified-Since": later}) == 200
            )

    run(go())


def _data_file(devices_dir: Path) -> Path:
    (path,) = list((devices_dir / "sda" / "objects").rglob("*.data"))
    return path


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("use_sendfile", [True, False])
def test_corrupt_block_aborts_the_response_and_quarantines(conf, clock, devices_dir, use_sendfile):
    body = os.urandom(5 * 65536)
    conf = replace(conf, use_sendfile=use_sendfile, read_chunk_bytes=65536)

    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, body)
            data = _data_file(devices_dir)
            _flip(data, 3 * 65536 + 5)  # block 3: the first three blocks are still good
            received = bytearray()
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(url + OBJ) as r:
                    assert r.status == 200
                    async for chunk in r.content.iter_any():
                        received += chunk
            # what arrived is a correct prefix, and nothing of the bad block
            assert len(received) <= 3 * 65536
            assert bytes(received) == body[: len(received)]
            async with s.get(url + OBJ) as r:
                assert r.status == 404
            async with s.get(url + "/metrics") as r:
                assert "cairn_object_quarantines_total 1.0" in await r.text()
            return data

    data = run(go())
    assert not data.exists()
    quarantined = list((devices_dir / "sda" / "quarantined" / "objects").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name == data.parent.name
    assert (quarantined[0] / data.name).exists()


def test_corrupt_metadata_footer_is_quarantined_on_head(conf, clock, devices_dir):
    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, b"some body")
            data = _data_file(devices_dir)
            _flip(data, data.stat().st_size - 40)  # inside the msgpack record
            async with s.head(url + OBJ) as r:
                assert r.status == 404

    run(go())
    assert len(list((devices_dir / "sda" / "quarantined" / "objects").iterdir())) == 1


def test_range_get_verifies_only_needed_blocks_but_never_serves_bad_ones(conf, clock, devices_dir):
    body = os.urandom(4 * 65536)

    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, body)
            _flip(_data_file(devices_dir), 2 * 65536)
            async with s.get(url + OBJ, headers={"Range": "bytes=0-99"}) as r:
                assert r.status == 206 and await r.read() == body[:100]
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(url + OBJ, headers={"Range": "bytes=131000-131100"}) as r:
                    await r.read()
            async with s.get(url + OBJ, headers={"Range": "bytes=0-99"}) as r:
                assert r.status == 404

    run(go())
