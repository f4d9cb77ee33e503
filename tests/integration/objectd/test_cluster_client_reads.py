"""ObjectCluster's GETs ride the object server's fast lane (objectd/smallget.py): each asks for
the body whole (X-Backend-Body-Bytes-Max), a body over the server's 1 MiB is withheld and asked
for again without the header (aiohttp streams it), and a range longer than 1 MiB is asked for
without it at once. Real object servers on 127.0.0.1; the lane's answers carry no Server
header (aiohttp's do), which tells the two sides apart.

`WithholdingNode` is a fake that answers every GET "withheld", even one without the limit: the
client must count that as a failed node, not ask again forever. `TruncatingNode` (asyncio
stand-in) withholds, then on the retry without the limit sends half the body and closes: a
failed node too, never a short answer. A replica corrupted on disk is quarantined by its server
and the read is answered from another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from common.clock import ManualClock
from common.leanhttp import LeanPool
from common.server import running_app
from common.wholebody import BODY_MAX_HEADER, WITHHELD_HEADER
from objectd.client import object_url
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
        headers[WITHHELD_HEADER] = "10"
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


def _flip_a_body_byte(devices_dir: Path) -> Path:
    """Flip one byte of the body of the only .data file under `devices_dir` (the body comes
    first in the file, objectd/fileformat.py); the file's path."""
    (data,) = devices_dir.glob("sda/objects/**/*.data")
    with open(data, "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    return data


@pytest.mark.parametrize("known", [False, True], ids=["quorum-read", "known-version"])
def test_a_corrupt_replica_asked_first_is_quarantined_and_another_answers(
    tmp_path: Path, known: bool
) -> None:
    """The node asked first (ring order, shuffle off) holds a 1 MiB chunk with one byte
    flipped on disk: its fast lane finds the checksum mismatch before sending a byte,
    quarantines the hash directory and answers 404; the read still returns the right bytes
    from another replica. Fails if the corrupt body were served (wrong bytes), if its 404
    ended the read (None), or if the server kept the corrupt file in place."""

    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        async with contextlib.AsyncExitStack() as stack:
            urls = await object_servers(stack, tmp_path, clock)
            ports = [_port(u) for u in urls]
            ring = _ring(tmp_path, ports, clock)
            cluster = ObjectCluster(ring, clock)
            cluster.shuffle_reads = False
            chunk = os.urandom(MIB)
            _, version = await cluster.put_versioned(ACCOUNT, CONTAINER, "chunk", chunk)
            part = ring.get_part(ACCOUNT, CONTAINER, "chunk")
            node = ring.get_part_nodes(part)[0]  # asked first: shuffle is off
            first = ports.index(node.port)
            corrupt = _flip_a_body_byte(tmp_path / f"n{first}")
            got = await cluster.get(
                ACCOUNT, CONTAINER, "chunk", known_version=version if known else None
            )
            assert got is not None and got[1] == chunk
            assert not corrupt.exists()
            assert list((tmp_path / f"n{first}/sda/quarantined/objects").iterdir())
            # The corrupt node now answers the object as missing, on either lane.
            target = object_url("", node.device, part, ACCOUNT, CONTAINER, "chunk")
            for headers in ({BODY_MAX_HEADER: str(MIB)}, {}):
                r = await cluster.pool.request(
                    "127.0.0.1", node.port, "GET", target, headers, timeout_s=10.0
                )
                assert r.status == 404
            await cluster.close()

    asyncio.run(run())


@contextlib.asynccontextmanager
async def truncating_node(seen: list[tuple[str, bool]]) -> AsyncIterator[int]:
    """TruncatingNode: holds a 2 MiB object; a GET with the body limit is answered withheld
    (204), a GET without it with Content-Length 2 MiB and only 1 MiB of body, then the
    connection is closed; a HEAD answers the object's headers; anything else 503 (and a
    close). Each request's method and whether it carried the limit go to `seen`; its port."""
    ts = "1700000000.00000"
    common = f"X-Timestamp: {ts}\r\nX-Backend-Timestamp: {ts}\r\n"

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                method = head.split(b" ", 1)[0].decode()
                limited = BODY_MAX_HEADER.lower().encode() in head.lower()
                seen.append((method, limited))
                if method == "GET" and limited:
                    w.write(
                        f"HTTP/1.1 204 No Content\r\n{common}"
                        f"{WITHHELD_HEADER}: {2 * MIB}\r\n\r\n".encode()
                    )
                elif method in ("GET", "HEAD"):
                    found = f"HTTP/1.1 200 OK\r\n{common}Content-Length: {2 * MIB}\r\n\r\n"
                    w.write(found.encode())
                    if method == "GET":
                        w.write(b"x" * MIB)  # half the body, then the connection drops
                        await w.drain()
                        break
                else:
                    w.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                    break
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def test_a_body_cut_short_after_the_withheld_answer_fails_that_node(tmp_path: Path) -> None:
    """The node asked first (shuffle off) withholds the body, then on the retry without the
    limit sends half of a 2 MiB body and closes: the client counts it a failed node and gets
    the object from a real replica. Fails if the client took the short body (wrong bytes), or
    gave up on the object (None or QuorumError) instead of asking another node."""

    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        seen: list[tuple[str, bool]] = []
        async with contextlib.AsyncExitStack() as stack:
            urls = await object_servers(stack, tmp_path, clock, n=2)
            bad = await stack.enter_async_context(truncating_node(seen))
            ring = _ring(tmp_path, [bad] + [_port(u) for u in urls], clock)
            obj = "o"
            assert ring.get_part_nodes(ring.get_part(ACCOUNT, CONTAINER, obj))[0].port == bad
            writer = ObjectCluster(ring, clock)  # the bad node refuses the PUT: 2 of 3 stored
            body = os.urandom(2 * MIB)
            _, version = await writer.put_versioned(ACCOUNT, CONTAINER, obj, body)
            await writer.close()
            seen.clear()
            for known in (None, version):
                cluster = ObjectCluster(ring, clock)
                cluster.shuffle_reads = False
                got = await cluster.get(ACCOUNT, CONTAINER, obj, known_version=known)
                assert got is not None and got[1] == body
                assert seen[:2] == [("GET", True), ("GET", False)]
                seen.clear()
                await cluster.close()

    asyncio.run(run())


def test_bodies_cut_short_on_every_node_fail_the_read(tmp_path: Path) -> None:
    """Every node withholds, then cuts the body short: the read raises QuorumError rather
    than answer 1 MiB of a 2 MiB object."""

    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        seen: list[tuple[str, bool]] = []
        async with contextlib.AsyncExitStack() as stack:
            ports = [await stack.enter_async_context(truncating_node(seen)) for _ in range(3)]
            cluster = ObjectCluster(_ring(tmp_path, ports, clock), clock)
            with pytest.raises(QuorumError):
                await cluster.get(ACCOUNT, CONTAINER, "o")
            assert ("GET", False) in seen
            await cluster.close()

    asyncio.run(run())


def test_a_range_over_the_limit_is_asked_for_without_it_at_once(tmp_path: Path) -> None:
    """A range longer than 1 MiB goes to aiohttp straight away: the lanes see no request for
    it (counted on their /metrics), where sending the limit first would cost one (the lane's
    204). A range of exactly 1 MiB is the control: the lane answers it."""

    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        async with contextlib.AsyncExitStack() as stack:
            urls = await object_servers(stack, tmp_path, clock)
            pool = LeanPool(connect_timeout_s=5.0)  # asks the servers for their /metrics
            stack.push_async_callback(pool.close)
            cluster = ObjectCluster(_ring(tmp_path, [_port(u) for u in urls], clock), clock)
            big = os.urandom(3 * MIB)
            _, version = await cluster.put_versioned(ACCOUNT, CONTAINER, "big", big)
            for first, last, lane in ((0, MIB, 0), (7, 2 * MIB + 7, 0), (MIB, 2 * MIB - 1, 1)):
                before = await _lane_requests(pool, urls)
                got = await cluster.get(
                    ACCOUNT, CONTAINER, "big", byte_range=(first, last), known_version=version
                )
                assert got is not None and got[1] == big[first : last + 1]
                assert await _lane_requests(pool, urls) == before + lane, (first, last)
            # A quorum read: the HEADs ride the lane, the long range's GET does not.
            before = await _lane_requests(pool, urls)
            got = await cluster.get(ACCOUNT, CONTAINER, "big", byte_range=(0, MIB))
            assert got is not None and got[1] == big[: MIB + 1]
            assert await _lane_requests(pool, urls) == before + 2
            await cluster.close()

    asyncio.run(run())
