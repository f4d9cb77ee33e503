"""``POST /_object_rows`` on the container server's fast lane (common/leanserver): the same
per-row statuses as the aiohttp route, answered by the lean server; bodies over the limit
and other requests still go to aiohttp."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import aiohttp
import pytest

from common.clock import ManualClock
from common.rowupdates import (
    BODY_BYTES_MAX,
    CONTENT_TYPE,
    PATH,
    VERSION_HEADER,
    RowUpdate,
    decode_response,
    encode_request,
    encode_row,
)
from common.server import running_app
from containerd import client
from containerd.server import make_container_app
from tests.integration.containerd.test_object_rows import put_row
from tests.unit.containerd.test_server import make_conf

pytestmark = pytest.mark.integration

ROWS = [
    put_row("o1", 1),
    put_row("on-missing-device", 2, device="sdz"),
    put_row("no-container", 4, container="nope"),
    RowUpdate("sda", 1, "a", "c", "bad-ts", "DELETE", {"X-Timestamp": "yesterday"}),
    put_row("dir/o ü", 6),
]


async def _batch(root: Path, fast_lane: bool) -> tuple[list[int], list[str], list[int]]:
    root.mkdir()
    app = await make_container_app(make_conf(root), clock=ManualClock(), fast_lane=fast_lane)
    async with running_app(app) as url, aiohttp.ClientSession() as s:
        ts = {"X-Timestamp": "1700000000.00000"}
        async with aiohttp.ClientSession() as other:  # (its connection goes to aiohttp)
            assert (await client.direct_put_container(other, url, "sda", 1, "a", "c", ts))[0] == 201
        body = encode_request([encode_row(r) for r in ROWS])
        headers = {"Content-Type": CONTENT_TYPE, "X-Trans-Id": "tx-rows"}
        answers, servers, statuses = [], [], []
        for data in (body, b"not msgpack", b"\x00" * (BODY_BYTES_MAX + 1)):
            async with s.post(url + PATH, data=io.BytesIO(data), headers=headers) as r:
                servers.append("aiohttp" if "Server" in r.headers else "lean")
                assert r.headers["X-Trans-Id"] == "tx-rows"
                assert r.headers[VERSION_HEADER] == "1"
                statuses.append(r.status)
                if r.status == 200:
                    answers = decode_response(await r.read(), len(ROWS))
        return answers, servers, statuses


def test_rows_on_the_fast_lane_as_on_aiohttp(tmp_path: Path) -> None:
    fast = asyncio.run(asyncio.wait_for(_batch(tmp_path / "fast", True), 60))
    slow = asyncio.run(asyncio.wait_for(_batch(tmp_path / "slow", False), 60))
    assert fast[0] == slow[0] == [201, 507, 404, 400, 201]
    assert fast[2] == slow[2] == [200, 400, 413]
    # the oversized batch went to aiohttp (413), on its own connection or after a hand-over
    assert fast[1][:2] == ["lean", "lean"] and fast[1][2] == "aiohttp"
    assert slow[1] == ["aiohttp"] * 3
