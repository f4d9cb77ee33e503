"""The SSYNC sender against misbehaving peers: stalls and early errors end the exchange."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from common.clock import ManualClock
from common.server import running_app
from common.timestamps import Timestamp
from objectd.diskfile import RealDiskFile
from objectd.fileformat import ObjectMetadata
from objectd.layout import DeviceLayout
from objectd.ratelimit import RateLimiter
from objectd.ssync_proto import PREAMBLE, RemoteError, encode
from objectd.ssync_sender import SyncError, ssync_push
from tests.integration.objectd.conftest import run

pytestmark = pytest.mark.integration
HASH = "0" * 29 + "abc"


def _layout_with_object(tmp_path: Path) -> DeviceLayout:
    (tmp_path / "sda").mkdir()
    layout = DeviceLayout(tmp_path, "sda")
    df = RealDiskFile(layout, 1, HASH, "/a/c/o")
    w = df.writer(3, 0)
    w.write(b"abc")
    w.commit(
        ObjectMetadata(kind="data", name="/a/c/o", timestamp=Timestamp.from_float(1_700_000_000.0))
    )
    return layout


async def _push(url: str, layout: DeviceLayout, node_timeout_s: float = 0.5):
    async with aiohttp.ClientSession() as s:
        return await ssync_push(
            s,
            url,
            "sda",
            layout,
            1,
            ["abc"],
            RateLimiter(0, ManualClock()),
            node_timeout_s=node_timeout_s,
        )


def test_a_peer_that_never_answers_is_given_up_on(tmp_path):
    layout = _layout_with_object(tmp_path)
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(PREAMBLE)
        await asyncio.wait_for(release.wait(), 30)
        return resp

    app = web.Application()
    app.router.add_post("/_ssync/{dev}/{part}", stall)

    async def go():
        async with running_app(app) as url:
            try:
                with pytest.raises(SyncError, match="no progress"):
                    await asyncio.wait_for(_push(url, layout), 10)
            finally:
                release.set()

    run(go())


def test_an_error_frame_before_the_wants_ends_the_exchange(tmp_path):
    layout = _layout_with_object(tmp_path)

    async def refuse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(PREAMBLE + encode(RemoteError("device: gone")))
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/_ssync/{dev}/{part}", refuse)

    async def go():
        async with running_app(app) as url:
            with pytest.raises(SyncError, match="device: gone"):
                await asyncio.wait_for(_push(url, layout, 5.0), 10)

    run(go())


@pytest.mark.parametrize("status, body", [(507, b"full\n"), (200, b"HTTP garbage")])
def test_a_refusal_or_garbage_is_a_sync_error(tmp_path, status, body):
    layout = _layout_with_object(tmp_path)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body)

    app = web.Application()
    app.router.add_post("/_ssync/{dev}/{part}", answer)

    async def go():
        async with running_app(app) as url:
            with pytest.raises(SyncError):
                await asyncio.wait_for(_push(url, layout, 5.0), 10)

    run(go())


def test_a_peer_that_is_not_listening_is_a_sync_error(tmp_path):
    layout = _layout_with_object(tmp_path)

    async def go():
        app = web.Application()
        async with running_app(app) as url:
            pass  # now nothing listens on that port
        with pytest.raises(SyncError):
            await asyncio.wait_for(_push(url, layout, 5.0), 10)

    run(go())
