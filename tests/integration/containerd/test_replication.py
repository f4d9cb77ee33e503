"""Container replication, the updater and the daemon runner against real container/account
servers on loopback, with a real ring file, real device directories and real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgpack
import pytest
import tomli_w

from accountd import client as aclient
from accountd.conf import AccountServerConf
from accountd.daemons import main as accountd_main
from accountd.server import make_account_app
from common.clock import SystemClock
from common.config import to_dict
from common.deploy import ClusterConfig, DeploymentConfig, DeviceConfig, StorageNodeConfig
from common.listingdb.daemon import run_jobs
from common.listingdb.http import DeviceEnvs
from common.listingdb.recon import read_recon
from common.server import running_app
from containerd import client
from containerd.conf import ContainerServerConf
from containerd.daemons import build_jobs
from containerd.daemons import main as containerd_main
from containerd.server import make_container_app
from ring import NewDevice, Ring, RingBuilder, write_ring

pytestmark = pytest.mark.integration
PREFIX, SUFFIX = "ipre", "isuf"
A = "AUTH_int"


@dataclass
class Net:
    root: Path
    deploy: DeploymentConfig
    urls: list[str]  # container servers, in node order
    account_url: str


def ring_file(path: Path, ports: list[int], replicas: int) -> None:
    builder = RingBuilder(4, replicas, 0)
    for i, port in enumerate(ports):
        builder.add(NewDevice(1, i + 1, "127.0.0.1", port, "127.0.0.1", port, "sda", 100.0))
    builder.rebalance(seed=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_ring(path, builder.ring_data())


def deployment(root: Path, cports: list[int], aport: int) -> DeploymentConfig:
    nodes = [
        StorageNodeConfig(
            name=f"n{i}",
            devices=[DeviceConfig("sda")],
            container_port=port,
            account_port=aport if i == 0 else 1,
            devices_dir=str(root / f"n{i}"),
        )
        for i, port in enumerate(cports)
    ]
    cluster = ClusterConfig(hash_path_prefix=PREFIX, hash_path_suffix=SUFFIX)
    return DeploymentConfig(cluster=cluster, nodes=nodes, data_dir=str(root))


@asynccontextmanager
async def servers(root: Path, count: int = 3) -> AsyncIterator[Net]:
    """`count` container servers and one account server, with rings naming their ports."""
    conf = {"hash_path_prefix": PREFIX, "hash_path_suffix": SUFFIX, "lmdb_map_bytes": 1 << 26}
    async with AsyncExitStack() as stack:
        urls = []
        for i in range(count):
            (root / f"n{i}" / "sda").mkdir(parents=True)
            cconf = ContainerServerConf(devices_dir=root / f"n{i}", **conf)  # type: ignore[arg-type]
            urls.append(
                await stack.enter_async_context(running_app(await make_container_app(cconf)))
            )
        aconf = AccountServerConf(devices_dir=root / "n0", **conf)  # type: ignore[arg-type]
        aurl = await stack.enter_async_context(running_app(await make_account_app(aconf)))
        cports = [int(u.rsplit(":", 1)[1]) for u in urls]
        aport = int(aurl.rsplit(":", 1)[1])
        ring_file(root / "rings" / "container.ring", cports, min(3, count))
        ring_file(root / "rings" / "account.ring", [aport], 1)
        yield Net(root, deployment(root, cports, aport), urls, aurl)


def ts(n: int) -> dict[str, str]:
    return {"X-Timestamp": f"{1_700_000_000 + n}.00000"}


def obj(n: int, size: int) -> dict[str, str]:
    return {**ts(n), "X-Size": str(size), "X-Content-Type": "text/plain", "X-Etag": f"e{size}"}


async def run_daemons(net: Net, only: tuple[str, ...] = ("replicator",)) -> None:
    """One pass of the chosen container daemons on every node, as the CLI does it."""
    async with aiohttp.ClientSession() as session:
        for node in net.deploy.nodes:
            conf = ContainerServerConf.from_deployment(net.deploy, node, lmdb_map_bytes=1 << 26)
            envs = DeviceEnvs(conf.devices_dir, "containers", True, conf.env_options())
            try:
                jobs = build_jobs(net.deploy, node, envs, session, SystemClock(), only)
                await run_jobs(jobs, net.deploy.devices_dir(node), node.name, SystemClock(), True)
            finally:
                await asyncio.to_thread(envs.close)


async def listing(s: aiohttp.ClientSession, url: str, part: int) -> tuple[int, list[str], str]:
    status, headers, rows = await client.direct_get_container(s, url, "sda", part, A, "c")
    names = [r["name"] for r in rows or []]
    return status, names, headers.get("X-Container-Meta-Color", "")


def test_a_node_that_missed_updates_converges(tmp_path: Path) -> None:
    async def main() -> None:
        async with servers(tmp_path) as net, aiohttp.ClientSession() as s:
            part = Ring(tmp_path / "rings" / "container.ring", PREFIX, SUFFIX).get_part(A, "c")
            up, down = net.urls[:2], net.urls[2]
            for url in net.urls:
                assert (await client.direct_put_container(s, url, "sda", part, A, "c", ts(1)))[
                    0
                ] == 201
            for i in range(20):  # node 2 is "down" for these
                for url in up:
                    await client.direct_put_container_object(
                        s, url, "sda", part, A, "c", f"o{i:02d}", obj(10 + i, i)
                    )
            for url in up:
                await client.direct_delete_container_object(
                    s, url, "sda", part, A, "c", "o00", ts(40)
                )
            await client.direct_post_container(
                s, up[0], "sda", part, A, "c", {**ts(41), "X-Container-Meta-Color": "blue"}
            )
            await client.direct_put_container_object(
                s, down, "sda", part, A, "c", "only-on-2", obj(42, 3)
            )

            await run_daemons(net)

            want = [f"o{i:02d}" for i in range(1, 20)] + ["only-on-2"]
            for url in net.urls:
                assert await listing(s, url, part) == (200, sorted(want), "blue")
            recon = read_recon(tmp_path / "n0", "container-replicator")
            assert recon is not None and recon["v"] == 1 and recon["node"] == "n0"
            assert recon["stats"]["dbs_total"] == 1 and recon["stats"]["dbs_failed"] == 0

            assert await client.direct_get_recon(s, net.urls[0], "container-replicator") == (
                200,
                recon,
            )
            async with s.get(f"{net.urls[0]}/metrics") as resp:
                text = await resp.text()
            assert (
                'cairn_daemon_pass_stat{daemon="container-replicator",stat="dbs_total"} 1.0' in text
            )
            # The updater has not run on this node; the account server has its own daemons.
            assert await client.direct_get_recon(s, net.urls[0], "container-updater") == (
                404,
                None,
            )
            status, _ = await aclient.direct_get_recon(s, net.account_url, "container-replicator")
            assert status == 404

    asyncio.run(main())


def test_replicate_endpoint_answers_garbage_in_its_own_form(tmp_path: Path) -> None:
    async def main() -> None:
        async with servers(tmp_path, 1) as net, aiohttp.ClientSession() as s:
            url = f"{net.urls[0]}/replicate/sda/1/{'a' * 32}"
            for body in (b"", b"\xc1\xc1", msgpack.packb({"v": 2, "op": "sync"})):
                async with s.post(url, data=body) as resp:
                    assert resp.status == 400
                    reply = msgpack.unpackb(await resp.read())
                    assert reply["v"] == 1 and reply["st"] == "error" and reply["err"]
            async with s.post(f"{net.urls[0]}/replicate/sda/1/nothex", data=b"") as resp:
                assert resp.status == 400
                assert msgpack.unpackb(await resp.read())["st"] == "error"
            async with s.post(f"{net.urls[0]}/replicate/sdz/1/{'a' * 32}", data=b"") as resp:
                assert resp.status == 400  # the body is checked before the device
            async with s.get(f"{net.urls[0]}/recon/NOT-a-daemon") as resp:
                assert resp.status == 404

    asyncio.run(main())


def test_updater_retries_until_the_account_accepts(tmp_path: Path) -> None:
    async def main() -> None:
        async with servers(tmp_path, 1) as net, aiohttp.ClientSession() as s:
            url = net.urls[0]
            assert (await client.direct_put_container(s, url, "sda", 3, A, "c", ts(1)))[0] == 201
            await client.direct_put_container_object(s, url, "sda", 3, A, "c", "o", obj(2, 7))

            await run_daemons(net, ("updater",))  # the account does not exist yet: 404
            first = read_recon(tmp_path / "n0", "container-updater")
            assert first is not None and first["stats"]["failed"] == 1

            apart = Ring(tmp_path / "rings" / "account.ring", PREFIX, SUFFIX).get_part(A)
            await aclient.direct_put_account(s, net.account_url, "sda", apart, A, ts(0))
            await run_daemons(net, ("updater",))
            second = read_recon(tmp_path / "n0", "container-updater")
            assert second is not None
            assert (second["stats"]["reported"], second["stats"]["failed"]) == (1, 0)
            status, _h, rows = await aclient.direct_get_account(s, net.account_url, "sda", apart, A)
            assert status == 200
            assert [(r["name"], r["count"], r["bytes"]) for r in rows or []] == [("c", 1, 7)]

    asyncio.run(main())


def test_daemon_cli_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with servers(tmp_path) as net, aiohttp.ClientSession() as s:
            part = Ring(tmp_path / "rings" / "container.ring", PREFIX, SUFFIX).get_part(A, "c")
            await client.direct_put_container(s, net.urls[0], "sda", part, A, "c", ts(1))
            cfg = tmp_path / "deploy.toml"
            cfg.write_text(tomli_w.dumps(to_dict(net.deploy)))
            cmd = [sys.executable, "-m", "containerd.daemons", "--config", str(cfg), "--node", "n0"]
            proc = await asyncio.create_subprocess_exec(*cmd, "--once", stderr=subprocess.PIPE)
            _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
            assert proc.returncode == 0, err.decode()
            for url in net.urls[1:]:  # the full copy reached both peers
                assert (await listing(s, url, part))[:2] == (200, [])
            for name in ("container-replicator", "container-updater"):
                record = json.loads((tmp_path / "n0" / "recon" / f"{name}.json").read_text())
                assert record["v"] == 1 and record["passes"] == 1 and record["error"] is None

            # No account ring in a fresh data dir: a clear message and exit status 2.
            (tmp_path / "rings" / "account.ring").unlink()
            acmd = [sys.executable, "-m", "accountd.daemons", "--config", str(cfg), "--node", "n0"]
            proc = await asyncio.create_subprocess_exec(*acmd, "--once", stderr=subprocess.PIPE)
            _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
            assert proc.returncode == 2 and b"account.ring" in err

    asyncio.run(main())


def test_daemons_loop_until_sigterm_and_stop_cleanly(tmp_path: Path) -> None:
    async def main() -> None:
        async with servers(tmp_path, 1) as net:
            cfg = tmp_path / "deploy.toml"
            raw = to_dict(net.deploy)
            raw["account_daemons"] = {"replicator_interval_s": 0.2}
            cfg.write_text(tomli_w.dumps(raw))
            cmd = [sys.executable, "-m", "accountd.daemons", "--config", str(cfg), "--node", "n0"]
            proc = await asyncio.create_subprocess_exec(*cmd, stderr=subprocess.DEVNULL)
            recon = tmp_path / "n0" / "recon" / "account-replicator.json"
            try:
                for _ in range(600):  # up to 60 s on a loaded machine
                    if recon.exists() and json.loads(recon.read_text())["passes"] >= 2:
                        break
                    await asyncio.sleep(0.1)
                assert json.loads(recon.read_text())["passes"] >= 2  # it loops
            finally:
                proc.terminate()
                code = await asyncio.wait_for(proc.wait(), timeout=30)
            assert code == 0

    asyncio.run(main())


def test_daemon_cli_refuses_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "deploy.toml"
    cfg.write_text(tomli_w.dumps(to_dict(deployment(tmp_path, [6201], 6202))))
    for args, message in (
        (["--node", "n0", "--only", "auditor"], "--only"),
        (["--node", "nope"], "no node named 'nope'"),
    ):
        assert containerd_main(["--config", str(cfg), *args]) == 2
        assert message in capsys.readouterr().err
    assert accountd_main(["--config", str(tmp_path / "missing.toml"), "--node", "n0"]) == 2
    assert "no such config file" in capsys.readouterr().err
