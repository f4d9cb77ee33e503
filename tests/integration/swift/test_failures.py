"""Quorum, handoffs and clean errors when storage nodes or devices fail (own cluster)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from swiftclient import ClientException

from tests.cluster import start_cluster

pytestmark = [pytest.mark.integration, pytest.mark.fault]

NODE_SERVICES = ("object", "container", "account")


@pytest.fixture(scope="module")
def fcluster(tmp_path_factory):
    def tweak(doc):
        # Nodes are taken down and brought back on purpose here: forget their errors fast.
        doc["proxy"]["error_suppression_interval_s"] = 2.0
        # Which copy a GET reads first is part of what the mid-object test sets up.
        doc["proxy"]["read_order"] = "ring"

    c = start_cluster(tmp_path_factory.mktemp("failures"), tweak=tweak)
    try:
        yield c
    finally:
        c.stop()


def _down(cluster, node: str) -> None:
    for kind in NODE_SERVICES:
        cluster.hold(f"{node}-{kind}")
        cluster.kill9(f"{node}-{kind}")


def _up(cluster, node: str) -> None:
    for kind in NODE_SERVICES:
        cluster.release(f"{node}-{kind}")
    cluster.wait_healthy()


def test_one_node_down_put_and_get_work(fcluster):
    conn = fcluster.connection()
    c = f"f-{uuid.uuid4().hex[:8]}"
    conn.put_container(c)
    before = {f"old{i}": os.urandom(2000) for i in range(10)}
    for k, v in before.items():
        conn.put_object(c, k, v)
    _down(fcluster, "node2")
    try:
        time.sleep(0.5)
        for k, v in before.items():
            assert conn.get_object(c, k)[1] == v
        fresh = {f"new{i}": os.urandom(3000) for i in range(10)}
        for k, v in fresh.items():
            conn.put_object(c, k, v)
        for k, v in fresh.items():
            assert conn.get_object(c, k)[1] == v
    finally:
        _up(fcluster, "node2")
    for k, v in {**before, **fresh}.items():
        assert conn.get_object(c, k)[1] == v


def test_both_nodes_down_is_clean_503(fcluster):
    conn = fcluster.connection()
    conn.get_auth()
    c = f"f-{uuid.uuid4().hex[:8]}"
    conn.put_container(c)
    conn.put_object(c, "o", b"x")
    _down(fcluster, "node1")
    _down(fcluster, "node2")
    try:
        time.sleep(0.5)
        for call in (lambda: conn.put_object(c, "p", b"y"), lambda: conn.get_object(c, "o")):
            with pytest.raises(ClientException) as e:
                call()
            assert e.value.http_status == 503
    finally:
        _up(fcluster, "node1")
        _up(fcluster, "node2")


def test_missing_device_507_then_handoff(fcluster):
    conn = fcluster.connection()
    c = f"f-{uuid.uuid4().hex[:8]}"
    conn.put_container(c)
    dev = fcluster.data_dir / "nodes" / "node1" / "d1"
    moved = dev.with_name("d1.unmounted")
    dev.rename(moved)
    try:
        objs = {f"o{i}": os.urandom(500) for i in range(20)}
        for k, v in objs.items():
            conn.put_object(c, k, v)
        for k, v in objs.items():
            assert conn.get_object(c, k)[1] == v
    finally:
        moved.rename(dev)
    # 507s were answered: the proxy error-limited d1 and wrote to handoffs instead.
    log = (fcluster.data_dir / "logs" / "node1-object.log").read_text()
    assert '"status": 507' in log


def test_get_resumes_when_a_replica_is_corrupt_mid_object(fcluster):
    """Two of three copies have a flipped byte in different 64 KiB blocks: the object
    servers stop at the bad block (and quarantine), the proxy resumes the body on the next
    replica each time, and the client gets every byte right in one response."""
    from common.deploy import load_deployment
    from ring import hash_path
    from tools.nodes import locate

    conn = fcluster.connection()
    # Earlier tests here bounce nodes: let the proxy forget their errors (2 s, see the
    # fixture), so the copies land on the primaries and the GET reads them in ring order.
    time.sleep(2.5)
    c = f"f-{uuid.uuid4().hex[:8]}"
    conn.put_container(c)
    data = os.urandom(2 * 1024 * 1024)
    conn.put_object(c, "big", data)
    cfg = load_deployment(fcluster.config_path, data_dir=fcluster.data_dir)
    account = conn.get_auth()[0].rsplit("/", 1)[1]
    _part, primaries, _ = locate(cfg, account, c, "big")
    digest = hash_path(
        cfg.cluster.hash_path_prefix, cfg.cluster.hash_path_suffix, account, c, "big"
    )
    files = {
        p.parts[p.parts.index("objects") - 1]: p
        for p in fcluster.data_dir.glob(f"nodes/*/*/objects/*/*/{digest}/*.data")
    }
    assert {dev.device for dev, _e in primaries} <= set(files), (files, primaries)
    first, second = (files[dev.device] for dev, _e in primaries[:2])
    for path, block in ((first, 5), (second, 20)):
        with open(path, "r+b") as f:
            f.seek(block * 65536 + 100)
            b = f.read(1)
            f.seek(block * 65536 + 100)
            f.write(bytes([b[0] ^ 0xFF]))
    headers, body = conn.get_object(c, "big")
    assert body == data
    trans_id = headers["x-trans-id"]
    log = (fcluster.data_dir / "logs" / "proxy.log").read_text()
    resumed = [ln for ln in log.splitlines() if trans_id in ln and "resuming" in ln]
    assert len(resumed) == 2, resumed  # the first copy, then the second, broke off
