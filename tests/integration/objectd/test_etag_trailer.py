"""Large PUTs with the proxy's ETag trailer: faults between proxy and disk commit nothing.

Two layers: a real object server on 127.0.0.1 fed by a test-only "proxy" (raw HTTP) that
sends good, flipped, wrong, cancelled or missing trailers; and a real cluster driven by
python-swiftclient, where a wrong client ETag must give 422 and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

import pytest
import xxhash
from swiftclient import ClientException

from common.clock import ManualClock
from common.puttrailer import TRAILER_BYTES, PutTrailer, encode_trailer
from objectd.diskfile import load_metadata
from objectd.faulty import FaultPlan
from ring.hashing import hash_path
from tests.integration.objectd.conftest import object_server, run, ts

pytestmark = [pytest.mark.integration, pytest.mark.fault]

OBJ = "/sda/7/AUTH_a/c/o"
BODY = os.urandom(300_000)
MD5 = hashlib.md5(BODY).hexdigest()
XXH = xxhash.xxh3_128_hexdigest(BODY)


def _trailer(action: str = "commit", length: int = len(BODY), xxh: str = XXH) -> bytes:
    return encode_trailer(PutTrailer(action, length, MD5, xxh))  # type: ignore[arg-type]


async def _proxy_put(
    url: str, clock: ManualClock, body: bytes, trailer: bytes, extra: str = "", close: bool = False
) -> bytes:
    """What a proxy sends: headers announcing the trailer, the body, then `trailer` (which
    may be wrong or short). With `close` it hangs up after what it sent; returns the status
    line ("" if the server answered nothing before closing)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT {OBJ} HTTP/1.1\r\nHost: {host}\r\nX-Timestamp: {ts(clock)}\r\n"
        f"Content-Type: x/y\r\nContent-Length: {len(body) + TRAILER_BYTES}\r\n"
        f"X-Backend-Body-Length: {len(body)}\r\n{extra or 'X-Backend-Etag-Trailer: 1'}\r\n\r\n"
    )
    writer.write(head.encode() + body + trailer)
    await writer.drain()
    if close:
        writer.close()
        await writer.wait_closed()
        return b""
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return line


def _files(devices_dir: Path, pattern: str) -> list[Path]:
    return sorted((devices_dir / "sda").rglob(pattern))


async def _no_tmp_left(devices_dir: Path) -> None:
    for _ in range(300):  # the temp file is removed off the event loop (bounded wait)
        if not _files(devices_dir, "tmp/*"):
            return
        await asyncio.sleep(0.01)


def test_a_good_trailer_commits_the_proxys_md5(conf, clock, devices_dir) -> None:
    async def go() -> None:
        async with object_server(conf, clock) as (url, s):
            line = await _proxy_put(url, clock, BODY, _trailer())
            assert line.startswith(b"HTTP/1.1 201"), line
            async with s.get(url + OBJ) as r:
                assert r.status == 200 and r.headers["ETag"] == MD5
                assert await r.read() == BODY

    run(go())
    [data] = _files(devices_dir, "*.data")
    assert load_metadata(data).etag == MD5


FLIPPED = bytearray(BODY)
FLIPPED[123_456] ^= 0x40
# Over 1 MiB: the object server's ordinary (aiohttp, streamed) PUT path, not the whole-body one.
BIG = os.urandom(3 * 1024 * 1024 + 5)
BIG_FLIPPED = bytearray(BIG)
BIG_FLIPPED[2_500_000] ^= 0x01


def _v2_trailer(body: bytes) -> bytes:
    """A version 2 trailer (no MD5; the xxh3-128 is the ETag) for `body`."""
    return encode_trailer(PutTrailer("commit", len(body), "", xxhash.xxh3_128_hexdigest(body)))


V2 = "X-Backend-Etag-Trailer: 2"


@pytest.mark.parametrize(
    ("body", "trailer", "extra", "code"),
    [
        (bytes(FLIPPED), _trailer(), "", b"422"),  # a byte changed in transit
        (BODY, _trailer(xxh="00" * 16), "", b"422"),  # a wrong trailer
        (BODY, _trailer("cancel"), "", b"422"),  # the proxy found the client's ETag wrong
        (BODY, b"\xff" * TRAILER_BYTES, "", b"400"),  # a garbled trailer
        (BODY, _trailer(length=len(BODY) + 1), "", b"400"),
        (BODY, _trailer(), "X-Backend-Etag-Trailer: 3", b"400"),  # unknown version
        (BODY, _trailer(), f"X-Backend-Etag-Trailer: 1\r\nETag: {'0' * 32}", b"422"),
        (bytes(FLIPPED), _v2_trailer(BODY), V2, b"422"),  # version 2: a byte changed
        (bytes(BIG_FLIPPED), _v2_trailer(BIG), V2, b"422"),  # the same over 1 MiB
        (BIG, _v2_trailer(BIG), f"{V2}\r\nETag: {hashlib.md5(BIG).hexdigest()}", b"422"),
    ],
    ids=[
        "flipped-byte",
        "wrong-xxh3",
        "cancel",
        "garbled",
        "length",
        "version",
        "etag",
        "v2-flipped-byte",
        "v2-flipped-byte-3MiB",
        "v2-md5-etag-3MiB",
    ],
)
def test_a_bad_trailer_commits_nothing(
    conf, clock, devices_dir, body: bytes, trailer: bytes, extra: str, code: bytes
) -> None:
    async def go() -> None:
        async with object_server(conf, clock) as (url, s):
            line = await _proxy_put(url, clock, body, trailer, extra)
            assert line.split()[1] == code, line
            await _no_tmp_left(devices_dir)
            async with s.get(url + OBJ) as r:
                assert r.status == 404

    run(go())
    assert _files(devices_dir, "*.data") == []
    assert _files(devices_dir, "tmp/*") == []


@pytest.mark.parametrize("sent", [0, 20], ids=["before-trailer", "mid-trailer"])
def test_a_proxy_that_stops_before_the_trailer_ends_commits_nothing(
    conf, clock, devices_dir, sent: int
) -> None:
    async def go() -> None:
        async with object_server(conf, clock) as (url, s):
            await _proxy_put(url, clock, BODY, _trailer()[:sent], close=True)
            for _ in range(500):  # the server notices the hang-up (bounded wait)
                async with s.get(url + "/metrics") as r:
                    if 'method="PUT",service="object-server",status="499"' in await r.text():
                        break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the PUT was never answered 499")
            await _no_tmp_left(devices_dir)

    run(go())
    assert _files(devices_dir, "*.data") == []
    assert _files(devices_dir, "tmp/*") == []


def test_a_byte_flipped_between_socket_and_writer_commits_nothing(conf, clock, devices_dir) -> None:
    async def go() -> None:
        async with object_server(conf, clock, fault_plan=FaultPlan(flip_byte_at=200_000)) as (
            url,
            _s,
        ):
            line = await _proxy_put(url, clock, BODY, _trailer())
            assert line.startswith(b"HTTP/1.1 422"), line
            await _no_tmp_left(devices_dir)

    run(go())
    assert _files(devices_dir, "*.data") == []


# -- through the proxy of a real cluster, with python-swiftclient ----------------------------


def _stored(cluster, account: str, container: str, obj: str) -> list[Path]:
    """Data files (and temp files) of this object on every device of the cluster."""
    c = cluster.doc["cluster"]
    h = hash_path(c["hash_path_prefix"], c["hash_path_suffix"], account, container, obj)
    found = list(cluster.data_dir.rglob(f"*{h}*"))  # hash dirs and temp files
    return [f for p in found for f in ([p] if p.is_file() else list(p.iterdir()))]


def test_wrong_client_etag_is_422_and_no_replica_commits(cluster) -> None:
    conn = cluster.connection()
    c = f"trailer-{uuid.uuid4().hex[:8]}"
    conn.put_container(c)
    account = conn.url.rstrip("/").rsplit("/", 1)[1]
    body = os.urandom(1_500_000)  # above the small-PUT limit: the trailer path
    with pytest.raises(ClientException) as e:
        conn.put_object(c, "bad", body, etag="0" * 32)
    assert e.value.http_status == 422
    with pytest.raises(ClientException) as e:
        conn.head_object(c, "bad")
    assert e.value.http_status == 404
    assert _stored(cluster, account, c, "bad") == []
    etag = conn.put_object(c, "good", body, etag=hashlib.md5(body).hexdigest())
    assert etag == hashlib.md5(body).hexdigest()
    headers, got = conn.get_object(c, "good")
    assert got == body and headers["etag"] == etag
    assert len([p for p in _stored(cluster, account, c, "good") if p.suffix == ".data"]) >= 2


def test_a_small_trailed_put_is_not_taken_for_a_plain_small_put(conf, clock) -> None:
    # 1000 + 56 bytes without Expect would fit the object server's one-step small-PUT path,
    # which knows no trailer; the trailer headers must keep it on the streaming path.
    small = BODY[:1000]
    trailer = encode_trailer(
        PutTrailer(
            "commit", len(small), hashlib.md5(small).hexdigest(), xxhash.xxh3_128_hexdigest(small)
        )
    )

    async def go() -> None:
        async with object_server(conf, clock) as (url, s):
            line = await _proxy_put(url, clock, small, trailer)
            assert line.startswith(b"HTTP/1.1 201"), line
            async with s.get(url + OBJ) as r:
                assert await r.read() == small

    run(go())
