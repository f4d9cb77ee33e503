"""The object server's fast read routes (objectd/smallget.py on common/leanserver): the same
answers as the aiohttp handler, checked side by side with the fast lane on and off, over raw
sockets on 127.0.0.1 (aiohttp adds a Server header; the fast lane does not, so each case
also checks which side answered)."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvloop

from common.clock import ManualClock
from common.server import running_app
from objectd.reads import BODY_MAX_HEADER, WITHHELD_HEADER
from objectd.server import ObjectServerConf, make_object_app
from tests.integration.objectd.conftest import ts

pytestmark = [pytest.mark.integration]

IO_TIMEOUT_S = 10.0
SMALL = b"".join(bytes([i % 251]) for i in range(4096))
MEDIUM = b"m" * (200 * 1024)  # over the ranged whole-read size (64 KiB)
LARGE = b"L" * (2 * 1024 * 1024 + 5)  # over the whole-read size (1 MiB)
B = {BODY_MAX_HEADER: "65536"}
Answer = tuple[int, list[tuple[str, str]], bytes]


@asynccontextmanager
async def server(conf: ObjectServerConf, clock: ManualClock, fast_lane: bool) -> AsyncIterator[str]:
    app = await make_object_app(conf, clock, fast_lane=fast_lane)
    async with running_app(app) as url:
        yield url.removeprefix("http://")


async def exchange(
    hostport: str, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> Answer:
    """One request on a new connection; (status, headers but Date and Server, body)."""
    host, port = hostport.split(":")
    r, w = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"{method} {path} HTTP/1.1", "Host: x"]
        if body or method == "PUT":
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        w.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        async with asyncio.timeout(IO_TIMEOUT_S):
            head = await r.readuntil(b"\r\n\r\n")
            status_line, *rest = head.decode().split("\r\n")
            pairs = []
            for line in rest:
                if line:
                    k, _, v = line.partition(":")
                    pairs.append((k.strip().lower(), v.strip()))
            status = int(status_line.split(" ")[1])
            length = dict(pairs).get("content-length", "0")
            no_body = method == "HEAD" or status in (204, 304)
            data = b"" if no_body else await r.readexactly(int(length))
    finally:
        w.close()
    return status, sorted(pairs), data


def _put_headers(clock: ManualClock, delta: float, ctype: str = "text/plain") -> dict[str, str]:
    return {"X-Timestamp": ts(clock, delta), "Content-Type": ctype}


async def _store(url: str, clock: ManualClock) -> None:
    objs = [
        ("/sda/0/AUTH_a/c/small", SMALL, {"X-Object-Meta-Color": "blue", "Content-Encoding": "x"}),
        ("/sda/0/AUTH_a/c/medium", MEDIUM, {}),
        ("/sda/0/AUTH_a/c/large", LARGE, {}),
        ("/sda/0/AUTH_a/c/empty", b"", {}),
        ("/sda/0/AUTH_a/c/gone", b"abc", {}),
        ("/sda/0/AUTH_a/c/expiring", b"abc", {"X-Delete-At": str(int(clock.time()) + 100)}),
    ]
    for path, body, extra in objs:
        status, _h, _b = await exchange(url, "PUT", path, {**_put_headers(clock, 0), **extra}, body)
        assert status == 201, path
    status, _h, _b = await exchange(
        url, "DELETE", "/sda/0/AUTH_a/c/gone", {"X-Timestamp": ts(clock, 1)}
    )
    assert status == 204


def _cases(clock: ManualClock) -> list[tuple[str, str, dict[str, str], bool]]:
    """(method, path, headers, served by the fast lane)."""
    o = "/sda/0/AUTH_a/c/"
    etag = hashlib.md5(SMALL).hexdigest()
    future = email.utils.formatdate(clock.time() + 3600, usegmt=True)
    past = email.utils.formatdate(clock.time() - 3600, usegmt=True)
    return [
        ("GET", o + "small", B, True),
        ("GET", o + "small", {**B, "Range": "bytes=10-19"}, True),
        ("GET", o + "small", {**B, "Range": "bytes=-5"}, True),
        ("GET", o + "small", {**B, "Range": "bytes=4000-"}, True),
        ("GET", o + "small", {**B, "Range": "bytes=5000-6000"}, True),  # 416
        ("GET", o + "small", {**B, "Range": "bytes=x"}, True),  # ignored: whole
        ("GET", o + "small", {**B, "If-None-Match": f'"{etag}"'}, True),  # 304
        ("GET", o + "small", {**B, "If-Match": '"nope"'}, True),  # 412
        ("GET", o + "small", {**B, "If-Match": etag, "Range": "bytes=0-0"}, True),  # 206
        ("GET", o + "small", {**B, "If-Modified-Since": future}, True),  # 304
        ("GET", o + "small", {**B, "If-Unmodified-Since": past}, True),  # 412
        ("GET", o + "small", {**B, "If-Modified-Since": "garbage"}, True),  # ignored
        ("GET", o + "small", {BODY_MAX_HEADER: "100"}, True),  # withheld
        ("GET", o + "small", {BODY_MAX_HEADER: "junk"}, False),  # malformed: aiohttp, whole
        ("GET", o + "gone", B, True),  # tombstone: 404 with X-Backend-Timestamp
        ("GET", o + "missing", B, True),
        ("GET", o + "expiring", B, True),  # expired (the clock moves on): 404
        ("GET", o + "expiring", {**B, "X-Backend-Replication": "true"}, True),
        ("GET", o + "empty", B, True),
        ("GET", o + "medium", B, True),  # withheld
        ("GET", o + "medium", {BODY_MAX_HEADER: str(1 << 20)}, True),
        ("GET", o + "medium", {**B, "Range": "bytes=100-199"}, True),
        ("GET", o + "large", {BODY_MAX_HEADER: str(1 << 30)}, True),  # capped: withheld
        ("GET", o + "large", {**B, "Range": "bytes=1048570-1048589"}, True),
        ("GET", o + "large", {**B, "Range": "bytes=0-99999"}, True),  # withheld
        ("GET", "/sda/x/AUTH_a/c/small", B, True),  # 400
        ("GET", "/sdz/0/AUTH_a/c/small", B, True),  # 507
        ("HEAD", o + "small", {}, True),
        ("HEAD", o + "large", {}, True),
        ("HEAD", o + "small", {"Range": "bytes=1-2"}, True),
        ("HEAD", o + "small", {"Range": "bytes=9999-"}, True),  # 416
        ("HEAD", o + "small", {"If-None-Match": "*"}, True),  # 304
        ("HEAD", o + "gone", {}, True),
        ("HEAD", o + "missing", {}, True),
        ("HEAD", o + "empty", {}, True),
        # Not the lane's: multi-range, and GETs that do not name a body limit.
        ("GET", o + "small", {**B, "Range": "bytes=0-1,5-6"}, False),
        ("GET", o + "large", {**B, "Range": "bytes=0-99999,200000-299999"}, False),  # withheld
        ("GET", o + "small", {}, False),
        ("HEAD", o + "small", {"Range": "bytes=0-1,5-6"}, False),
    ]


async def _answers(conf: ObjectServerConf, clock: ManualClock, fast_lane: bool) -> list[Answer]:
    out = []
    async with server(conf, clock, fast_lane) as url:
        await _store(url, clock)
        clock.advance(200)  # "expiring" is past its X-Delete-At now
        for i, (method, path, headers, lane) in enumerate(_cases(clock)):
            status, pairs, body = await exchange(
                url, method, path, {**headers, "X-Trans-Id": f"tx-{i}"}
            )
            names = {k for k, _v in pairs}
            served_by_lane = "server" not in names
            assert served_by_lane is (fast_lane and lane), (method, path, headers)
            kept = [(k, v) for k, v in pairs if k not in ("date", "server")]
            boundary = dict(pairs).get("content-type", "").partition("boundary=")[2]
            if boundary:  # random per answer: compared as "B"
                kept = [(k, v.replace(boundary, "B")) for k, v in kept]
                body = body.replace(boundary.encode(), b"B")
            out.append((status, kept, body))
    return out


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_fast_reads_answer_as_the_aiohttp_handler(tmp_path: Path, loop: str) -> None:
    results = {}
    for fast in (False, True):
        clock = ManualClock(start=1_700_000_000.0)
        devices = tmp_path / f"{loop}-fast-{fast}"
        (devices / "sda").mkdir(parents=True)
        conf = ObjectServerConf(
            devices_dir=devices,
            hash_path_prefix="pre",
            hash_path_suffix="suf",
            mount_check=True,
            threads_per_device=2,
            node_timeout_s=2.0,
            container_update_timeout_s=0.5,
        )
        runner = uvloop.run if loop == "uvloop" else asyncio.run
        results[fast] = runner(_answers(conf, clock, fast))
    statuses = [s for s, _h, _b in results[True]]
    assert statuses == [
        200, 206, 206, 206, 416, 200, 304, 412, 206, 304, 412, 200, 204, 200, 404, 404, 404,
        200, 200, 204, 200, 206, 204, 206, 204, 400, 507,
        200, 200, 206, 416, 304, 404, 404, 200,
        206, 204, 200, 206,
    ]  # fmt: skip
    for i, (on, off) in enumerate(zip(results[True], results[False], strict=True)):
        assert on == off, (i, on[:2], off[:2])
    answers = results[True]
    h0 = dict(answers[0][1])
    assert answers[0][2] == SMALL and h0["x-object-meta-color"] == "blue"
    assert h0["etag"] == hashlib.md5(SMALL).hexdigest() and h0["content-length"] == "4096"
    assert (
        answers[1][2] == SMALL[10:20] and dict(answers[1][1])["content-range"] == "bytes 10-19/4096"
    )
    assert answers[12][2] == b"" and dict(answers[12][1])[WITHHELD_HEADER.lower()] == "4096"
    assert "x-backend-timestamp" in dict(answers[14][1])  # the tombstone's time
    assert "x-backend-timestamp" not in dict(answers[15][1])
    assert answers[20][2] == MEDIUM
    assert answers[23][2] == LARGE[1048570:1048590]
    assert dict(answers[24][1])[WITHHELD_HEADER.lower()] == "100000"
    assert dict(answers[28][1])["content-length"] == str(len(LARGE))


def test_a_corrupt_range_on_the_lane_is_a_404_never_wrong_bytes(
    conf: ObjectServerConf, devices_dir: Path, clock: ManualClock
) -> None:
    """A range of a large object is read on the lane after the open; a block that fails its
    checksum there is found before any byte is sent: 404, and the object is quarantined
    (aiohttp, which has sent its status line by then, cuts the connection instead)."""
    path = "/sda/0/AUTH_a/c/large"

    async def go() -> None:
        async with server(conf, clock, True) as url:
            status, _h, _b = await exchange(url, "PUT", path, _put_headers(clock, 0), LARGE)
            assert status == 201
            data_file = max(
                (p for p in devices_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
            )
            raw = bytearray(data_file.read_bytes())
            raw[len(LARGE) // 2] ^= 0xFF
            data_file.write_bytes(bytes(raw))
            ranged = {**B, "Range": "bytes=1048570-1048589"}
            status, pairs, body = await exchange(url, "GET", path, ranged)
            assert (status, body) == (404, b"") and "server" not in dict(pairs)
            status, _h, _b = await exchange(url, "HEAD", path, {})
            assert status == 404  # quarantined

    asyncio.run(go())
