"""Issue 4, fault test 3: a zone is added and the rings rebalanced under a read/write load.

The deployment has three storage nodes but the rings first hold only node1 and node2 (zones
1 and 2). Under a steady PUT/GET load the test adds node3's devices as zone 3 to every
ring's builder file, rebalances and writes new rings, exactly as an operator would with
`cairn-ring`. No read may fail, no acknowledged object may be lost, and after replication
every object file sits on a primary of its partition and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.deploy import load_deployment
from ring import NewDevice, load_builder, save_builder, write_ring
from tests.cluster import Cluster, start_cluster
from tests.fault.support import (
    Load,
    cfg_of,
    check_replicas,
    quiet_daemons,
    require_daemons,
    run_pass,
)
from tools.deployment import RING_KINDS, build_rings, config_text
from tools.nodes import open_ring

pytestmark = [pytest.mark.fault, pytest.mark.integration]

INITIAL = 150
LOAD_TIMEOUT_S = 60.0  # bound on each wait of the load phase (the proxy reloads within 15 s)
GETS_AFTER_RELOAD = 40


def _three_nodes(base: Path) -> Any:
    def tweak(doc: dict[str, Any]) -> None:
        quiet_daemons(doc)
        n2 = doc["nodes"][1]
        from tests.cluster import free_ports

        p = free_ports(3)
        doc["nodes"].append(
            {
                **n2,
                "name": "node3",
                "object_port": p[0],
                "container_port": p[1],
                "account_port": p[2],
                "devices": [
                    {"name": "d5", "zone": 3, "weight": 100.0},
                    {"name": "d6", "zone": 3, "weight": 100.0},
                ],
            }
        )
        # build the first rings from node1 and node2 only; `cairn up` keeps existing rings
        path = base / "first.toml"
        path.write_text(config_text(doc))
        cfg = load_deployment(path, data_dir=base / "cairn-data")
        build_rings(dataclasses.replace(cfg, nodes=cfg.nodes[:2]), progress=False)

    return tweak


@pytest.fixture
def zone_cluster(tmp_path: Path):
    require_daemons("object", "container", "account")
    c = start_cluster(tmp_path, tweak=_three_nodes(tmp_path))
    try:
        yield c
    finally:
        c.stop()


def _add_zone(cluster: Cluster) -> None:
    cfg = cfg_of(cluster)
    node3 = cfg.node("node3")
    for kind in RING_KINDS:
        port = {
            "account": node3.account_port,
            "container": node3.container_port,
            "object": node3.object_port,
        }[kind]
        builder_path = cfg.ring_dir() / f"{kind}.builder"
        b = load_builder(builder_path)
        for d in node3.devices:
            b.add(NewDevice(d.region, d.zone, node3.host, port, node3.host, port, d.name, d.weight))
        b.pretend_min_part_hours_passed()
        b.rebalance()
        save_builder(builder_path, b)
        write_ring(cfg.ring_dir() / f"{kind}.ring", b.ring_data())


def _wait_for(done: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while not done():
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def _proxy_reloads(cluster: Cluster, kind: str) -> int:
    """How many reloads of the `kind` ring file the proxy has logged."""
    log = cluster.data_dir / "logs" / "proxy.log"
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        if '"ring reloaded"' in line:
            rec = json.loads(line)
            count += str(rec.get("path", "")).endswith(f"/{kind}.ring")
    return count


def _misplaced(cluster: Cluster) -> list[str]:
    """Object files on a device that is not a primary of their partition."""
    cfg = cfg_of(cluster)
    ring = open_ring(cfg, "object")
    out = []
    for n in cfg.nodes:
        base = cfg.devices_dir(n)
        for f in base.glob("*/objects/*/*/*/*"):
            if f.suffix not in (".data", ".ts", ".meta"):
                continue
            dev, part = f.relative_to(base).parts[:3:2]
            owners = {(d.port, d.device) for d in ring.get_part_nodes(int(part))}
            if (n.object_port, dev) not in owners:
                out.append(str(f.relative_to(cfg.data_dir)))
    return out


def test_add_zone_and_rebalance_under_load(zone_cluster: Cluster) -> None:
    cluster = zone_cluster
    conn = cluster.connection()
    container = "fault-rebalance"
    conn.put_container(container)
    objects = {f"first-{i:04d}": os.urandom(1000 + i) for i in range(INITIAL)}
    for name, body in objects.items():
        conn.put_object(container, name, body)

    load = Load(cluster.connection, container, threads=2)
    load.start()
    try:
        _wait_for(lambda: bool(load.acked) and load.gets > 0, "the load never got going")
        reloads = _proxy_reloads(cluster, "object")
        _add_zone(cluster)
        # replicate while clients keep reading and writing (the proxy reloads rings meanwhile)
        run_pass(cluster, kinds=["object"], only=["replicator"])
        # keep the load on until the proxy has moved to the new object ring (it looks at the
        # file every 15 s) and clients have read through it a while
        _wait_for(lambda: _proxy_reloads(cluster, "object") > reloads, "no proxy reload")
        gets_at_reload = load.gets
        _wait_for(lambda: load.gets >= gets_at_reload + GETS_AFTER_RELOAD, "reads stalled")
    finally:
        load.stop()

    assert load.wrong_bytes == [], f"reads returned wrong bytes: {load.wrong_bytes[:5]}"
    assert load.get_errors == [], f"reads failed during the move: {load.get_errors[:5]}"
    assert load.gets > 0 and load.acked, "the load did nothing"
    objects.update(load.acked)

    misplaced: list[str] = []
    for _ in range(3):
        run_pass(cluster, kinds=["object"], only=["replicator"])
        rep = check_replicas(cluster, container, objects)
        misplaced = _misplaced(cluster)
        if rep.complete and not misplaced:
            break
    assert rep.complete, f"missing on new primaries: {list(rep.missing.items())[:5]}"
    assert misplaced == [], f"files left where their partition no longer lives: {misplaced[:5]}"
    for name, body in objects.items():
        assert conn.get_object(container, name)[1] == body, name
    on_node3 = list(cfg_of(cluster).devices_dir(cfg_of(cluster).node("node3")).glob("*/objects/*"))
    assert on_node3, "nothing moved to the new zone"
