"""Container stats flowing to a real account server: on PUT/DELETE, after object changes
(rate-limited), and by the updater pass when the account was unreachable."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp

from accountd import client as aclient
from accountd.conf import AccountServerConf
from accountd.server import make_account_app
from common.clock import ManualClock
from common.listingdb.http import DeviceEnvs
from common.server import running_app
from containerd import client
from containerd.conf import ContainerServerConf
from containerd.server import STATE, make_container_app
from containerd.updater import AccountTarget, run_once


def confs(tmp_path: Path) -> tuple[ContainerServerConf, AccountServerConf]:
    for d in ("c/sda", "a/sda"):
        (tmp_path / d).mkdir(parents=True)
    common = {"hash_path_prefix": "p", "hash_path_suffix": "s", "lmdb_map_bytes": 1 << 26}
    cconf = ContainerServerConf(
        devices_dir=tmp_path / "c",
        account_update_interval_s=0.0,
        account_update_timeout_s=2.0,
        **common,  # type: ignore[arg-type]
    )
    return cconf, AccountServerConf(devices_dir=tmp_path / "a", **common)  # type: ignore[arg-type]


def ts(n: int) -> dict[str, str]:
    return {"X-Timestamp": f"{1_700_000_000 + n}.00000"}


def acct_headers(account_url: str) -> dict[str, str]:
    return {
        "X-Account-Host": account_url.removeprefix("http://"),
        "X-Account-Device": "sda",
        "X-Account-Partition": "4",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def account_rows(s: aiohttp.ClientSession, aurl: str) -> list[tuple[str, int, int]]:
    status, _h, rows = await aclient.direct_get_account(s, aurl, "sda", 4, "AUTH_a")
    assert status == 200, status
    return [(r["name"], r["count"], r["bytes"]) for r in rows or []]


def test_stats_reach_the_account(tmp_path: Path) -> None:
    cconf, aconf = confs(tmp_path)

    async def main() -> None:
        capp = await make_container_app(cconf, clock=ManualClock())
        aapp = await make_account_app(aconf)
        async with (
            running_app(capp) as curl,
            running_app(aapp) as aurl,
            aiohttp.ClientSession() as s,
        ):
            # No account yet: the container PUT answers 404 like Swift's.
            st, _ = await client.direct_put_container(
                s, curl, "sda", 1, "AUTH_a", "c", {**ts(1), **acct_headers(aurl)}
            )
            assert st == 404
            await aclient.direct_put_account(s, aurl, "sda", 4, "AUTH_a", ts(0))
            st, _ = await client.direct_put_container(
                s, curl, "sda", 1, "AUTH_a", "c", {**ts(2), **acct_headers(aurl)}
            )
            assert st == 202  # the database was made by the first PUT
            assert await account_rows(s, aurl) == [("c", 0, 0)]

            for i, size in enumerate([5, 7, 9]):
                hdrs = {**ts(10 + i), "X-Size": str(size), "X-Content-Type": "t", "X-Etag": "e"}
                await client.direct_put_container_object(
                    s, curl, "sda", 1, "AUTH_a", "c", f"o{i}", hdrs
                )
            reporter = capp[STATE].reporter
            assert reporter is not None
            await reporter.drain()
            assert await account_rows(s, aurl) == [("c", 3, 21)]

            for i in range(3):
                await client.direct_delete_container_object(
                    s, curl, "sda", 1, "AUTH_a", "c", f"o{i}", ts(20 + i)
                )
            st, _ = await client.direct_delete_container(
                s, curl, "sda", 1, "AUTH_a", "c", {**ts(30), **acct_headers(aurl)}
            )
            assert st == 204
            await reporter.drain()
            assert await account_rows(s, aurl) == []

    asyncio.run(main())


def test_updater_resends_what_the_account_missed(tmp_path: Path) -> None:
    cconf, aconf = confs(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"

    async def main() -> None:
        clock = ManualClock()
        capp = await make_container_app(cconf, clock=clock)
        async with running_app(capp) as curl, aiohttp.ClientSession() as s:
            for name in ("c1", "c2"):
                st, _ = await client.direct_put_container(
                    s, curl, "sda", 1, "AUTH_a", name, {**ts(1), **acct_headers(dead)}
                )
                assert st == 201  # the account was unreachable: the PUT still succeeds
            hdrs = {**ts(5), "X-Size": "4", "X-Content-Type": "t", "X-Etag": "e"}
            await client.direct_put_container_object(s, curl, "sda", 1, "AUTH_a", "c1", "o", hdrs)
            reporter = capp[STATE].reporter
            assert reporter is not None
            await reporter.drain()

        aapp = await make_account_app(aconf)
        envs = DeviceEnvs(cconf.devices_dir, "containers", True, cconf.env_options())
        try:
            async with running_app(aapp) as aurl, aiohttp.ClientSession() as s:
                await aclient.direct_put_account(s, aurl, "sda", 4, "AUTH_a", ts(0))
                opened = await asyncio.to_thread(envs.open_all)
                # Without a locator the remembered (dead) address is used: still failing.
                stats = await run_once(s, opened, clock, timeout_s=1.0)
                assert (stats.checked, stats.reported, stats.failed) == (2, 0, 2)

                live = (AccountTarget(aurl.removeprefix("http://"), "sda", 4),)
                stats = await run_once(s, opened, clock, timeout_s=1.0, locate=lambda _a: live)
                assert (stats.reported, stats.failed) == (2, 0)
                assert await account_rows(s, aurl) == [("c1", 1, 4), ("c2", 0, 0)]
                stats = await run_once(s, opened, clock, timeout_s=1.0, locate=lambda _a: live)
                assert (stats.checked, stats.reported) == (2, 0)  # nothing changed since
        finally:
            envs.close()

    asyncio.run(main())
