"""GET/HEAD of small objects, which are opened, read, verified and closed in one pool step
(bodies up to 64 KiB; up to 1 MiB for a GET without a Range header)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
from pathlib import Path

import pytest

from objectd.reads import SMALL_READ_BYTES_MAX, WHOLE_READ_BYTES_MAX
from tests.integration.objectd.conftest import object_server, run, ts

pytestmark = pytest.mark.integration

OBJ = "/sda/7/AUTH_a/c/o"
BODY = bytes(i * 13 % 251 for i in range(4096))


async def put(s, url, clock, body: bytes) -> None:
    hdrs = {"X-Timestamp": ts(clock), "Content-Type": "application/x-small"}
    hdrs["Content-Length"] = str(len(body))
    hdrs["X-Object-Meta-Color"] = "blue"
    async with s.put(url + OBJ, data=io.BytesIO(body), headers=hdrs) as r:
        assert r.status == 201


def test_small_get_and_head_answer_like_any_other(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, BODY)
            async with s.get(url + OBJ) as r:
                assert r.status == 200
                assert await r.read() == BODY
                assert r.headers["Content-Type"] == "application/x-small"
                assert r.headers["Content-Length"] == str(len(BODY))
                assert r.headers["ETag"] == hashlib.md5(BODY).hexdigest()
                assert r.headers["X-Object-Meta-Color"] == "blue"
                assert r.headers["Accept-Ranges"] == "bytes"
                assert r.headers["X-Trans-Id"]
            async with s.head(url + OBJ) as r:
                assert r.status == 200
                assert r.headers["Content-Length"] == str(len(BODY))
                assert r.headers["Content-Type"] == "application/x-small"
                assert await r.read() == b""
            async with s.get(url + "/metrics") as r:
                assert f"cairn_object_bytes_out_total {float(len(BODY))}" in await r.text()

    run(go())


def test_small_ranges_single_and_multipart(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, BODY)
            async with s.get(url + OBJ, headers={"Range": "bytes=10-19"}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes 10-19/{len(BODY)}"
                assert await r.read() == BODY[10:20]
            async with s.get(url + OBJ, headers={"Range": "bytes=0-1,-3"}) as r:
                assert r.status == 206
                ctype = r.headers["Content-Type"]
                raw = await r.read()
            assert ctype.startswith("multipart/byteranges")
            msg = email.message_from_bytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw,
                policy=email.policy.HTTP,
            )
            parts = [p.get_payload(decode=True) for p in msg.iter_parts()]
            assert parts == [BODY[0:2], BODY[-3:]]
            async with s.get(url + OBJ, headers={"Range": "bytes=99999-"}) as r:
                assert r.status == 416
            async with s.get(
                url + OBJ, headers={"If-None-Match": hashlib.md5(BODY).hexdigest()}
            ) as r:
                assert r.status == 304

    run(go())


def test_empty_object(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, b"")
            async with s.get(url + OBJ) as r:
                assert r.status == 200
                assert r.headers["Content-Length"] == "0"
                assert await r.read() == b""

    run(go())


def _data_file(devices_dir: Path) -> Path:
    (path,) = list((devices_dir / "sda" / "objects").rglob("*.data"))
    return path


def test_corrupt_small_object_is_quarantined_and_not_found(conf, clock, devices_dir):
    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, BODY)
            data = _data_file(devices_dir)
            with data.open("r+b") as f:  # flip one body byte; the footer stays valid
                f.seek(100)
                b = f.read(1)
                f.seek(100)
                f.write(bytes([b[0] ^ 0xFF]))
            # HEAD does not read the body: the object still looks fine
            async with s.head(url + OBJ) as r:
                assert r.status == 200
            # GET finds the bad block before sending anything: not a byte of it goes out
            async with s.get(url + OBJ) as r:
                assert r.status == 404
            async with s.get(url + "/metrics") as r:
                assert "cairn_object_quarantines_total 1.0" in await r.text()
            return data

    data = run(go())
    assert not data.exists()
    quarantined = list((devices_dir / "sda" / "quarantined" / "objects").iterdir())
    assert len(quarantined) == 1 and (quarantined[0] / data.name).exists()


@pytest.mark.parametrize("size", [SMALL_READ_BYTES_MAX + 1, WHOLE_READ_BYTES_MAX + 1])
def test_objects_above_the_limits_answer_the_same(conf, clock, size):
    # SMALL + 1: read whole without a Range, streamed with one; WHOLE + 1: streamed both ways.
    body = bytes(i % 251 for i in range(size))

    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, body)
            async with s.get(url + OBJ) as r:
                assert r.status == 200
                assert await r.read() == body
            async with s.get(url + OBJ, headers={"Range": "bytes=5000-60000"}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes 5000-60000/{size}"
                assert await r.read() == body[5000:60001]

    run(go())


def test_corrupt_whole_read_object_is_quarantined_before_a_byte_goes_out(conf, clock, devices_dir):
    body = bytes(i % 251 for i in range(512 * 1024))  # a blockd chunk's size

    async def go():
        async with object_server(conf, clock) as (url, s):
            await put(s, url, clock, body)
            with _data_file(devices_dir).open("r+b") as f:  # a byte in the 7th block
                f.seek(400_000)
                b = f.read(1)
                f.seek(400_000)
                f.write(bytes([b[0] ^ 0xFF]))
            async with s.get(url + OBJ) as r:
                assert r.status == 404  # found in the pool step, before the status line
            async with s.get(url + OBJ) as r:
                assert r.status == 404  # quarantined: gone

    run(go())
