"""The object server's medium-PUT fast route (objectd/midput.py on common/leanserver): the same
answers as the aiohttp handler's streamed PUT, checked side by side (lane with the route, and
aiohttp alone) over raw sockets on 127.0.0.1; each test sees which side answered (aiohttp
adds a Server header; the fast lane does not)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import xxhash

from common.clock import ManualClock
from common.puttrailer import PutTrailer, encode_trailer
from common.server import FAST_ROUTES, running_app
from common.timestamps import Timestamp
from objectd.conf import STATE
from objectd.faulty import FaultPlan
from objectd.midput import MID_BODY_BYTES_MAX, mid_put_route
from objectd.server import ObjectServerConf, make_object_app
from objectd.smallput import SMALL_BODY_BYTES_MAX

OBJ = "/sda/0/AUTH_a/c/o%20bj"
IO_TIMEOUT_S = 10.0
BODY = os.urandom(512 * 1024 + 3)
MD5 = hashlib.md5(BODY).hexdigest()
XXH = xxhash.xxh3_128_hexdigest(BODY)
PLAIN = os.urandom(200 * 1024)  # a medium body sent without the trailer
Answer = tuple[int, dict[str, str], bytes]
Case = tuple[str, bytes, dict[str, str]]


def _conf(devices: Path, io_uring: bool = True) -> ObjectServerConf:
    """With `io_uring` (where the kernel allows it) a medium PUT is hashed and written on the
    loop and its fsyncs run in the kernel; without, all of it runs in a pool step."""
    (devices / "sda").mkdir(parents=True)
    return ObjectServerConf(
        io_uring=io_uring,
        devices_dir=devices,
        hash_path_prefix="pre",
        hash_path_suffix="suf",
        mount_check=True,
        threads_per_device=2,
        node_timeout_s=2.0,
        container_update_timeout_s=0.5,
    )


@asynccontextmanager
async def server(
    conf: ObjectServerConf, clock: ManualClock, mid: bool, plan: FaultPlan | None = None
) -> AsyncIterator[tuple[str, int]]:
    app = await make_object_app(conf, clock, fault_plan=plan, fast_lane=mid)
    if mid:
        app[FAST_ROUTES].append(mid_put_route(app[STATE]))
    async with running_app(app) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


async def exchange(addr: tuple[str, int], raw: bytes) -> Answer:
    """One request on a connection of its own (aiohttp closes after refusing a body)."""
    r, w = await asyncio.open_connection(*addr)
    try:
        w.write(raw)
        async with asyncio.timeout(IO_TIMEOUT_S):
            head = await r.readuntil(b"\r\n\r\n")
            while head.startswith(b"HTTP/1.1 100 "):  # the interim answer to Expect
                head = await r.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            body = await r.readexactly(int(headers.get("content-length", "0")))
    finally:
        w.close()
    return int(lines[0].split(" ")[1]), headers, body


def put(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"PUT {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def trailer(**kw: object) -> bytes:
    fields: dict[str, object] = {
        "action": "commit",
        "body_length": len(BODY),
        "md5_hex": MD5,
        "xxh3_128_hex": XXH,
    }
    fields.update(kw)
    return encode_trailer(PutTrailer(**fields))  # type: ignore[arg-type]


def ts(clock: ManualClock, delta: float = 0.0) -> str:
    return Timestamp.from_float(clock.time() + delta).internal


def trailed(headers: dict[str, str], body_len: int = len(BODY)) -> dict[str, str]:
    return {**headers, "X-Backend-Etag-Trailer": "1", "X-Backend-Body-Length": str(body_len)}


def _cases(clock: ManualClock) -> list[Case]:
    good = {"X-Timestamp": ts(clock), "Content-Type": "text/plain", "X-Object-Meta-K": "v"}
    later = {**good, "X-Timestamp": ts(clock, 1)}

    return [
        (OBJ, BODY + trailer(), trailed({**good, "ETag": MD5, "X-Trans-Id": "tx-1"})),  # 201
        (OBJ, BODY + trailer(), trailed(good)),  # same timestamp again: 409
        (OBJ, BODY + trailer(xxh3_128_hex="00" * 16), trailed(later)),  # changed: 422
        (OBJ, BODY + trailer(action="cancel"), trailed(later)),  # cancelled: 422
        (OBJ, BODY + trailer()[:-1] + b"\0", trailed(later)),  # garbled trailer: 400
        (OBJ, BODY + trailer(body_length=1), trailed(later)),  # lengths disagree: 400
        (OBJ, BODY + trailer(), trailed(later, len(BODY) - 1)),  # Content-Length: 400
        (OBJ, BODY + trailer(), {**trailed(later), "X-Backend-Body-Length": "x"}),  # 400
        (OBJ, BODY + trailer(), {**trailed(later), "X-Backend-Etag-Trailer": "9"}),  # 400
        (OBJ, BODY + trailer(), trailed({**later, "ETag": "0" * 32})),  # not its MD5: 422
        (OBJ, BODY + trailer(), {**trailed(later), "X-Timestamp": "nope"}),  # 400
        ("/sdz/0/AUTH_a/c/o", BODY + trailer(), trailed(later)),  # no such device: 507
        (OBJ, PLAIN, {**later, "ETag": "0" * 32}),  # plain body, wrong ETag: 422
        (OBJ, BODY + trailer(), trailed({**later, "If-None-Match": "*"})),  # exists: 412
        (OBJ, PLAIN, {**later, "ETag": hashlib.md5(PLAIN).hexdigest()}),  # plain body: 201
        (OBJ + "2", BODY + trailer(), trailed({**later, "X-Container-Host": "1.2.3.4:5"})),
    ]


async def _answers(conf: ObjectServerConf, clock: ManualClock, mid: bool) -> list[Answer]:
    out: list[Answer] = []
    async with server(conf, clock, mid) as addr:
        for path, body, headers in _cases(clock):
            status, h, text = await exchange(addr, put(path, body, headers))
            assert ("server" not in h) is mid, (status, text)  # which side answered
            assert h["x-backend-etag-trailer-support"] == "1"
            out.append((status, {"etag": h.get("etag", "")}, text))
        status, h, data = await exchange(addr, get(OBJ))
        out.append((status, {"etag": h.get("etag", ""), "meta": h["x-object-meta-k"]}, data))
    return out


@pytest.mark.parametrize("io_uring", [True, False])
def test_the_route_answers_as_the_streamed_put(tmp_path: Path, io_uring: bool) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    results = {
        mid: asyncio.run(_answers(_conf(tmp_path / str(mid), io_uring), clock, mid))
        for mid in (False, True)
    }
    statuses = [s for s, _h, _t in results[True]]
    assert statuses[:14] == [201, 409, 422, 422, 400, 400, 400, 400, 400, 422, 400, 507, 422, 412]
    assert statuses[14:] == [201, 400, 200]
    assert results[True] == results[False]
    assert results[True][0][1]["etag"] == MD5


@pytest.mark.parametrize("io_uring", [True, False])
def test_a_stored_body_reads_back_and_verifies(tmp_path: Path, io_uring: bool) -> None:
    from objectd.diskfile import verify_file

    clock = ManualClock(start=1_700_000_000.0)
    conf = _conf(tmp_path, io_uring)

    async def go() -> None:
        async with server(conf, clock, True) as addr:
            h = trailed({"X-Timestamp": ts(clock), "Content-Type": "a/b"})
            status, headers, _ = await exchange(addr, put(OBJ, BODY + trailer(), h))
            assert status == 201 and "server" not in headers and headers["etag"] == MD5
            status, headers, data = await exchange(addr, get(OBJ))
            assert status == 200 and data == BODY

    asyncio.run(go())
    (data_file,) = (tmp_path / "sda").rglob("*.data")
    assert list(verify_file(data_file))[-1] == len(BODY)  # blocks and MD5, as the auditor
    assert not list((tmp_path / "sda" / "tmp").iterdir())


def test_a_byte_changed_before_the_disk_is_refused(tmp_path: Path) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    conf = _conf(tmp_path)
    plan = FaultPlan(flip_byte_at=1000)

    async def go() -> None:
        async with server(conf, clock, True, plan) as addr:
            h = trailed({"X-Timestamp": ts(clock), "Content-Type": "a/b"})
            status, headers, _ = await exchange(addr, put(OBJ, BODY + trailer(), h))
            assert status == 422 and "server" not in headers

    asyncio.run(go())
    assert not [p for p in (tmp_path / "sda").rglob("*") if p.is_file() and p.suffix == ".data"]


@pytest.mark.parametrize(
    ("body_len", "trail", "extra", "lane"),
    [
        (MID_BODY_BYTES_MAX, True, {}, True),
        (MID_BODY_BYTES_MAX + 1, True, {}, False),  # over the route's limit: aiohttp streams it
        (MID_BODY_BYTES_MAX, False, {}, True),
        (MID_BODY_BYTES_MAX + 1, False, {}, False),
        (1024, True, {"Expect": "100-continue"}, False),  # Expect: aiohttp
        (1024, True, {}, True),  # a small trailed body: this route (the small one takes none)
        (SMALL_BODY_BYTES_MAX, False, {}, True),  # a small plain body: the small route
    ],
)
def test_which_puts_the_route_takes(
    tmp_path: Path, body_len: int, trail: bool, extra: dict[str, str], lane: bool
) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    conf = _conf(tmp_path)
    body = os.urandom(body_len)
    md5 = hashlib.md5(body).hexdigest()
    t = encode_trailer(PutTrailer("commit", body_len, md5, xxhash.xxh3_128_hexdigest(body)))

    async def go() -> None:
        async with server(conf, clock, True) as addr:
            h = {"X-Timestamp": ts(clock), "Content-Type": "a/b", **extra}
            raw = put(OBJ, body + t, trailed(h, body_len)) if trail else put(OBJ, body, h)
            status, headers, _ = await exchange(addr, raw)
            assert status == 201 and headers["etag"] == md5
            assert ("server" not in headers) is lane
            status, headers, data = await exchange(addr, get(OBJ))
            assert status == 200 and data == body

    asyncio.run(go())


def _damage_footer(data_file: Path) -> None:
    """Change the last byte of the file's trailer (its checksum): the footer no longer parses."""
    raw = bytearray(data_file.read_bytes())
    raw[-1] ^= 0xFF
    data_file.write_bytes(bytes(raw))


@pytest.mark.parametrize("mid", [True, False])
def test_damaged_versions_under_a_put(tmp_path: Path, mid: bool) -> None:
    """The PUT prologue judges an older version by its name alone (objectd/writecore.py
    `lookup_unless_refused`): a damaged older file is replaced and removed, not quarantined;
    a damaged file as new as the PUT is still quarantined and the PUT taken (its footer is
    read); an intact newer one still refuses it. On the lane and on aiohttp's streamed path."""
    clock = ManualClock(start=1_700_000_000.0)
    conf = _conf(tmp_path)
    sda = tmp_path / "sda"

    def data_files() -> list[Path]:
        return sorted((sda / "objects").rglob("*.data"))

    def quarantined() -> list[Path]:
        return sorted((sda / "quarantined").rglob("*.data"))

    async def go() -> None:
        async with server(conf, clock, mid) as addr:

            async def put_at(delta: float) -> int:
                h = trailed({"X-Timestamp": ts(clock, delta), "Content-Type": "a/b"})
                status, headers, _ = await exchange(addr, put(OBJ, BODY + trailer(), h))
                assert ("server" not in headers) is mid
                return status

            assert await put_at(0) == 201
            (old,) = data_files()
            _damage_footer(old)
            assert await put_at(1) == 201  # damaged and older: replaced
            (new,) = data_files()
            assert new != old and not old.exists() and not quarantined()
            assert await put_at(0.5) == 409  # intact and newer: refused
            _damage_footer(new)
            assert await put_at(1) == 201  # damaged and as new: quarantined, then stored
            assert len(quarantined()) == 1 and len(data_files()) == 1
            status, _h, data = await exchange(addr, get(OBJ))
            assert status == 200 and data == BODY

    asyncio.run(go())
