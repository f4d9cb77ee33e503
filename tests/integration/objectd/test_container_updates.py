"""Container updates after PUT/DELETE, async pendings when they fail, and the updater's retry."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from common.server import running_app
from objectd.asyncpending import decode_pending, list_pendings
from objectd.updater import run_once
from tests.integration.objectd.conftest import object_server, run, ts

pytestmark = pytest.mark.integration

OBJ = "/sda/7/AUTH_a/c/o"


class FakeContainerServer:
    """A tiny real container endpoint recording what it is told (it can be set to fail); it
    takes only single-row updates, as a container server without the batch endpoint."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, str]]] = []
        self.fail = False
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if request.method not in ("PUT", "DELETE"):
            return web.Response(status=405)  # like a server without the batch endpoint
        if self.fail:
            return web.Response(status=503)
        self.received.append((request.method, request.path, dict(request.headers)))
        return web.Response(status=201 if request.method == "PUT" else 204)


def _host(url: str) -> str:
    return url.removeprefix("http://")


def _pendings(devices_dir: Path) -> list[Path]:
    return list_pendings(devices_dir / "sda")


def test_put_and_delete_update_the_container(conf, clock, devices_dir):
    cont = FakeContainerServer()

    async def go():
        async with running_app(cont.app) as curl, object_server(conf, clock) as (url, s):
            upd = {
                "X-Container-Host": _host(curl),
                "X-Container-Device": "sdc",
                "X-Container-Partition": "42",
            }
            t1 = ts(clock)
            hdrs = {"X-Timestamp": t1, "Content-Type": "text/x", **upd}
            async with s.put(url + OBJ, data=b"hello", headers=hdrs) as r:
                assert r.status == 201
            t2 = ts(clock, 1)
            async with s.delete(url + OBJ, headers={"X-Timestamp": t2, **upd}) as r:
                assert r.status == 204
            return t1, t2

    t1, t2 = run(go())
    (m1, p1, h1), (m2, p2, h2) = cont.received
    assert (m1, p1) == ("PUT", "/sdc/42/AUTH_a/c/o")
    assert h1["X-Timestamp"] == t1 and h1["X-Size"] == "5" and h1["X-Content-Type"] == "text/x"
    assert h1["X-Etag"] == "5d41402abc4b2a76b9719d911017c592"
    assert (m2, p2, h2["X-Timestamp"]) == ("DELETE", "/sdc/42/AUTH_a/c/o", t2)
    assert _pendings(devices_dir) == []


def test_failed_updates_become_async_pendings_and_the_updater_delivers_them(
    conf, clock, devices_dir
):
    good, bad = FakeContainerServer(), FakeContainerServer()
    bad.fail = True

    async def go():
        async with (
            running_app(good.app) as gurl,
            running_app(bad.app) as burl,
            object_server(conf, clock) as (url, s),
        ):
            upd = {
                "X-Container-Host": f"{_host(gurl)},{_host(burl)}",
                "X-Container-Device": "sdc,sdd",
                "X-Container-Partition": "42",
            }
            hdrs = {"X-Timestamp": ts(clock), "Content-Type": "text/x", **upd}
            async with s.put(url + OBJ, data=b"hello", headers=hdrs) as r:
                assert r.status == 201  # the object is stored even though one update failed
            (pending,) = _pendings(devices_dir)
            rec = decode_pending(pending.read_bytes())
            assert rec.op == "PUT" and [t.device for t in rec.targets] == ["sdd"]
            async with s.get(url + "/metrics") as r:
                assert "cairn_object_async_pendings_total 1.0" in await r.text()

            async with aiohttp.ClientSession() as session:
                stats = await run_once(devices_dir, session, timeout_s=2.0)
                assert (stats.found, stats.failed, stats.delivered) == (1, 1, 0)
                assert len(_pendings(devices_dir)) == 1
                bad.fail = False
                stats = await run_once(devices_dir, session, timeout_s=2.0)
                assert (stats.found, stats.delivered) == (1, 1)
            assert _pendings(devices_dir) == []

    run(go())
    assert [p for _m, p, _h in good.received] == ["/sdc/42/AUTH_a/c/o"]
    assert [p for _m, p, _h in bad.received] == ["/sdd/42/AUTH_a/c/o"]
    assert bad.received[0][2]["X-Size"] == "5"


def test_unreachable_container_times_out_into_a_pending(conf, clock, devices_dir):
    quick = replace(conf, container_update_timeout_s=0.2)
    stall = web.Application()
    release = asyncio.Event()

    async def stalls(_request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 30)  # answers only after the test is done
        return web.Response()

    stall.router.add_route("*", "/{tail:.*}", stalls)

    async def go():
        async with running_app(stall) as curl, object_server(quick, clock) as (url, s):
            upd = {
                "X-Container-Host": _host(curl),
                "X-Container-Device": "sdc",
                "X-Container-Partition": "1",
            }
            async with s.delete(url + OBJ, headers={"X-Timestamp": ts(clock), **upd}) as r:
                assert r.status == 404  # nothing was there; the tombstone is still written
            release.set()

    run(go())
    (pending,) = _pendings(devices_dir)
    assert decode_pending(pending.read_bytes()).op == "DELETE"


def test_newer_pending_supersedes_older_for_the_same_object(conf, clock, devices_dir):
    down = "127.0.0.1:9"  # discard port: nothing listens, connection refused at once

    async def go():
        async with object_server(conf, clock) as (url, s):
            upd = {
                "X-Container-Host": down,
                "X-Container-Device": "d",
                "X-Container-Partition": "1",
            }
            for i in range(3):
                hdrs = {"X-Timestamp": ts(clock, i), "Content-Type": "a/b", **upd}
                async with s.put(url + OBJ, data=b"x", headers=hdrs) as r:
                    assert r.status == 201
            assert len(_pendings(devices_dir)) == 3
            async with aiohttp.ClientSession() as session:
                stats = await run_once(devices_dir, session, timeout_s=0.5)
            assert (stats.found, stats.obsolete, stats.failed) == (3, 2, 1)
            (left,) = _pendings(devices_dir)
            assert decode_pending(left.read_bytes()).timestamp.internal == ts(clock, 2)

    run(go())


def test_updater_with_nothing_to_do(tmp_path):
    async def go():
        async with aiohttp.ClientSession() as session:
            return await run_once(tmp_path / "absent", session)

    assert run(go()).found == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Container-Host": "h:1,h:2", "X-Container-Device": "d", "X-Container-Partition": "1"},
        {"X-Container-Host": "nohostport", "X-Container-Device": "d", "X-Container-Partition": "1"},
        {"X-Container-Host": "h:1", "X-Container-Device": "d", "X-Container-Partition": "x"},
    ],
)
def test_bad_container_headers_are_400(conf, clock, headers):
    async def go():
        async with object_server(conf, clock) as (url, s):
            hdrs = {"X-Timestamp": ts(clock), "Content-Type": "a/b", **headers}
            async with s.put(url + OBJ, data=b"x", headers=hdrs) as r:
                assert r.status == 400

    run(go())


def test_undecodable_pending_is_moved_aside(devices_dir):
    name = "0123456789abcdef0123456789abcdef-1700000000.00000"
    bad = devices_dir / "sda" / "async_pending" / "def" / name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x93not a pending")

    async def go():
        async with aiohttp.ClientSession() as session:
            return await run_once(devices_dir, session)

    stats = run(go())
    assert (stats.found, stats.bad) == (1, 1)
    assert not bad.exists()
    assert (devices_dir / "sda" / "quarantined" / "async_pending" / name).exists()
