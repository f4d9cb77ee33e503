"""Issue 4, fault test 6: a real network partition between storage hosts.

The test makes its own network: one namespace per storage node ("host"), each joined by a
veth pair to a bridge in the root namespace. Addresses come from a /24 of the benchmarking
range 198.18.0.0/15 that nothing on this machine uses yet; the bridge holds .1, so the root
namespace (where the proxy and the test run) reaches the hosts directly. The route is checked
before any packet is sent, and nothing is ever sent to an address the test did not create.

The deployment TOML places each node's servers on its host address; `cairn up --only proxy`
runs in the root namespace and `ip netns exec <ns> cairn up --only nodeN` on each host. While
a client load keeps writing and reading, node2's link is taken down and later restored;
reads and writes keep working throughout, and replication converges with nothing lost.
"""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cluster import Cluster, free_ports, run_cairn
from tests.fault.support import Load, check_replicas, quiet_daemons, require_daemons, run_pass
from tools.deployment import config_text, default_config

pytestmark = [pytest.mark.fault, pytest.mark.integration]

NODES = 2
CUT_S = 15.0
OPS_AFTER_HEAL = 40  # PUTs and GETs each that must complete after the link is back
OPS_TIMEOUT_S = 60.0
NET = ipaddress.IPv4Network("198.18.0.0/15")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


@dataclass
class HostNet:
    tag: str
    subnet: ipaddress.IPv4Network
    bridge: str
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)

    @property
    def bridge_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    def host_ip(self, i: int) -> str:
        return str(self.subnet.network_address + 2 + i)

    def teardown(self) -> None:
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)
        for link in self.host_links:
            _ip("link", "del", link, check=False)
        _ip("link", "del", self.bridge, check=False)


def _unused_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 with no address or route on this machine."""
    subnets: list[ipaddress.IPv4Network] = list(NET.subnets(new_prefix=24))
    for _ in range(50):
        s = random.choice(subnets)
        addrs = _ip("-4", "addr", "show", "to", str(s)).stdout.strip()
        routes = _ip("-4", "route", "show", "match", str(s)).stdout.strip()
        if not addrs and "198.1" not in routes:
            return s
    pytest.skip("no unused /24 in 198.18.0.0/15 on this machine")


def _make_net(count: int) -> HostNet:
    tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
    probe = f"cairnprobe{tag}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        pytest.skip(f"`ip netns add` is not permitted here (needs root): {r.stderr.strip()}")
    _ip("netns", "del", probe, check=False)
    net = HostNet(tag, _unused_subnet(), f"cbr{tag}")
    try:
        _ip("link", "add", net.bridge, "type", "bridge")
        _ip("addr", "add", f"{net.bridge_ip}/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        for i in range(count):
            ns, host_end, ns_end = f"cairn{tag}n{i + 1}", f"cvh{tag}{i}", f"cvn{tag}{i}"
            _ip("netns", "add", ns)
            net.namespaces.append(ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            net.host_links.append(host_end)
            _ip("link", "set", ns_end, "netns", ns)
            _ip("link", "set", host_end, "master", net.bridge)
            _ip("link", "set", host_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{net.host_ip(i)}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
        for i in range(count):
            route = _ip("route", "get", net.host_ip(i)).stdout
            assert f"dev {net.bridge}" in route, f"{net.host_ip(i)} would not go via the bridge"
    except BaseException:
        net.teardown()
        raise
    return net


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, HostNet]]:
    require_daemons("object", "container", "account")
    net = _make_net(NODES)
    data_dir = tmp_path / "cairn-data"
    cluster: Cluster | None = None
    try:
        doc = default_config(admin_key="adminkey", ports=free_ports(10), proxy_workers=1)
        doc["block"]["enabled"] = False
        quiet_daemons(doc)
        # a silent peer (dropped packets, no RST) costs a request node_timeout_s before the
        # proxy gives up on it; a short one keeps the cut's stalls short
        doc["proxy"]["node_timeout_s"] = 3.0
        doc["proxy"]["error_suppression_interval_s"] = 5.0
        for i, node in enumerate(doc["nodes"]):
            # each host has its own port space: the usual storage ports on its own address
            node.update(host=net.host_ip(i), object_port=6200, container_port=6201)
            node["account_port"] = 6202
        config = tmp_path / "cairn.toml"
        config.write_text(config_text(doc))
        cluster = Cluster(data_dir, config, doc, "adminkey")
        common = ["--config", str(config), "--data-dir", str(data_dir), "-d"]
        run_cairn("up", *common, "--only", "proxy", timeout=180)  # it builds the rings
        # the hosts come up side by side, each with its own supervisor
        ups = [
            (
                ns,
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, *_cairn(), "up", *common, "--only", f"node{i + 1}"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    cwd=Path(__file__).resolve().parents[2],
                ),
            )
            for i, ns in enumerate(net.namespaces)
        ]
        outs = [(ns, up, _finished(up)) for ns, up in ups]  # every one waited for first
        for ns, up, out in outs:
            assert up.returncode == 0, f"cairn up in {ns}: {out}"
        cluster.wait_healthy(120)
        yield cluster, net
    finally:
        if cluster is not None:
            cluster.stop()
        net.teardown()


def _finished(up: subprocess.Popen[str]) -> str:
    """The output of a `cairn up`, killed if it has not finished in time."""
    try:
        out, _ = up.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        up.kill()
        out, _ = up.communicate()
    return out


def _wait_ops(load: Load, acked_min: int, gets_min: int, failure: str) -> None:
    """Until more than `acked_min` PUTs and `gets_min` GETs have completed (bounded)."""
    deadline = time.monotonic() + OPS_TIMEOUT_S
    while len(load.acked) <= acked_min or load.gets <= gets_min:
        assert time.monotonic() < deadline, f"{failure}: {load.put_errors[-3:]}"
        time.sleep(0.1)


def _cairn() -> list[str]:
    from tests.cluster import CAIRN

    return list(CAIRN)


def test_network_partition_heals_with_nothing_lost(netns_cluster) -> None:
    cluster, net = netns_cluster
    conn = cluster.connection()
    container = "fault-partition"
    conn.put_container(container)
    before = {f"pre-{i:03d}": os.urandom(2000 + i) for i in range(40)}
    for name, body in before.items():
        conn.put_object(container, name, body)

    load = Load(cluster.connection, container, threads=2)
    load.start()
    try:
        _wait_ops(load, 0, 0, "the load never got going")
        _ip("link", "set", net.host_links[1], "down")
        acked_at_cut = len(load.acked)
        gets_at_cut = load.gets
        time.sleep(CUT_S)
        acked_in_cut = len(load.acked) - acked_at_cut
        gets_in_cut = load.gets - gets_at_cut
        _ip("link", "set", net.host_links[1], "up")
        # the load goes on over the healed link for a while
        _wait_ops(load, len(load.acked) + OPS_AFTER_HEAL, load.gets + OPS_AFTER_HEAL, "stalled")
    finally:
        load.stop()

    print(
        f"during the cut: {acked_in_cut} PUTs and {gets_in_cut} GETs completed;"
        f" errors: {load.put_errors[:5]} {load.get_errors[:5]}"
    )
    assert acked_in_cut > 0 and gets_in_cut > 0, "no write or read completed during the cut"
    assert load.wrong_bytes == [], f"wrong bytes read: {load.wrong_bytes[:5]}"
    assert load.get_errors == [], f"reads failed: {load.get_errors[:5]}"
    odd = [e for e in load.put_errors if "500 Internal Server Error" not in e]
    assert odd == [], f"writes failed: {odd[:5]}"

    objects = {**before, **load.acked}
    netns = {f"node{i + 1}": ns for i, ns in enumerate(net.namespaces)}

    def listed() -> set[str]:
        return {o["name"] for o in conn.get_container(container, full_listing=True)[1]}

    rep = check_replicas(cluster, container, objects)
    for _ in range(3):
        if rep.complete and listed() == set(objects):
            break
        run_pass(cluster, netns=netns)
        rep = check_replicas(cluster, container, objects)
    assert rep.complete, f"not converged: {list(rep.missing.items())[:5]} {rep.wrong}"
    for name, body in objects.items():
        assert conn.get_object(container, name)[1] == body, name
    diff = sorted(set(objects) ^ listed())
    assert diff == [], f"listing differs: {diff[:5]}"
    assert not load.put_errors, f"{len(load.put_errors)} PUTs answered 500: {load.put_errors[:3]}"
