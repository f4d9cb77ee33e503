"""Durability on a real cluster: SYNCHRONIZE CACHE, kill -9 blockd and a storage node, read back.

The cluster is started the `cairn up` way with blockd under the supervisor. The flush timer
and the journal's idle checkpoint are set to an hour, so the only thing that can have put
the data in the store is the SYNCHRONIZE CACHE that QEMU sends when it closes the LUN: whole
chunks for the sequential pattern, journal records for the scattered 4 KiB writes after it
(which the restarted blockd must replay).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time

import pytest

import ring
from tests.cluster import free_ports, start_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.fault,
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("qemu-img", "qemu-io", "iscsi-inq")),
        reason="needs qemu-utils, qemu-block-extra and libiscsi-bin (Debian packages)",
    ),
    pytest.mark.skipif(not hasattr(ring, "Ring"), reason="the runtime ring (ring.Ring) is missing"),
]

SIZE = 6 << 20
EXPORT_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 120
NODE_SERVICES = ("object", "container", "account")


def _tweak_ports(ports):
    def tweak(doc):
        doc["block"].update(
            enabled=True,
            api_port=ports[0],
            iscsi_port=ports[1],
            flush_interval_s=3600.0,
            journal_idle_s=3600.0,
            lease_settle_s=0.2,
            holder_id="durability-blockd",
        )

    return tweak


def _run(*argv: str, timeout_s: float = RUN_TIMEOUT_S) -> tuple[int, str]:
    import subprocess

    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    return p.returncode, p.stdout + p.stderr


def _wait_exported(url: str) -> None:
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    out = ""
    while time.monotonic() < deadline:
        code, out = _run("iscsi-inq", url, timeout_s=30)
        if code == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"volume never exported: {out}")


def _create_volume(cluster) -> tuple[str, str]:
    """Create the volume straight in the store (as blockd would), then let blockd export it."""
    from blockd.manager import VolumeManager
    from blockd.ringstore import open_ring_store
    from common.clock import SystemClock
    from common.deploy import load_deployment

    cfg = load_deployment(cluster.config_path, cluster.data_dir)

    async def main() -> tuple[str, str]:
        async with open_ring_store(cfg, SystemClock()) as store:
            m = VolumeManager(store, cfg.block, holder_id="durability-creator")
            rec = await m.create("AUTH_admin", "durable", SIZE)
            await m.stop()  # releases the lease for blockd
            return rec.id, m.export_info(rec).url

    return asyncio.run(main())


def test_synced_pattern_survives_kill9_of_blockd_and_a_storage_node(tmp_path):
    ports = free_ports(2)
    cluster = start_cluster(tmp_path, tweak=_tweak_ports(ports))
    try:
        _volume_id, url = _create_volume(cluster)
        cluster.kill9("blockd")  # the supervisor restarts it; it exports the new volume
        _wait_exported(url)

        pattern = random.Random(11).randbytes(SIZE)
        image = tmp_path / "pattern.raw"
        image.write_bytes(pattern)
        code, out = _run(
            "qemu-img",
            "convert",
            "-n",
            "-t",
            "writeback",
            "-f",
            "raw",
            "-O",
            "raw",
            str(image),
            url,
        )
        assert code == 0, out
        # Scattered small writes: SYNCHRONIZE CACHE makes them journal records, not chunks.
        rng = random.Random(12)
        want = bytearray(pattern)
        cmds = []
        for i, block in enumerate(rng.sample(range(SIZE // 4096), 24)):
            byte = 0x10 + i
            cmds += ["-c", f"write -P {byte} {block * 4096} 4096"]
            want[block * 4096 : (block + 1) * 4096] = bytes([byte]) * 4096
        code, out = _run("qemu-io", "-f", "raw", *cmds, url)
        assert code == 0, out

        for kind in NODE_SERVICES:
            cluster.hold(f"node2-{kind}")
            cluster.kill9(f"node2-{kind}")
        cluster.hold("blockd")
        cluster.kill9("blockd")
        time.sleep(0.5)
        cluster.release("blockd")
        _wait_exported(url)

        back = tmp_path / "back.raw"
        code, out = _run("qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(back))
        assert code == 0, out
        assert back.read_bytes() == bytes(want)
    finally:
        for kind in NODE_SERVICES:
            cluster.release(f"node2-{kind}")
        cluster.stop()
