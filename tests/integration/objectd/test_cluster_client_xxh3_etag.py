"""blockd's store client with `etag_xxh3`: once every primary said it takes version 2
trailers, a large body is stored with its xxh3-128 as the ETag (no MD5 anywhere); the file
is a version 2 object file the auditor checks, and replication (SSYNC) carries it over.

Three real object servers behind one ring, real sockets, real files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import xxhash
from aiohttp import web

from common.clock import ManualClock
from common.server import running_app
from objectd.cluster_client import TRAILER_BODY_BYTES_MIN, ObjectCluster
from objectd.diskfile import load_metadata, verify_file
from objectd.layout import DeviceLayout
from objectd.ratelimit import RateLimiter
from objectd.ssync_proto import ETAG_ALGS_HEADER
from objectd.ssync_sender import SyncResult, ssync_push
from tests.integration.objectd.test_cluster_client_trailer import three_server_ring
from tests.integration.objectd.test_trailer_capability import _new_server

pytestmark = [pytest.mark.integration]


@contextlib.asynccontextmanager
async def xxh3_cluster(
    tmp_path: Path, clock: ManualClock, third: web.Application | None = None
) -> AsyncIterator[tuple[ObjectCluster, tuple[str, str, str]]]:
    """Object servers n1, n2 and n3 (or `third` in its place) under `tmp_path`, one ring over
    them, and an `etag_xxh3` store client (closed on the way out)."""
    async with (
        running_app(await _new_server(tmp_path / "n1", clock)) as u1,
        running_app(await _new_server(tmp_path / "n2", clock)) as u2,
        running_app(third or await _new_server(tmp_path / "n3", clock)) as u3,
    ):
        ring = three_server_ring(tmp_path, (u1, u2, u3), clock)
        cluster = ObjectCluster(ring, clock, etag_xxh3=True)
        try:
            yield cluster, (u1, u2, u3)
        finally:
            await cluster.close()


def _data_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.data"))


async def _push(lost: Path, source: Path, dst_url: str, clock: ManualClock) -> SyncResult:
    """SSYNC the partition of `lost` (a replica file removed) from the device of `source`."""
    part = int(lost.parts[-4])
    src_root = next(p for p in source.parents if p.name == "sda").parent
    async with aiohttp.ClientSession() as s:
        return await ssync_push(
            s,
            dst_url,
            "sda",
            DeviceLayout(src_root, "sda"),
            part,
            [lost.parts[-3]],
            RateLimiter(0, clock),
        )


def test_an_xxh3_file_is_kept_back_from_a_receiver_that_does_not_take_it(
    tmp_path: Path,
) -> None:
    """A receiver from before version 2 files does not list ETag algorithms in its SSYNC
    answer: the sender keeps such a file (not in sync: the handoff stays) instead of
    sending what the receiver would refuse."""

    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        old = await _new_server(tmp_path / "n3", clock)
        older = [True]

        async def as_older(_r: web.Request, response: web.StreamResponse) -> None:
            if older[0]:
                response.headers.popall(ETAG_ALGS_HEADER, None)

        old.on_response_prepare.append(as_older)
        async with xxh3_cluster(tmp_path, clock, old) as (cluster, (_, _, u3)):
            body = os.urandom(TRAILER_BODY_BYTES_MIN + 17)
            await cluster.put(".blk", "vol", "first", body)
            clock.advance(1.0)
            assert await cluster.put(".blk", "vol", "x", body) == xxhash.xxh3_128_hexdigest(body)
            files = [p for p in _data_files(tmp_path) if load_metadata(p).name.endswith("/x")]
            lost = next(p for p in files if (tmp_path / "n3") in p.parents)
            source = next(p for p in files if (tmp_path / "n1") in p.parents)
            lost.unlink()
            result = await _push(lost, source, u3, clock)
            assert (result.wanted, result.sent, result.held_back) == (1, 0, 1), result
            assert not result.in_sync and not lost.exists() and source.exists()
            # The same receiver as it is now (listing xxh3-128) is sent the file.
            older[0] = False
            result = await _push(lost, source, u3, clock)
            assert result.in_sync and result.sent == 1, result
            assert load_metadata(lost).etag_alg == "xxh3-128"

    asyncio.run(run())


def test_large_bodies_get_an_xxh3_etag_once_every_primary_takes_it(tmp_path: Path) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        async with xxh3_cluster(tmp_path, clock) as (cluster, (u1, u2, u3)):
            body = os.urandom(TRAILER_BODY_BYTES_MIN + 4321)

            # Nothing known yet: plain PUTs, each server stores the MD5 it computes.
            assert await cluster.put(".blk", "vol", "first", body) == hashlib.md5(body).hexdigest()
            clock.advance(1.0)
            etag = await cluster.put(".blk", "vol", "second", body)
            assert etag == xxhash.xxh3_128_hexdigest(body)
            got = await cluster.get(".blk", "vol", "second")
            assert got is not None and got[1] == body and got[0]["Etag"].strip('"') == etag
            # Small bodies carry no trailer: the MD5, as before.
            small = os.urandom(1000)
            small_etag = await cluster.put(".blk", "vol", "small", small)
            assert small_etag == hashlib.md5(small).hexdigest()

            files = [p for p in _data_files(tmp_path) if load_metadata(p).name.endswith("second")]
            assert len(files) == 3
            for path in files:
                md = load_metadata(path)
                assert (md.etag_alg, md.etag) == ("xxh3-128", etag)
                assert list(verify_file(path))[-1] == len(body)  # the auditor's check passes

            # Replication carries such a file over: remove one replica, push it from another.
            lost, source = files[0], files[1]
            lost.unlink()
            dst_url = next(
                u for u, n in ((u1, "n1"), (u2, "n2"), (u3, "n3")) if (tmp_path / n) in lost.parents
            )
            result = await _push(lost, source, dst_url, clock)
            assert result.in_sync and result.written >= 1, result.errors
            assert lost.exists()
            md = load_metadata(lost)
            assert (md.etag_alg, md.etag) == ("xxh3-128", etag)
            assert list(verify_file(lost))[-1] == len(body)

    asyncio.run(run())


def test_a_3_mib_body_goes_the_ordinary_put_path_as_a_version_2_file(tmp_path: Path) -> None:
    """Over 1 MiB the object server takes the PUT on its ordinary (aiohttp, streamed) path,
    not the whole-body one: a version 2 trailer is stored as a version 2 file there too."""

    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        async with xxh3_cluster(tmp_path, clock) as (cluster, _):
            await cluster.put(".blk", "vol", "first", os.urandom(TRAILER_BODY_BYTES_MIN))
            clock.advance(1.0)
            body = os.urandom(3 * 1024 * 1024)
            etag = await cluster.put(".blk", "vol", "big", body)
            assert etag == xxhash.xxh3_128_hexdigest(body)
            got = await cluster.get(".blk", "vol", "big")
            assert got is not None and got[1] == body and got[0]["Etag"].strip('"') == etag
        files = [p for p in _data_files(tmp_path) if load_metadata(p).name.endswith("/big")]
        assert len(files) == 3
        for path in files:
            md = load_metadata(path)
            assert (md.etag_alg, md.format_version, md.etag) == ("xxh3-128", 2, etag)
            assert list(verify_file(path))[-1] == len(body)

    asyncio.run(run())
