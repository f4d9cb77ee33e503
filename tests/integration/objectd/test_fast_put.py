"""The object server's small-PUT fast route (objectd/smallput.py on common/leanserver): the
same answers as the aiohttp handler, checked side by side with the fast lane on and off, over
raw sockets on 127.0.0.1 so each test sees which side answered (aiohttp adds a Server
header; the fast lane does not)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import uvloop

from common.clock import ManualClock
from common.puttrailer import TRAILER_SUPPORT_HEADER
from common.server import running_app
from objectd.conf import STATE
from objectd.server import ObjectServerConf, make_object_app
from tests.integration.objectd.conftest import ts

pytestmark = [pytest.mark.integration]

OBJ = "/sda/0/AUTH_a/c/o%20bj"
IO_TIMEOUT_S = 10.0
Answer = tuple[int, dict[str, str], bytes]


@asynccontextmanager
async def server(
    conf: ObjectServerConf, clock: ManualClock, fast_lane: bool
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    app = await make_object_app(conf, clock, fast_lane=fast_lane)
    async with running_app(app) as url:
        host, port = url.removeprefix("http://").split(":")
        r, w = await asyncio.open_connection(host, int(port))
        try:
            yield r, w
        finally:
            w.close()


async def exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], raw: bytes) -> Answer:
    r, w = conn
    w.write(raw)
    async with asyncio.timeout(IO_TIMEOUT_S):
        head = await r.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = await r.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ")[1]), headers, body


def put(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"PUT {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def _cases(clock: ManualClock) -> list[tuple[str, bytes, dict[str, str]]]:
    body = b"x" * 4096
    good = {"X-Timestamp": ts(clock), "Content-Type": "text/plain", "X-Object-Meta-K": "v"}
    return [
        (OBJ, body, {**good, "ETag": hashlib.md5(body).hexdigest(), "X-Trans-Id": "tx-1"}),
        (OBJ, body, {**good}),  # same timestamp again: 409
        (OBJ, b"new", {**good, "X-Timestamp": ts(clock, 1), "ETag": "0" * 32}),  # 422
        (OBJ, b"z", {"Content-Type": "a/b"}),  # no X-Timestamp: 400
        (OBJ, b"z", {**good, "X-Timestamp": "nope"}),  # 400
        (OBJ, b"z", {**good, "X-Timestamp": ts(clock, 2), "X-Delete-At": "1"}),  # past: 400
        ("/sdz/0/AUTH_a/c/o", b"z", {**good}),  # no such device: 507
        (OBJ, b"", {**good, "X-Timestamp": ts(clock, 3), "If-None-Match": "*"}),  # 412
        (OBJ + "2", b"", {**good, "X-Container-Host": "1.2.3.4:5"}),  # targets mismatch: 400
    ]


async def _answers(
    conf: ObjectServerConf, clock: ManualClock, fast_lane: bool
) -> list[tuple[int, str, bytes]]:
    out = []
    async with server(conf, clock, fast_lane) as conn:
        for path, body, headers in _cases(clock):
            status, h, text = await exchange(conn, put(path, body, headers))
            assert ("server" not in h) is fast_lane  # which side answered
            assert h[TRAILER_SUPPORT_HEADER.lower()] == "1"
            assert h["x-trans-id"]
            out.append((status, h.get("etag", ""), text))
        status, h, data = await exchange(conn, get(OBJ))
        assert "aiohttp" in h["server"]  # a GET goes to aiohttp
        out.append((status, h.get("x-object-meta-k", ""), data))
    return out


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_fast_route_answers_as_the_aiohttp_handler(
    tmp_path: Path, clock: ManualClock, loop: str
) -> None:
    results = {}
    # The fast lane's PUTs commit through io_uring by default (common/syncring.py); "pool":
    # the fast lane with every fsync in the device's thread pool.
    for fast in (False, True, "pool"):
        devices = tmp_path / f"fast-{fast}"
        (devices / "sda").mkdir(parents=True)
        conf = ObjectServerConf(
            io_uring=fast != "pool",
            devices_dir=devices,
            hash_path_prefix="pre",
            hash_path_suffix="suf",
            mount_check=True,
            threads_per_device=2,
            node_timeout_s=2.0,
            container_update_timeout_s=0.5,
        )
        runner = uvloop.run if loop == "uvloop" else asyncio.run
        results[fast] = runner(_answers(conf, clock, bool(fast)))
    statuses = [s for s, _e, _t in results[True]]
    assert statuses == [201, 409, 422, 400, 400, 400, 507, 412, 400, 200]
    assert results[True] == results[False] == results["pool"]
    assert results[True][0][1] == hashlib.md5(b"x" * 4096).hexdigest()
    assert results[True][-1] == (200, "v", b"x" * 4096)


def test_trailed_puts_take_the_medium_route(conf: ObjectServerConf, clock: ManualClock) -> None:
    async def go() -> None:
        async with server(conf, clock, True) as conn:
            h = {"X-Timestamp": ts(clock), "Content-Type": "a/b"}
            status, headers, _ = await exchange(conn, put(OBJ, b"abc", h))
            assert status == 201 and "server" not in headers
            h["X-Timestamp"] = ts(clock, 1)
            h["X-Backend-Etag-Trailer"] = "1"
            h["X-Backend-Body-Length"] = "nope"
            status, headers, _ = await exchange(conn, put(OBJ, b"abc", h))
            assert status == 400 and "server" not in headers  # the medium-PUT route's answer

    asyncio.run(go())


def test_body_over_the_medium_limit_stays_on_aiohttp(
    conf: ObjectServerConf, clock: ManualClock
) -> None:
    from objectd.midput import MID_BODY_BYTES_MAX

    async def go() -> None:
        async with server(conf, clock, True) as conn:
            body = b"b" * (MID_BODY_BYTES_MAX + 1)
            h = {"X-Timestamp": ts(clock), "Content-Type": "a/b"}
            status, headers, _ = await exchange(conn, put(OBJ, body, h))
            assert status == 201 and "aiohttp" in headers["server"]
            status, headers, data = await exchange(conn, get(OBJ))
            assert status == 200 and data == body

    asyncio.run(go())


@pytest.mark.parametrize("io_uring", [True, False])
def test_small_puts_commit_through_the_ring_when_there_is_one(
    conf: ObjectServerConf, clock: ManualClock, io_uring: bool
) -> None:
    conf = replace(conf, io_uring=io_uring)

    async def go() -> tuple[int, int | None]:
        app = await make_object_app(conf, clock)
        async with running_app(app) as url:
            host, port = url.removeprefix("http://").split(":")
            r, w = await asyncio.open_connection(host, int(port))
            h = {"X-Timestamp": ts(clock), "Content-Type": "a/b"}
            for i in range(3):
                status, _, _ = await exchange((r, w), put(f"{OBJ}{i}", b"abc", h))
                assert status == 201
            status, _, data = await exchange((r, w), get(f"{OBJ}2"))
            assert status == 200 and data == b"abc"
            w.close()
            ring = app[STATE].devices.ring
            return status, None if ring is None else ring.chains_run

    _, chains = asyncio.run(go())
    if io_uring and chains is None:
        pytest.skip("io_uring refused here (kernel.io_uring_disabled or a seccomp profile)")
    # The first PUT made the device's objects directory, which stays in the pool's step
    # (objectd/splitwrite.py); each later one ran two chains: before and after the rename.
    assert chains == (4 if io_uring else None)
