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
from common.server import running_app
from objectd.cluster_client import TRAILER_BODY_BYTES_MIN, ObjectCluster
from tests.integration.objectd.test_cluster_client_trailer import three_server_ring
from tests.integration.objectd.test_trailer_capability import _new_server

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
        async with (
            running_app(await _new_server(tmp_path / "n1", clock)) as u1,
            running_app(await _new_server(tmp_path / "n2", clock)) as u2,
            running_app(stand_in.app()) as u3,
        ):
            ring = three_server_ring(tmp_path, (u1, u2, u3), clock)
            cluster = ObjectCluster(ring, clock, etag_xxh3=True)
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
            await cluster.close()

    asyncio.run(run())
