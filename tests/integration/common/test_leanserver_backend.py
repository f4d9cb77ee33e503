"""proxy.backend.Backend.call against a real object server with its fast lane: small object
PUTs (and object HEADs) go through pools of their own, so a DELETE to the same server (which
moves its connection to aiohttp for good) does not take their connections off the fast lane."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from common.clock import ManualClock
from common.nodes import ErrorLimiter
from common.server import running_app
from common.timestamps import Timestamp
from objectd.server import ObjectServerConf, make_object_app
from proxy.backend import Backend
from ring import Device

pytestmark = [pytest.mark.integration]


def test_object_puts_stay_on_the_fast_lane(tmp_path: Path) -> None:
    (tmp_path / "sda").mkdir()
    conf = ObjectServerConf(
        devices_dir=tmp_path,
        hash_path_prefix="pre",
        hash_path_suffix="suf",
        mount_check=True,
        threads_per_device=2,
        node_timeout_s=2.0,
    )
    clock = ManualClock(start=1_700_000_000.0)

    async def run() -> None:
        app = await make_object_app(conf, clock)
        async with running_app(app) as url, aiohttp.ClientSession() as session:
            port = int(url.rsplit(":", 1)[1])
            node = Device(1, 1, 1, "127.0.0.1", port, "127.0.0.1", port, "sda", 1.0)
            backend = Backend(
                SimpleNamespace(),  # type: ignore[arg-type]  # call() uses no ring
                session,
                clock,
                conn_timeout_s=2.0,
                node_timeout_s=2.0,
                error_limiter=ErrorLimiter(clock, limit=10, interval_s=60),
            )
            try:
                servers = []
                for i in range(3):
                    ts = Timestamp.from_float(clock.time() + i).internal
                    headers = {"X-Timestamp": ts, "Content-Type": "a/b"}
                    put = await backend.call(node, "PUT", "/sda/0/a/c/o", headers, body=b"x")
                    head = await backend.call(node, "HEAD", "/sda/0/a/c/o", {})
                    ts = Timestamp.from_float(clock.time() + i + 0.5).internal
                    gone = await backend.call(node, "DELETE", "/sda/0/a/c/x", {"X-Timestamp": ts})
                    assert (put.status, head.status, gone.status) == (201, 200, 404)
                    servers.append(
                        (
                            put.headers.get("Server"),
                            head.headers.get("Server"),
                            gone.headers.get("Server"),
                        )
                    )
                # every PUT and object HEAD answered by the lean server (each kind on a pool
                # of its own: proxy/backend.py put_pool, read_pool), every DELETE by aiohttp
                assert all(p is None and h is None and d and "aiohttp" in d for p, h, d in servers)
                container = await backend.call(node, "PUT", "/sda/0/a/c", {}, body=b"")
                assert container.status == 400  # not an object path: the ordinary pool
                assert "aiohttp" in container.headers["Server"]
            finally:
                await backend.close()

    asyncio.run(asyncio.wait_for(run(), 60))
