"""The account server over real HTTP on 127.0.0.1 (in-process, ephemeral port)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from accountd import client
from accountd.conf import AccountServerConf
from accountd.server import make_account_app
from common.clock import ManualClock
from common.server import running_app

Scenario = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def make_conf(tmp_path: Path) -> AccountServerConf:
    (tmp_path / "sda").mkdir(exist_ok=True)
    return AccountServerConf(
        devices_dir=tmp_path,
        hash_path_prefix="pre",
        hash_path_suffix="suf",
        lmdb_map_bytes=1 << 26,
        threads_per_device=2,
    )


def run(conf: AccountServerConf, scenario: Scenario) -> None:
    async def main() -> None:
        app = await make_account_app(conf, clock=ManualClock())
        async with running_app(app) as url, aiohttp.ClientSession() as session:
            await scenario(session, url)

    asyncio.run(main())


def ts(n: int) -> str:
    return f"{1_700_000_000 + n}.00000"


def report(put: int, count: int, size: int, delete: int = 0) -> dict[str, str]:
    return {
        "X-Put-Timestamp": ts(put),
        "X-Delete-Timestamp": ts(delete) if delete else "0",
        "X-Object-Count": str(count),
        "X-Bytes-Used": str(size),
    }


def test_account_lifecycle(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        put = {
            "X-Timestamp": ts(1),
            "X-Account-Meta-Owner": "me",
            "X-Account-Access-Control": '{"read-only":["u"]}',
        }
        assert (await client.direct_put_account(s, url, "sda", 2, "AUTH_t", put))[0] == 201
        assert (
            await client.direct_put_account(s, url, "sda", 2, "AUTH_t", {"X-Timestamp": ts(2)})
        )[0] == 202
        for i, name in enumerate(["c1", "c2", "d-x"]):
            st, _ = await client.direct_put_account_container(
                s, url, "sda", 2, "AUTH_t", name, report(10 + i, i + 1, 100 * (i + 1))
            )
            assert st == 201
        st, h = await client.direct_head_account(s, url, "sda", 2, "AUTH_t")
        assert st == 204
        assert (h["X-Account-Container-Count"], h["X-Account-Object-Count"]) == ("3", "6")
        assert h["X-Account-Bytes-Used"] == "600"
        assert h["X-Account-Meta-Owner"] == "me"
        assert h["X-Account-Sysmeta-Core-Access-Control"] == '{"read-only":["u"]}'
        assert h["X-Timestamp"] == ts(1) and h["X-Put-Timestamp"] == ts(2)

        status, _h, rows = await client.direct_get_account(
            s, url, "sda", 2, "AUTH_t", client.ListingParams(delimiter="-")
        )
        assert status == 200
        assert rows == [
            {"name": "c1", "count": 1, "bytes": 100, "last_modified": "2023-11-14T22:13:30.000000"},
            {"name": "c2", "count": 2, "bytes": 200, "last_modified": "2023-11-14T22:13:31.000000"},
            {"subdir": "d-"},
        ]
        async with s.get(f"{url}/sda/2/AUTH_t?format=xml&limit=1") as r:
            root = ET.fromstring(await r.read())
        assert root.tag == "account" and root.attrib["name"] == "AUTH_t"
        assert [c.tag for c in root[0]] == ["name", "count", "bytes", "last_modified"]
        async with s.get(f"{url}/sda/2/AUTH_t?prefix=zzz") as r:
            assert r.status == 204

        # The container c2 is deleted: its row goes, totals follow.
        st, _ = await client.direct_put_account_container(
            s, url, "sda", 2, "AUTH_t", "c2", report(11, 0, 0, delete=20)
        )
        assert st == 204
        _, h = await client.direct_head_account(s, url, "sda", 2, "AUTH_t")
        assert (h["X-Account-Container-Count"], h["X-Account-Object-Count"]) == ("2", "4")

        post = {"X-Timestamp": ts(30), "X-Account-Meta-Owner": "", "X-Account-Meta-New": "n"}
        assert (await client.direct_post_account(s, url, "sda", 2, "AUTH_t", post))[0] == 204
        _, h = await client.direct_head_account(s, url, "sda", 2, "AUTH_t")
        assert "X-Account-Meta-Owner" not in h and h["X-Account-Meta-New"] == "n"

        st, _ = await client.direct_delete_account(
            s, url, "sda", 2, "AUTH_t", {"X-Timestamp": ts(40)}
        )
        assert st == 204
        st, h = await client.direct_head_account(s, url, "sda", 2, "AUTH_t")
        assert st == 404 and h["X-Account-Status"] == "Deleted"
        st, _ = await client.direct_put_account(s, url, "sda", 2, "AUTH_t", {"X-Timestamp": ts(35)})
        assert st == 403  # an older PUT does not undo the delete
        st, _ = await client.direct_put_account_container(
            s, url, "sda", 2, "AUTH_t", "c9", report(50, 0, 0)
        )
        assert st == 404
        status, _h, rows = await client.direct_get_account(s, url, "sda", 2, "AUTH_t")
        assert (status, rows) == (404, None)

    run(make_conf(tmp_path), scenario)


def test_rows_need_an_account_and_missing_device_is_507(tmp_path: Path) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        st, _ = await client.direct_put_account_container(
            s, url, "sda", 2, "AUTH_n", "c", report(1, 0, 0)
        )
        assert st == 404
        assert (await client.direct_head_account(s, url, "sda", 2, "AUTH_n"))[0] == 404
        assert (
            await client.direct_post_account(s, url, "sda", 2, "AUTH_n", {"X-Timestamp": ts(1)})
        )[0] == 404
        assert (
            await client.direct_delete_account(s, url, "sda", 2, "AUTH_n", {"X-Timestamp": ts(1)})
        )[0] == 404
        assert (
            await client.direct_put_account(s, url, "sdb", 2, "AUTH_n", {"X-Timestamp": ts(1)})
        )[0] == 507

    run(make_conf(tmp_path), scenario)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "message"),
    [
        ("PUT", "/sda/1/AUTH_t", {"X-Timestamp": "-1"}, 400, "not a valid timestamp"),
        ("PUT", "/sda/1/AUTH_t/c", {"X-Object-Count": "1"}, 400, "missing X-Put-Timestamp"),
        (
            "PUT",
            "/sda/1/AUTH_t/c",
            {"X-Put-Timestamp": ts(3), "X-Object-Count": "many"},
            400,
            "X-Object-Count must be a non-negative integer",
        ),
        (
            "PUT",
            "/sda/1/AUTH_t/c",
            {"X-Put-Timestamp": ts(3), "X-Delete-Timestamp": "x"},
            400,
            "X-Delete-Timestamp is not a valid timestamp",
        ),
        ("PUT", "/sda/1/AUTH_t/" + "c" * 257, {"X-Put-Timestamp": ts(3)}, 400, "longer than 256"),
        ("PUT", "/sda/1/AUTH_t/c/o", {"X-Put-Timestamp": ts(3)}, 400, "bad path"),
        ("GET", "/sda/1/AUTH_t?limit=20000", {}, 412, "Maximum limit is 10000"),
        ("DELETE", "/sda/1/AUTH_t/c", {"X-Timestamp": ts(3)}, 405, ""),
        ("GET", "/sd%00a/1/AUTH_t", {}, 400, "bad device name"),
    ],
)
def test_bad_requests_get_clear_errors(
    tmp_path: Path, method: str, path: str, headers: dict[str, str], status: int, message: str
) -> None:
    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        await client.direct_put_account(s, url, "sda", 1, "AUTH_t", {"X-Timestamp": ts(1)})
        async with s.request(method, url + path, headers=headers) as r:
            assert r.status == status
            assert message in await r.text()

    run(make_conf(tmp_path), scenario)
