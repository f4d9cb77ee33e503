"""Measure the GET path: plain sendfile vs verify-then-sendfile vs verify-then-write.

Not a test (no assertions on time): run by hand and copy the numbers into
docs/object-format.md.  ``.venv/bin/python -m tests.integration.objectd.bench_read_path``
It serves one object from a real device dir on 127.0.0.1 and reads it back with aiohttp,
several times per mode, on the default asyncio loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web

from common.server import running_app
from common.timestamps import Timestamp
from objectd.server import ObjectServerConf, make_object_app

SIZE_BYTES = 256 * 1024 * 1024
ROUNDS = 5


async def _plain_sendfile_app(path: Path) -> web.Application:
    app = web.Application()

    async def get(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    app.router.add_get("/f", get)
    return app


async def _time_get(url: str) -> float:
    async with aiohttp.ClientSession() as s:
        best: list[float] = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            async with s.get(url) as r:
                n = 0
                async for chunk in r.content.iter_chunked(1 << 20):
                    n += len(chunk)
            assert n == SIZE_BYTES, n
            best.append(time.perf_counter() - start)
        return statistics.median(best)


async def bench() -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        devices = Path(tmp) / "devices"
        (devices / "sda").mkdir(parents=True)
        conf = ObjectServerConf(devices, "p", "s", mount_check=True)
        body = os.urandom(SIZE_BYTES)
        app = await make_object_app(conf)
        async with running_app(app) as url, aiohttp.ClientSession() as s:
            hdrs = {
                "X-Timestamp": Timestamp.from_float(time.time()).internal,
                "Content-Type": "x/y",
                "Content-Length": str(len(body)),
            }
            async with s.put(url + "/sda/1/a/c/o", data=body, headers=hdrs) as r:
                assert r.status == 201
        (data,) = list(devices.rglob("*.data"))
        del body
        async with running_app(await _plain_sendfile_app(data)) as url:
            # FileResponse would also send the footer; the size difference is < 1 KiB.
            out["plain sendfile (no verification)"] = await _time_get_any(url + "/f")
        for label, c in (
            ("verify + sendfile", conf),
            ("verify + write", replace(conf, use_sendfile=False)),
        ):
            async with running_app(await make_object_app(c)) as url:
                out[label] = await _time_get(url + "/sda/1/a/c/o")
    return out


async def _time_get_any(url: str) -> float:
    async with aiohttp.ClientSession() as s:
        times: list[float] = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            async with s.get(url) as r:
                async for _chunk in r.content.iter_chunked(1 << 20):
                    pass
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def main() -> None:
    for name, runner in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
        results = runner(bench())
        for label, secs in results.items():
            mib_s = SIZE_BYTES / secs / 2**20
            print(f"{name:8s} {label:36s} {secs * 1000:8.1f} ms  {mib_s:8.0f} MiB/s")


if __name__ == "__main__":
    main()
