"""`python -m objectd.daemons` as a real process against real object servers."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from common.clock import SystemClock
from common.timestamps import Timestamp
from tests.integration.objectd.conftest import run
from tests.integration.objectd.replication_cluster import PREFIX, SUFFIX, Cluster, cluster

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _write_config(tmp_path: Path, c: Cluster) -> Path:
    lines = [
        "version = 1",
        f'data_dir = "{tmp_path}"',
        "[cluster]",
        f'hash_path_prefix = "{PREFIX}"',
        f'hash_path_suffix = "{SUFFIX}"',
        "part_power = 4",
        "[object_daemons]",
        "replicator_interval_s = 0.2",
        "auditor_interval_s = 0.2",
        "updater_interval_s = 0.2",
        "expirer_interval_s = 0.2",
    ]
    for n in c.nodes:
        lines += [
            "[[nodes]]",
            f'name = "n{n.index}"',
            f"object_port = {n.port}",
            f'devices_dir = "{n.devices_dir}"',
            'devices = [{name = "sda"}]',
        ]
    path = tmp_path / "cairn.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _daemons(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "objectd.daemons",
        "--config",
        str(config),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def test_once_replicates_and_writes_every_recon_file(tmp_path):
    async def go():
        async with cluster(tmp_path, SystemClock()) as c:
            part, prim, _ = c.placement("cli")
            t = Timestamp.from_float(c.clock.time()).internal
            assert await c.put(prim[0], part, "cli", b"via the daemon", t) == 201
            config = _write_config(tmp_path, c)
            proc = await _daemons(config, "--node", f"n{prim[0].index}", "--once")
            _out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()[-2000:]
            for n in prim[1:]:
                assert (await c.get(n, part, "cli"))[:2] == (200, b"via the daemon")
            recon = prim[0].devices_dir / "recon"
            names = sorted(p.name for p in recon.iterdir())
            assert names == [
                "object-auditor-zbf.json",
                "object-auditor.json",
                "object-expirer.json",
                "object-replicator.json",
                "object-updater.json",
            ]
            rep = json.loads((recon / "object-replicator.json").read_text())
            assert rep["version"] == 1 and rep["stats"]["ok"] is True
            assert rep["stats"]["objects_synced"] == 2  # one file to each of two peers
            assert rep["stats"]["partitions_in_sync"] == rep["stats"]["partitions_total"] == 1
            aud = json.loads((recon / "object-auditor.json").read_text())
            assert aud["stats"]["files_checked"] == 1 and aud["stats"]["quarantined_total"] == 0

    run(go())


def test_the_loop_runs_passes_until_sigterm(tmp_path):
    async def go():
        async with cluster(tmp_path, SystemClock()) as c:
            config = _write_config(tmp_path, c)
            proc = await _daemons(config, "--node", "n1", "--only", "replicator,updater")
            recon = c.nodes[1].devices_dir / "recon" / "object-updater.json"
            for _ in range(300):
                if recon.exists():
                    break
                await asyncio.sleep(0.1)
            assert recon.exists()
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()[-2000:]
            assert not (c.nodes[1].devices_dir / "recon" / "object-auditor.json").exists()

    run(go())


def test_bad_arguments_exit_2_with_a_message(tmp_path):
    async def go():
        async with cluster(tmp_path, SystemClock()) as c:
            config = _write_config(tmp_path, c)
            for args, text in (
                (["--node", "nope", "--once"], "no node named"),
                (["--node", "n0", "--only", "reaper"], "--only"),
            ):
                proc = await _daemons(config, *args)
                _, err = await asyncio.wait_for(proc.communicate(), 30)
                assert proc.returncode == 2 and text in err.decode()

    run(go())


def test_a_pass_without_a_ring_fails_cleanly_into_its_recon_file(tmp_path):
    from common.deploy import load_deployment
    from objectd.daemons import NodeDaemons

    (tmp_path / "n0" / "sda").mkdir(parents=True)
    config = tmp_path / "cairn.toml"
    config.write_text(
        f'version = 1\ndata_dir = "{tmp_path}"\n[cluster]\nhash_path_prefix = "p"\n'
        f'hash_path_suffix = "s"\n[[nodes]]\nname = "n0"\ndevices_dir = "{tmp_path / "n0"}"\n'
        'devices = [{name = "sda"}]\n'
    )
    deploy = load_deployment(config)

    async def go():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            nd = NodeDaemons(deploy, deploy.node("n0"), s, SystemClock())
            (rep,) = nd.daemons(("replicator",))
            assert await nd.run_pass(rep) is False

    run(go())
    rec = json.loads((tmp_path / "n0" / "recon" / "object-replicator.json").read_text())
    assert rec["stats"]["ok"] is False and "ring" in rec["stats"]["failed"]
