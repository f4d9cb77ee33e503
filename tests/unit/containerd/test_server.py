"""The container server over real HTTP on 127.0.0.1 (in-process, ephemeral port)."""

from __future__ import annotations

import asyncio
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from common.clock import ManualClock
from common.server import running_app
from containerd import client
from containerd.conf import ContainerServerConf
from containerd.server import make_container_app

Scenario = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def make_conf(tmp_path: Path, **kw: object) -> ContainerServerConf:
    (tmp_path / "sda").mkdir(exist_ok=True)
    return ContainerServerConf(
        devices_dir=tmp_path,
        hash_path_prefix="pre",
        hash_path_suffix="suf",
        lmdb_map_bytes=1 << 26,
        threads_per_device=2,
        **kw,  # type: ignore[arg-type]
    )


def run(conf: ContainerServerConf, scenario: Scenario) -> None:
    async def main() -> None:
        app = await make_container_app(conf, clock=ManualClock())
        async with running_app(app) as url, aiohttp.ClientSession() as session:
            await scenario(session, url)

    asyncio.run(main())


def ts(n: int) -> dict[str, str]:
    return {"X-Timestamp": f"{1_700_000_000 + n}.00000"}


def obj_headers(n: int, size: int, ctype: str = "text/plain") -> dict[str, str]:
    return {**ts(n), "X-Size": str(size), "X-Content-Type": ctype, "X-Etag": f"etag{size}"}


async def put_objects(s: aiohttp.ClientSession, url: str, names: list[str]) -> None:
    for i, name in enumerate(names):
        st, _ = await client.direct_put_container_object(
            s, url, "sda", 1, "a", "c", name, obj_headers(10 + i, i)
        )
        assert st == 201


def test_container_lifecycle(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        meta = {
            **ts(1),
            "X-Container-Meta-Color": "blue",
            "X-Container-Read": ".r:*",
            "X-Container-Sync-Key": "k",
            "X-Container-Write": "a:b",
            "X-History-Location": "h",
        }
        assert (await client.direct_put_container(s, url, "sda", 1, "a", "c", meta))[0] == 201
        assert (await client.direct_put_container(s, url, "sda", 1, "a", "c", ts(2)))[0] == 202
        st, h = await client.direct_head_container(s, url, "sda", 1, "a", "c")
        assert st == 204
        assert h["X-Container-Object-Count"] == "0"
        assert h["X-Container-Meta-Color"] == "blue"
        assert h["X-Container-Read"] == ".r:*"
        assert (h["X-Container-Write"], h["X-Container-Sync-Key"]) == ("a:b", "k")
        assert h["X-History-Location"] == "h"
        assert h["X-Timestamp"] == "1700000001.00000"
        assert h["X-Put-Timestamp"] == "1700000002.00000"
        assert h["X-Backend-Delete-Timestamp"] == "0000000000.00000"

        await put_objects(s, url, ["b", "a", "d/1", "d/2"])
        st, h = await client.direct_head_container(s, url, "sda", 1, "a", "c")
        assert (h["X-Container-Object-Count"], h["X-Container-Bytes-Used"]) == ("4", "6")

        st, _ = await client.direct_delete_container(s, url, "sda", 1, "a", "c", ts(50))
        assert st == 409
        for i, name in enumerate(["a", "b", "d/1", "d/2"]):
            st, _ = await client.direct_delete_container_object(
                s, url, "sda", 1, "a", "c", name, ts(60 + i)
            )
            assert st == 204
        assert (await client.direct_delete_container(s, url, "sda", 1, "a", "c", ts(70)))[0] == 204
        st, h = await client.direct_head_container(s, url, "sda", 1, "a", "c")
        assert st == 404
        assert h["X-Backend-Delete-Timestamp"] == "1700000070.00000"
        assert (await client.direct_delete_container(s, url, "sda", 1, "a", "c", ts(71)))[0] == 404
        st, h = await client.direct_put_container(s, url, "sda", 1, "a", "c", ts(65))
        assert st == 409  # older than the delete: still deleted
        assert h["X-Backend-Delete-Timestamp"] == "1700000070.00000"
        st, _ = await client.direct_put_container_object(
            s, url, "sda", 1, "a", "c", "late", obj_headers(72, 1)
        )
        assert st == 404
        status, _h, rows = await client.direct_get_container(s, url, "sda", 1, "a", "c")
        assert (status, rows) == (404, None)
        # A newer PUT brings it back.
        assert (await client.direct_put_container(s, url, "sda", 1, "a", "c", ts(80)))[0] == 201

    run(make_conf(tmp_path), scenario)


def test_post_metadata_merges_and_deletes(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        put = {**ts(1), "X-Container-Meta-A": "1", "X-Container-Sysmeta-S": "sys"}
        await client.direct_put_container(s, url, "sda", 1, "a", "c", put)
        post = {
            **ts(2),
            "X-Container-Meta-A": "",
            "X-Container-Meta-B": "2",
            "X-Versions-Location": "v",
        }
        assert (await client.direct_post_container(s, url, "sda", 1, "a", "c", post))[0] == 204
        stale = {**ts(1), "X-Container-Meta-B": "old"}
        assert (await client.direct_post_container(s, url, "sda", 1, "a", "c", stale))[0] == 204
        _, h = await client.direct_head_container(s, url, "sda", 1, "a", "c")
        assert "X-Container-Meta-A" not in h
        assert h["X-Container-Meta-B"] == "2"
        assert h["X-Container-Sysmeta-S"] == "sys"
        assert h["X-Versions-Location"] == "v"
        st, _ = await client.direct_post_container(s, url, "sda", 1, "a", "nope", ts(3))
        assert st == 404

    run(make_conf(tmp_path), scenario)


NAMES = ["photos/2024/a.jpg", "photos/2024/b.jpg", "photos/cat.jpg", "readme", "zz/é"]


def test_listing_formats_and_params(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        await client.direct_put_container(s, url, "sda", 1, "a", "c", ts(1))
        base = f"{url}/sda/1/a/c"
        async with s.get(base) as r:  # empty plain listing
            assert r.status == 204
        async with s.get(base + "?format=json") as r:
            assert (r.status, await r.json()) == (200, [])
        await put_objects(s, url, NAMES)

        async with s.get(base) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert (await r.text()).splitlines() == NAMES
            assert r.headers["X-Container-Object-Count"] == "5"

        status, _h, rows = await client.direct_get_container(
            s, url, "sda", 1, "a", "c", client.ListingParams(prefix="photos/", delimiter="/")
        )
        assert status == 200 and rows is not None
        assert rows[0] == {"subdir": "photos/2024/"}
        assert rows[1] == {
            "name": "photos/cat.jpg",
            "hash": "etag2",
            "bytes": 2,
            "content_type": "text/plain",
            "last_modified": "2023-11-14T22:13:32.000000",
        }
        params = client.ListingParams(marker="photos/cat.jpg", end_marker="zz", limit=10)
        _, _, rows = await client.direct_get_container(s, url, "sda", 1, "a", "c", params)
        assert [r["name"] for r in rows or []] == ["readme"]
        params = client.ListingParams(reverse=True, limit=2)
        _, _, rows = await client.direct_get_container(s, url, "sda", 1, "a", "c", params)
        assert [r["name"] for r in rows or []] == ["zz/é", "readme"]
        _, _, rows = await client.direct_get_container(
            s, url, "sda", 1, "a", "c", client.ListingParams(path="photos")
        )
        assert [r["name"] for r in rows or []] == ["photos/cat.jpg"]

        async with s.get(base + "?delimiter=/", headers={"Accept": "application/xml"}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/xml; charset=utf-8"
            root = ET.fromstring(await r.read())
        assert root.tag == "container" and root.attrib["name"] == "c"
        assert [e.tag for e in root] == ["subdir", "object", "subdir"]
        assert root[0].attrib["name"] == "photos/" and root[0].findtext("name") == "photos/"
        assert [c.tag for c in root[1]] == [
            "name",
            "hash",
            "bytes",
            "content_type",
            "last_modified",
        ]
        assert root[1].findtext("name") == "readme"

        async with s.get(base, headers={"Accept": "application/json;q=0.9, text/xml"}) as r:
            assert r.headers["Content-Type"] == "text/xml; charset=utf-8"
        async with s.get(base, headers={"Accept": "application/json"}) as r:
            assert len(json.loads(await r.read())) == 5
        async with s.head(base + "?format=json") as r:
            assert r.status == 204 and r.headers["X-Container-Bytes-Used"] == "10"

    run(make_conf(tmp_path), scenario)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "message"),
    [
        ("PUT", "/sda/1/a/c", {}, 400, "missing X-Timestamp"),
        ("PUT", "/sda/1/a/c", {"X-Timestamp": "yesterday"}, 400, "not a valid timestamp"),
        ("PUT", "/sda/1/a/c%00x", ts(1), 400, "must not contain NUL"),
        ("PUT", "/sda/1/a/" + "c" * 257, ts(1), 400, "longer than 256 bytes"),
        ("PUT", "/sda/1/a/%ff", ts(1), 400, "not valid UTF-8"),
        ("PUT", "/sda/x/a/c", ts(1), 400, "bad partition"),
        ("PUT", "/sda/1/a", ts(1), 400, "bad path"),
        (
            "PUT",
            "/sda/1/a/c",
            {
                **ts(1),
                "X-Account-Host": "h:1,h:2",
                "X-Account-Device": "d",
                "X-Account-Partition": "1",
            },
            400,
            "do not match",
        ),
        (
            "PUT",
            "/sda/1/a/c/o",
            {**ts(2), "X-Size": "-1", "X-Content-Type": "t", "X-Etag": "e"},
            400,
            "X-Size must be a non-negative integer",
        ),
        (
            "PUT",
            "/sda/1/a/c/o",
            {**ts(2), "X-Size": "1", "X-Content-Type": "t"},
            400,
            "missing X-Etag",
        ),
        ("PUT", "/sda/1/a/c/" + "o" * 1025, obj_headers(2, 1), 400, "longer than 1024 bytes"),
        ("GET", "/sda/1/a/c?limit=10001", {}, 412, "Maximum limit is 10000"),
        ("GET", "/sda/1/a/c?limit=ten", {}, 400, "limit must be a non-negative integer"),
        ("GET", "/sda/1/a/c?format=yaml", {}, 400, "format must be one of"),
        ("GET", "/sda/1/a/c?prefix=%00", {}, 400, "prefix must not contain NUL"),
        ("GET", "/sda/1/a/c?marker=%ff", {}, 400, "query string is not valid UTF-8"),
        ("GET", "/sda/1/a/c", {"Accept": "image/png"}, 406, "acceptable"),
        ("PATCH", "/sda/1/a/c", ts(1), 405, ""),
        ("POST", "/sda/1/a/c/o", ts(1), 405, ""),
    ],
)
def test_bad_requests_get_clear_errors(
    tmp_path: Path, method: str, path: str, headers: dict[str, str], status: int, message: str
) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        await client.direct_put_container(s, url, "sda", 1, "a", "c", ts(1))
        async with s.request(method, url + path, headers=headers) as r:
            assert r.status == status
            assert message in await r.text()

    run(make_conf(tmp_path), scenario)


def test_missing_device_is_507(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        st, _ = await client.direct_put_container(s, url, "sdz", 1, "a", "c", ts(1))
        assert st == 507
        assert (await client.direct_put_container(s, url, "sda", 1, "a", "c", ts(1)))[0] == 201
        shutil.rmtree(tmp_path / "sda")  # the disk goes away under a running server
        st, _ = await client.direct_head_container(s, url, "sda", 1, "a", "c")
        assert st == 507
        st, _, _ = await client.direct_get_container(s, url, "sda", 1, "a", "c")
        assert st == 507

    run(make_conf(tmp_path), scenario)


def test_without_mount_check_device_dir_is_created(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        st, _ = await client.direct_put_container(s, url, "sdq", 1, "a", "c", ts(1))
        assert st == 201
        assert (tmp_path / "sdq" / "containers.lmdb").is_dir()

    run(make_conf(tmp_path, mount_check=False), scenario)


def test_healthcheck_and_metrics(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        await client.direct_put_container(s, url, "sda", 1, "a", "c", ts(1))
        await put_objects(s, url, ["x", "y"])
        await client.direct_get_container(s, url, "sda", 1, "a", "c")
        async with s.get(url + "/healthcheck") as r:
            assert (r.status, await r.text()) == (200, "OK")
        async with s.get(url + "/metrics") as r:
            text = await r.text()
        assert "cairn_container_listed_rows_total 2.0" in text

    run(make_conf(tmp_path), scenario)
