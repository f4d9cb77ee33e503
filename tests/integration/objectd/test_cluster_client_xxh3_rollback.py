"""A node rolled back to an object server that takes version 1 trailers only, after blockd's
store client learned it took version 2: its versions header no longer names 2 and it answers
400 to a version 2 trailer. The client must drop version 2 for it and retry that replica
once without it, so every replica still stores the body (not two of three).

Two real object servers and one stand-in (an aiohttp app that checks the trailer it is sent,
or hashes a plain body, and can be switched to the rolled-back behaviour) behind one ring.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from aiohttp import web

from common.clock import ManualClock
from common.puttrailer import (
    TRAILER_BYTES,
    TRAILER_HEADER,
    TRAILER_SUPPORT_HEADER,
    TRAILER_VERSIONS_HEADER,
    decode_trailer,
)
from objectd.cluster_client import TRAILER_BODY_BYTES_MIN
from objectd.diskfile import load_metadata, verify_file
from tests.integration.objectd.test_cluster_client_xxh3_etag import xxh3_cluster

pytestmark = [pytest.mark.integration]


class StandIn:
    """An object server taking versions "1 2" until `rolled_back`, then "1" only."""

    def __init__(self) -> None:
        self.rolled_back = False
        self.answered: list[tuple[str, int]] = []  # (trailer header or "", status)

    def headers(self) -> dict[str, str]:
        versions = "1" if self.rolled_back else "1 2"
        return {TRAILER_SUPPORT_HEADER: "1", TRAILER_VERSIONS_HEADER: versions}

    async def put(self, request: web.Request) -> web.Response:
        data = await request.read()
        announced = request.headers.get(TRAILER_HEADER, "")
        if announced == "2" and self.rolled_back:
            status, etag = 400, ""
        elif announced:
            status, etag = 201, decode_trailer(data[-TRAILER_BYTES:]).etag
        else:
            status, etag = 201, hashlib.md5(data).hexdigest()
        self.answered.append((announced, status))
        return web.Response(status=status, headers={**self.headers(), "Etag": etag})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 24)
        app.router.add_put("/{tail:.*}", self.put)
        return app


def test_a_rolled_back_node_gets_the_body_plain_and_every_replica_stores_it(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        stand_in = StandIn()
        async with xxh3_cluster(tmp_path, clock, stand_in.app()) as (cluster, _):
            body = os.urandom(TRAILER_BODY_BYTES_MIN + 99)
            await cluster.put(".blk", "vol", "first", body)  # plain: learns the servers
            clock.advance(1.0)
            await cluster.put(".blk", "vol", "second", body)  # version 2 everywhere
            assert stand_in.answered[-1] == ("2", 201)

            stand_in.rolled_back = True
            stand_in.answered.clear()
            clock.advance(1.0)
            etag = await cluster.put(".blk", "vol", "third", body)
            # Refused once as version 2, then taken plain: all three replicas stored it.
            assert stand_in.answered == [("2", 400), ("", 201)]
            got = await cluster.get(".blk", "vol", "third")
            assert got is not None and got[1] == body and got[0]["Etag"].strip('"') == etag

            # From now on the client knows: the MD5 path, version 1 trailers, no refusal.
            stand_in.answered.clear()
            clock.advance(1.0)
            assert await cluster.put(".blk", "vol", "fourth", body) == hashlib.md5(body).hexdigest()
            assert stand_in.answered == [("1", 201)]

    asyncio.run(run())


def test_one_primary_without_version_2_keeps_the_md5_path(tmp_path: Path) -> None:
    """`_all_take_xxh3` is false when one primary does not take version 2: the body is hashed
    with MD5 too, every server gets a version 1 trailer and stores a version 1 file."""

    async def run() -> None:
        clock = ManualClock(1_700_000_000.0)
        stand_in = StandIn()
        stand_in.rolled_back = True  # takes version 1 only, from the start
        async with xxh3_cluster(tmp_path, clock, stand_in.app()) as (cluster, _):
            body = os.urandom(TRAILER_BODY_BYTES_MIN + 7)
            await cluster.put(".blk", "vol", "first", body)
            assert not cluster._all_take_xxh3(".blk", "vol", "second")
            clock.advance(1.0)
            assert await cluster.put(".blk", "vol", "second", body) == hashlib.md5(body).hexdigest()
            assert stand_in.answered[-1] == ("1", 201)
        files = [p for p in tmp_path.rglob("*.data") if load_metadata(p).name.endswith("/second")]
        assert len(files) == 2  # the two real servers
        for path in files:
            md = load_metadata(path)
            assert (md.etag_alg, md.format_version) == ("md5", 1)
            assert list(verify_file(path))[-1] == len(body)

    asyncio.run(run())
