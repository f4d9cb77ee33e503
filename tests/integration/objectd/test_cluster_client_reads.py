"""ObjectCluster's GETs ride the object server's fast lane (objectd/smallget.py): each asks for
the body whole (X-Backend-Body-Bytes-Max), a body over the server's 1 MiB is withheld and asked
for again without the header (aiohttp streams it), and a range longer than 1 MiB is asked for
without it at once. Real object servers on 127.0.0.1; the lane's answers carry no Server
header (aiohttp's do), which tells the two sides apart.

`WithholdingNode` is a fake that answers every GET "withheld", even one without the limit: the
client must count that as a failed node, not ask again forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from pathlib import Path

import pytest
from aiohttp import web

from common.clock import ManualClock
from common.leanhttp import LeanPool
from common.server import running_app
from objectd import cluster_client, reads
from objectd.cluster_client import ObjectCluster, QuorumError
from tests.integration.objectd.test_cluster_client_lean import (
    ACCOUNT,
    CONTAINER,
    _fake_app,
    _port,
    _ring,
    object_servers,
)

pytestmark = [pytest.mark.integration]

MIB = 1024 * 1024


def test_the_client_names_the_servers_headers() -> None:
    assert cluster_client.BODY_MAX_HEADER == reads.BODY_MAX_HEADER
    assert cluster_client.WITHHELD_HEADER == reads.WITHHELD_HEADER
    assert cluster_client.WHOLE_BODY_BYTES_MAX == reads.WHOLE_BODY_BYTES_MAX


def test_gets_are_answered_on_the_fast_lane_and_long_bodies_in_full(tmp_path: Path) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        async with contextlib.AsyncExitStack() as stack:
            urls = await object_servers(stack, tmp_path, clock)
            cluster = ObjectCluster(_ring(tmp_path, [_port(u) for u in urls], clock), clock)
            chunk = os.urandom(MIB)  # blockd's default chunk: exactly the lane's limit
            big = os.urandom(2 * MIB + 5)
            _, v_chunk = await cluster.put_versioned(ACCOUNT, CONTAINER, "chunk", chunk)
            _, v_big = await cluster.put_versioned(ACCOUNT, CONTAINER, "big", big)
            for version in (None, v_chunk):  # the quorum read and the known-version read
                got = await cluster.get(ACCOUNT, CONTAINER, "chunk", known_version=version)
                assert got is not None and got[1] == chunk
                assert "Server" not in got[0]  # the fast lane answered
            got = await cluster.get(ACCOUNT, CONTAINER, "chunk", byte_range=(4096, 8191))
            assert got is not None and got[1] == chunk[4096:8192] and "Server" not in got[0]
            for version in (None, v_big):  # withheld by the lane, then streamed by aiohttp
                got = await cluster.get(ACCOUNT, CONTAINER, "big", known_version=version)
                assert got is not None and got[1] == big
                assert "Server" in got[0]
            got = await cluster.get(ACCOUNT, CONTAINER, "big", byte_range=(1, MIB + 1))
            assert got is not None and got[1] == big[1 : MIB + 2]
            got = await cluster.get(ACCOUNT, CONTAINER, "big", byte_range=(MIB, 2 * MIB - 1))
            assert got is not None and got[1] == big[MIB : 2 * MIB] and "Server" not in got[0]
            await cluster.close()

    asyncio.run(run())


async def _lane_requests(pool: LeanPool, urls: list[str]) -> int:
    """Requests the servers' fast lanes have answered (their /metrics)."""
    total = 0
    for url in urls:
        r = await pool.request("127.0.0.1", _port(url), "GET", "/metrics", timeout_s=10.0)
        found = re.search(rb"^cairn_fast_lane_requests_total (\S+)$", r.body, re.M)
        assert found is not None
        total += int(float(found.group(1)))
    return total


def test_a_container_whose_bodies_are_withheld_is_read_without_the_limit(tmp_path: Path) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        pool = LeanPool(connect_timeout_s=5.0)
        async with contextlib.AsyncExitStack() as stack:
            urls = await object_servers(stack, tmp_path, clock)
            cluster = ObjectCluster(_ring(tmp_path, [_port(u) for u in urls], clock), clock)
            chunk = os.urandom(2 * MIB)  # a volume of 2 MiB chunks
            versions = [
                (await cluster.put_versioned(ACCOUNT, CONTAINER, f"c{i}", chunk))[1]
                for i in range(3)
            ]
            await cluster.put(ACCOUNT, "other", "small", b"s" * 100)
            before = await _lane_requests(pool, urls)
            got = await cluster.get(ACCOUNT, CONTAINER, "c0", known_version=versions[0])
            assert got is not None and got[1] == chunk
            first = await _lane_requests(pool, urls)
            assert first == before + 1  # the lane's 204, then aiohttp streamed it
            for i in (1, 2):
                got = await cluster.get(ACCOUNT, CONTAINER, f"c{i}", known_version=versions[i])
                assert got is not None and got[1] == chunk
            assert await _lane_requests(pool, urls) == first  # straight to aiohttp
            got = await cluster.get(ACCOUNT, "other", "small")  # other containers: the lane
            assert got is not None and got[1] == b"s" * 100 and "Server" not in got[0]
            await cluster.close()
        await pool.close()

    asyncio.run(run())


async def _withholding(request: web.Request) -> web.Response:
    """WithholdingNode: an object is there, and every GET's body is 'withheld'."""
    headers = {"X-Timestamp": "1700000000.00000", "X-Backend-Timestamp": "1700000000.00000"}
    if request.method == "GET":
        headers[reads.WITHHELD_HEADER] = "10"
        return web.Response(status=204, headers=headers)
    return web.Response(status=200, headers=headers)


def test_a_node_that_withholds_every_body_is_a_failed_node(tmp_path: Path) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        async with contextlib.AsyncExitStack() as stack:
            urls = [
                await stack.enter_async_context(running_app(_fake_app(_withholding)))
                for _ in range(3)
            ]
            cluster = ObjectCluster(_ring(tmp_path, [_port(u) for u in urls], clock), clock)
            with pytest.raises(QuorumError):
                await cluster.get(ACCOUNT, CONTAINER, "o")
            await cluster.close()

    asyncio.run(run())
