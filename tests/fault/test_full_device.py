"""Issue 4, fault test 4: a device fills up.

node1/d1 is a small tmpfs mounted by the test (its own real file system) and node1 keeps
`fallocate_reserve_bytes` free. The test fills d1 with a filler file; afterwards PUTs still
succeed (the proxy hands d1's copies off), d1 itself answers 507, and every copy that exists
anywhere has the right bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster import Cluster, start_cluster
from tests.fault.support import cfg_of, quiet_daemons
from tools.nodes import check_item, locate

pytestmark = [pytest.mark.fault, pytest.mark.integration]

ACCOUNT = "AUTH_admin"
TMPFS_BYTES = 8 << 20
RESERVE_BYTES = 1 << 20
OBJECTS = 80
OBJECT_BYTES = 24 << 10


def _mount_tmpfs(path: Path, size_bytes: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs as the full device (needs root): {r.stderr}")


def _fill(path: Path, leave_bytes: int) -> None:
    """Fill the file system at `path` until `leave_bytes` (or less) stay free."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(path / "filler", "wb") as f:
        remaining = max(0, free - leave_bytes)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            n = min(remaining, len(chunk))
            f.write(chunk[:n])
            remaining -= n
        f.flush()
        os.fsync(f.fileno())


@pytest.fixture
def full_cluster(tmp_path: Path):
    mount = tmp_path / "cairn-data" / "nodes" / "node1" / "d1"
    mounted = False

    def tweak(doc: dict[str, Any]) -> None:
        nonlocal mounted
        (mount.parent / "d2").mkdir(parents=True, exist_ok=True)
        _mount_tmpfs(mount, TMPFS_BYTES)
        mounted = True
        doc["nodes"][0]["fallocate_reserve_bytes"] = RESERVE_BYTES
        quiet_daemons(doc)

    c: Cluster | None = None
    try:
        c = start_cluster(tmp_path, tweak=tweak)
        yield c, mount
    finally:
        if c is not None:
            c.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], check=False)


async def _copies(
    cluster: Cluster, container: str, objects: dict[str, bytes]
) -> tuple[dict[str, int], list[str], int]:
    """Good copies per object (primaries and handoffs), wrong copies, and how many objects
    have d1 among their primaries."""
    cfg = cfg_of(cluster)
    good: dict[str, int] = {}
    wrong: list[str] = []
    on_d1 = 0
    async with aiohttp.ClientSession() as s:
        for name, body in objects.items():
            part, prim, hand = locate(cfg, ACCOUNT, container, name)
            on_d1 += any(d.device == "d1" for d, _ in prim)
            want = hashlib.md5(body).hexdigest()
            res = await asyncio.gather(
                *(check_item(s, d, part, ACCOUNT, container, name) for d, _ in prim + hand)
            )
            good[name] = sum(1 for r in res if r["present"] and r.get("etag") == want)
            wrong += [f"{name}: {r}" for r in res if r["present"] and r.get("etag") != want]
    return good, wrong, on_d1


def test_full_device_answers_507_and_puts_go_to_handoffs(full_cluster) -> None:
    cluster, mount = full_cluster
    _fill(mount, RESERVE_BYTES // 2)
    conn = cluster.connection()
    container = "fault-full"
    conn.put_container(container)
    objects = {f"full-{i:03d}": os.urandom(OBJECT_BYTES) for i in range(OBJECTS)}
    for name, body in objects.items():
        conn.put_object(container, name, body)  # raises on anything but 2xx

    for name, body in objects.items():
        assert conn.get_object(container, name)[1] == body

    good, wrong, on_d1 = asyncio.run(_copies(cluster, container, objects))
    assert on_d1 >= OBJECTS // 4, "too few objects had the full device as a primary"
    assert wrong == [], f"corrupted copies: {wrong[:5]}"
    short = {k: v for k, v in good.items() if v < 3}
    assert short == {}, f"objects with fewer than 3 good copies: {short}"
    assert not list(mount.glob("objects/*/*/*/*.data")), "a PUT landed on the full device"

    # the full device itself refuses a write with 507
    from objectd.client import direct_put_object

    cfg = cfg_of(cluster)
    name = "full-direct"
    part = locate(cfg, ACCOUNT, container, name)[0]
    node1 = cfg.node("node1")

    async def direct() -> int:
        async with aiohttp.ClientSession() as s:
            status, _ = await direct_put_object(
                s,
                f"http://{node1.host}:{node1.object_port}",
                "d1",
                part,
                ACCOUNT,
                container,
                name,
                b"x" * OBJECT_BYTES,
                {
                    "X-Timestamp": "1800000000.00000",
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(OBJECT_BYTES),
                },
            )
            return status

    assert asyncio.run(direct()) == 507
