"""`cairn up --only`: one deployment run by several supervisors (one per "host"), seen and
stopped as one by `cairn status` and `cairn down`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster import Cluster, free_ports, run_cairn
from tools.deployment import config_text, default_config

pytestmark = pytest.mark.integration


def test_subset_supervisors_make_one_cluster(tmp_path: Path) -> None:
    doc = default_config(admin_key="k", ports=free_ports(10), proxy_workers=1)
    doc["block"]["enabled"] = False
    doc["cluster"]["part_power"] = 6
    config = tmp_path / "cairn.toml"
    config.write_text(config_text(doc))
    data = tmp_path / "data"
    cluster = Cluster(data, config, doc, "k")
    common = ["--config", str(config), "--data-dir", str(data), "-d"]
    try:
        run_cairn("up", *common, "--only", "proxy", timeout=180)
        run_cairn("up", *common, "--only", "node1", timeout=180)
        run_cairn("up", *common, "--only", "node2", timeout=180)
        assert sorted(p.name for p in (data / "run").glob("state*.json")) == [
            "state-node1.json",
            "state-node2.json",
            "state-proxy.json",
        ]
        again = run_cairn("up", *common, "--only", "node1", timeout=60)
        assert "already running" in again.stderr
        cluster.wait_healthy(120)
        names = {s["name"] for s in cluster.status()["services"]}
        assert {"proxy", "node1-object", "node2-account"} <= names
        conn = cluster.connection(user="admin:admin", key="k")
        conn.put_container("c")
        conn.put_object("c", "o", b"across supervisors")
        assert conn.get_object("c", "o")[1] == b"across supervisors"
    finally:
        down = run_cairn("down", "--data-dir", str(data), check=False)
    assert down.returncode == 0, down.stderr
    assert not list((data / "run").glob("state*.json"))
    assert cluster.status()["running"] is False
