"""ObjectCluster (blockd's client) hashes a large body once and sends the ETag trailer to the
object servers that said they take it; small bodies and servers not heard from go plain.

Three real object servers behind one ring, real sockets; a recording pool (the lean client,
noting each PUT's headers on the way) shows what each PUT announced.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from common.clock import ManualClock
from common.leanhttp import Body, LeanPool, Response
from common.puttrailer import TRAILER_HEADER
from common.server import running_app
from objectd.cluster_client import TRAILER_BODY_BYTES_MIN, ObjectCluster
from ring import NewDevice, Ring, RingBuilder, write_ring
from tests.integration.objectd.test_trailer_capability import PREFIX, SUFFIX, _new_server

pytestmark = [pytest.mark.integration]


class RecordingPool(LeanPool):
    """A real LeanPool that notes, for every PUT, whether it announced the trailer."""

    def __init__(self) -> None:
        super().__init__(connect_timeout_s=5.0)
        self.trailed: list[bool] = []

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: Body | None = None,
        **kw: Any,
    ) -> Response:
        if method == "PUT":
            names = headers.keys() if isinstance(headers, Mapping) else (k for k, _ in headers)
            self.trailed.append(any(k.lower() == TRAILER_HEADER.lower() for k in names))
        return await super().request(host, port, method, target, headers, body, **kw)


def three_server_ring(tmp_path: Path, urls: Iterable[str], clock: ManualClock) -> Ring:
    """A 3-replica ring over one device (sda) on each of the servers at `urls`."""
    builder = RingBuilder(2, 3, 0)
    for i, url in enumerate(urls):
        port = int(url.rsplit(":", 1)[1])
        builder.add(NewDevice(1, i + 1, "127.0.0.1", port, "127.0.0.1", port, "sda", 1.0))
    builder.rebalance(seed=1)
    write_ring(tmp_path / "object.ring", builder.ring_data())
    return Ring(tmp_path / "object.ring", PREFIX, SUFFIX, clock=clock)


def test_large_bodies_go_trailed_once_the_servers_are_known(tmp_path: Path) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        pool = RecordingPool()
        sent = pool.trailed
        async with (
            running_app(await _new_server(tmp_path / "n1", clock)) as u1,
            running_app(await _new_server(tmp_path / "n2", clock)) as u2,
            running_app(await _new_server(tmp_path / "n3", clock)) as u3,
        ):
            ring = three_server_ring(tmp_path, (u1, u2, u3), clock)
            cluster = ObjectCluster(ring, clock, pool=pool)

            async def put_and_read(name: str, body: bytes) -> list[bool]:
                sent.clear()
                clock.advance(1.0)
                etag = await cluster.put(".acct", "vol", name, body)
                assert etag == hashlib.md5(body).hexdigest()
                got = await cluster.get(".acct", "vol", name)
                assert got is not None and got[1] == body
                return list(sent)

            big = os.urandom(TRAILER_BODY_BYTES_MIN + 12345)
            assert await put_and_read("first", big) == [False] * 3  # nothing known yet
            assert len(cluster.trailer_servers) == 3  # every answer advertised the trailer
            assert await put_and_read("second", big) == [True] * 3
            assert await put_and_read("small", os.urandom(4096)) == [False] * 3
            # An overwrite with a different large body reads back as the new one.
            assert await put_and_read("second", os.urandom(300_000)) == [True] * 3
            await cluster.close()  # a pool given to it stays open: its giver closes it
            assert pool.idle_connections("127.0.0.1", int(u1.rsplit(":", 1)[1])) > 0
            await pool.close()

    asyncio.run(run())
