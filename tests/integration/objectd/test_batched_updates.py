"""Batched container updates (objectd/update_batcher.py) against real container servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from common.clock import ManualClock
from common.rowupdates import PATH, VERSION_HEADER, decode_request, encode_response
from common.server import running_app
from containerd import client
from containerd.server import make_container_app
from objectd.asyncpending import ContainerTarget, decode_pending, list_pendings
from objectd.server import ObjectServerConf
from objectd.update_batcher import UpdateBatcher
from tests.integration.objectd.conftest import object_server, run, ts
from tests.unit.containerd.test_server import make_conf

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def container_server(
    root: Path, *, without_batches: list[int] | None = None
) -> AsyncIterator[str]:
    """A real container server with device sda and container AUTH_a/c on partition 1;
    with `without_batches` (a list counting the attempts), it answers the batch endpoint
    404, as a server from before the endpoint did."""
    root.mkdir(exist_ok=True)
    app = await make_container_app(make_conf(root), clock=ManualClock())
    if without_batches is not None:
        attempts = without_batches

        @web.middleware
        async def no_batches(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path == PATH:
                attempts.append(1)
                return web.Response(status=404)
            return await handler(request)

        app.middlewares.append(no_batches)
    async with running_app(app) as url, aiohttp.ClientSession() as s:
        st, _ = await client.direct_put_container(
            s, url, "sda", 1, "AUTH_a", "c", {"X-Timestamp": "1700000000.00000"}
        )
        assert st == 201
        yield url


async def listing(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as s:
        st, _h, rows = await client.direct_get_container(s, url, "sda", 1, "AUTH_a", "c")
    assert st in (200, 204) and rows is not None
    return {r["name"]: r["bytes"] for r in rows}


def _put_headers(n: int) -> dict[str, str]:
    return {
        "X-Timestamp": f"{1_700_000_100 + n}.00000",
        "X-Size": str(n),
        "X-Content-Type": "text/plain",
        "X-Etag": f"{n:032x}",
    }


def _pendings(conf: ObjectServerConf) -> list[Path]:
    return list_pendings(conf.devices_dir / "sda")


@pytest.fixture
def patient(conf: ObjectServerConf) -> ObjectServerConf:
    """Updates get time enough on a busy shared machine: these tests are not about timeouts."""
    return replace(conf, container_update_timeout_s=10.0)


def test_updates_waiting_for_a_request_go_together(tmp_path: Path) -> None:
    async def go() -> tuple[list[bool], UpdateBatcher, dict[str, int]]:
        async with container_server(tmp_path / "c") as curl, aiohttp.ClientSession() as s:
            b = UpdateBatcher(s, ManualClock(), 10.0)
            host = curl.removeprefix("http://")
            sda, sdz = ContainerTarget(host, "sda", 1), ContainerTarget(host, "sdz", 1)

            def put(t: ContainerTarget, cont: str, name: str, n: int) -> Awaitable[bool]:
                return b.update("PUT", t, "AUTH_a", cont, name, _put_headers(n))

            calls = [put(sda, "c", f"o{n}", n) for n in range(6)]
            calls.insert(3, put(sdz, "c", "on-a-missing-device", 1))
            calls.insert(4, put(sda, "nope", "no-container", 1))
            calls.insert(5, b.update("PUT", sda, "AUTH_a", "c", "bad-row", {"X-Size": "1"}))
            gone = {"X-Timestamp": "1800000000.00000"}
            calls.append(b.update("DELETE", sda, "AUTH_a", "c", "o5", gone))
            results = list(await asyncio.gather(*calls))
            await b.close()
            return results, b, await listing(curl)

    results, b, names = run(go())
    # The first went alone at once; the other 9 piled up behind it and went as ONE request.
    assert (b.batches_sent, b.rows_sent) == (2, 10)
    # Missing device (507), missing container (404), bad headers (400): each fails alone.
    assert results == [True, True, True, False, False, False, True, True, True, True]
    assert names == {f"o{n}": n for n in range(5)}  # o5 was deleted in the same batch


def test_a_batch_lingers_only_for_rows_of_puts_still_writing(tmp_path: Path) -> None:
    async def go() -> tuple[list[tuple[int, int]], list[bool], dict[str, int]]:
        async with container_server(tmp_path / "c") as curl, aiohttp.ClientSession() as s:
            host = curl.removeprefix("http://")
            sda = ContainerTarget(host, "sda", 1)
            counts = []
            results: list[bool] = []

            def put(b: UpdateBatcher, n: int) -> Awaitable[bool]:
                return b.update("PUT", sda, "AUTH_a", "c", f"o{n}", _put_headers(n))

            # No other PUT writing: a lone row goes at once, however long the linger (the
            # bound is only there so that a wait of linger_s would fail the test).
            lone = UpdateBatcher(s, ManualClock(), 10.0, linger_s=30.0)
            with lone.writing():
                results.append(await asyncio.wait_for(put(lone, 0), 5.0))
            counts.append((lone.batches_sent, lone.rows_sent))
            await lone.close()
            # Three PUTs writing: the first row waits for the two that come after it.
            for linger in (0.0, 0.2):
                b = UpdateBatcher(s, ManualClock(), 10.0, linger_s=linger)
                with b.writing(), b.writing(), b.writing():
                    first = asyncio.ensure_future(put(b, 1))
                    await asyncio.sleep(0)  # its request is out (or lingering)
                    results += await asyncio.gather(first, put(b, 2), put(b, 3))
                counts.append((b.batches_sent, b.rows_sent))
                await b.close()
            return counts, results, await listing(curl)

    counts, results, names = run(go())
    assert counts == [(1, 1), (2, 3), (1, 3)]
    assert results == [True] * 7
    assert names == {f"o{n}": n for n in range(4)}


def test_closing_while_a_batch_lingers_fails_its_rows(tmp_path: Path) -> None:
    async def go() -> tuple[list[bool], int]:
        async with container_server(tmp_path / "c") as curl, aiohttp.ClientSession() as s:
            sda = ContainerTarget(curl.removeprefix("http://"), "sda", 1)
            b = UpdateBatcher(s, ManualClock(), 10.0, linger_s=30.0)
            with b.writing(), b.writing(), b.writing():  # a third PUT is still writing
                calls = [
                    asyncio.ensure_future(
                        b.update("PUT", sda, "AUTH_a", "c", f"o{n}", _put_headers(n))
                    )
                    for n in range(2)
                ]
                await asyncio.sleep(0.05)
                await asyncio.wait_for(b.close(), 5.0)  # not after the 30 s linger
                results = list(await asyncio.gather(*calls))
            return results, b.batches_sent

    results, sent = run(go())
    assert results == [False, False] and sent == 0


def test_object_puts_update_the_listing_in_batches(patient: ObjectServerConf, clock, tmp_path):
    async def go() -> tuple[dict[str, int], str]:
        async with (
            container_server(tmp_path / "c") as curl,
            object_server(patient, clock) as (url, s),
        ):
            upd = {
                "X-Container-Host": curl.removeprefix("http://"),
                "X-Container-Device": "sda",
                "X-Container-Partition": "1",
            }

            async def put(n: int) -> None:
                hdrs = {"X-Timestamp": ts(clock, n), "Content-Type": "a/b", **upd}
                async with s.put(f"{url}/sda/3/AUTH_a/c/o{n}", data=b"x" * n, headers=hdrs) as r:
                    assert r.status == 201

            await asyncio.gather(*(put(n) for n in range(12)))
            async with s.delete(
                f"{url}/sda/3/AUTH_a/c/o0", headers={"X-Timestamp": ts(clock, 100), **upd}
            ) as r:
                assert r.status == 204
            async with s.get(url + "/metrics") as r:
                metrics = await r.text()
            return await listing(curl), metrics

    names, metrics = run(go())
    assert names == {f"o{n}": n for n in range(1, 12)}
    assert "cairn_object_container_update_batch_rows_sum 13.0" in metrics  # none went alone
    assert _pendings(patient) == []


def test_a_row_for_a_missing_device_becomes_an_async_pending(
    patient: ObjectServerConf, clock, tmp_path
):
    async def go() -> dict[str, int]:
        async with (
            container_server(tmp_path / "c") as curl,
            object_server(patient, clock) as (url, s),
        ):
            host = curl.removeprefix("http://")

            async def put(name: str, device: str) -> None:
                hdrs = {
                    "X-Timestamp": ts(clock),
                    "Content-Type": "a/b",
                    "X-Container-Host": host,
                    "X-Container-Device": device,
                    "X-Container-Partition": "1",
                }
                async with s.put(f"{url}/sda/3/AUTH_a/c/{name}", data=b"abc", headers=hdrs) as r:
                    assert r.status == 201  # stored; the failed update is kept for later

            await asyncio.gather(put("good1", "sda"), put("lost", "sdz"), put("good2", "sda"))
            return await listing(curl)

    assert run(go()) == {"good1": 3, "good2": 3}
    (pending,) = _pendings(patient)
    rec = decode_pending(pending.read_bytes())
    assert (rec.obj, [t.device for t in rec.targets]) == ("lost", ["sdz"])
    assert rec.headers["X-Size"] == "3"


def test_a_server_without_the_endpoint_gets_one_request_per_row(tmp_path: Path) -> None:
    attempts: list[int] = []
    clock = ManualClock()

    async def go() -> tuple[list[bool], UpdateBatcher, dict[str, int]]:
        async with (
            container_server(tmp_path / "c", without_batches=attempts) as curl,
            aiohttp.ClientSession() as s,
        ):
            b = UpdateBatcher(s, clock, 10.0, legacy_retry_s=60.0)
            t = ContainerTarget(curl.removeprefix("http://"), "sda", 1)

            def update(n: int) -> Awaitable[bool]:
                return b.update("PUT", t, "AUTH_a", "c", f"o{n}", _put_headers(n))

            results = list(await asyncio.gather(*(update(n) for n in range(5))))
            results.append(await update(5))
            # One batch found out; the rows queued behind it went one by one, as did the next.
            assert len(attempts) == 1
            clock.advance(61)  # after legacy_retry_s the endpoint is tried again
            results.append(await update(6))
            await b.close()
            return results, b, await listing(curl)

    results, b, names = run(go())
    assert results == [True] * 7
    assert len(attempts) == 2 and b.batches_sent == 0
    assert names == {f"o{n}": n for n in range(7)}


class DisconnectingContainer:
    """Fault injection: the batch endpoint drops the connection without an answer the first
    `drops` times, then answers each row with `status`."""

    def __init__(self, drops: int, status: int) -> None:
        self.drops, self.status = drops, status
        self.posts = 0
        self.app = web.Application()
        self.app.router.add_post(PATH, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        rows = decode_request(await request.read())
        if self.drops > 0:
            self.drops -= 1
            assert request.transport is not None
            request.transport.close()
        body = encode_response([self.status] * len(rows))
        return web.Response(body=body, headers={VERSION_HEADER: "1"})


@pytest.mark.parametrize(
    ("drops", "status", "want", "posts"),
    [
        (1, 201, True, 2),  # a dropped connection is tried once more
        (2, 201, False, 2),  # but only once
        (0, 503, False, 1),  # a row the server could not take fails
    ],
)
def test_batch_request_faults(drops: int, status: int, want: bool, posts: int) -> None:
    fake = DisconnectingContainer(drops, status)

    async def go() -> bool:
        async with running_app(fake.app) as curl, aiohttp.ClientSession() as s:
            b = UpdateBatcher(s, ManualClock(), 10.0)
            t = ContainerTarget(curl.removeprefix("http://"), "sda", 1)
            ok = await b.update("PUT", t, "AUTH_a", "c", "o", _put_headers(1))
            await b.close()
            return ok

    assert run(go()) is want
    assert fake.posts == posts
