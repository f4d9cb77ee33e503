"""A small real cluster for replication tests: N object servers in this process, one ring.

Each node is a real object server app on 127.0.0.1:<ephemeral> over its own devices dir
with one device `sda`; the ring file is built with ring.RingBuilder from the bound ports.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from common.clock import Clock
from common.server import running_app
from objectd.auditor import AuditorConf, ObjectAuditor
from objectd.client import direct_get_object, direct_put_object
from objectd.expirer import ExpirerConf, ObjectExpirer
from objectd.layout import DeviceLayout
from objectd.replicator import ObjectReplicator, ReplicatorConf
from objectd.server import ObjectServerConf, make_object_app
from ring import NewDevice, Ring, RingBuilder, write_ring

PREFIX, SUFFIX = "pre", "suf"
PART_POWER = 4


@dataclass
class Node:
    index: int
    devices_dir: Path
    url: str
    port: int

    @property
    def layout(self) -> DeviceLayout:
        return DeviceLayout(self.devices_dir, "sda")


@dataclass
class Cluster:
    nodes: list[Node]
    ring_path: Path
    session: aiohttp.ClientSession
    clock: Clock
    reclaim_age_s: float

    def ring(self) -> Ring:
        return Ring(self.ring_path, PREFIX, SUFFIX, clock=self.clock)

    def node_for(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def placement(self, obj: str) -> tuple[int, list[Node], list[Node]]:
        """(partition, primary nodes, handoff nodes) of AUTH_a/c/<obj>."""
        ring = self.ring()
        part, devs = ring.get_nodes("AUTH_a", "c", obj)
        primaries = [self.node_for(d.port) for d in devs]
        handoffs = [self.node_for(d.port) for d in ring.get_more_nodes(part)]
        return part, primaries, handoffs

    def replicator(self, node: Node) -> ObjectReplicator:
        conf = ReplicatorConf(
            node.devices_dir,
            "127.0.0.1",
            node.port,
            reclaim_age_s=self.reclaim_age_s,
            concurrency=2,
            bytes_per_s=0,
            node_timeout_s=5.0,
        )
        return ObjectReplicator(conf, self.ring(), self.session, self.clock)

    def auditor(self, node: Node, zero_byte_only: bool = False) -> ObjectAuditor:
        conf = AuditorConf(node.devices_dir, PREFIX, SUFFIX, 0, zero_byte_only)
        return ObjectAuditor(conf, self.clock)

    def expirer(self, node: Node) -> ObjectExpirer:
        conf = ExpirerConf(node.devices_dir, node_timeout_s=5.0)
        return ObjectExpirer(conf, self.ring(), None, self.session, self.clock)

    async def put(
        self, node: Node, part: int, obj: str, body: bytes, ts: str, **headers: str
    ) -> int:
        hdrs = {"X-Timestamp": ts, "Content-Type": "application/x-test", **headers}
        status, _ = await direct_put_object(
            self.session, node.url, "sda", part, "AUTH_a", "c", obj, body, hdrs
        )
        return status

    async def get(self, node: Node, part: int, obj: str) -> tuple[int, bytes, dict[str, str]]:
        resp = await direct_get_object(
            self.session,
            node.url,
            "sda",
            part,
            "AUTH_a",
            "c",
            obj,
            {"X-Backend-Replication": "true"},
        )
        try:
            return resp.status, await resp.read(), dict(resp.headers)
        finally:
            resp.release()


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, clock: Clock, nodes: int = 3, reclaim_age_s: float = 7 * 86400.0
) -> AsyncIterator[Cluster]:
    async with contextlib.AsyncExitStack() as stack:
        made: list[Node] = []
        for i in range(nodes):
            devices_dir = tmp_path / f"node{i}"
            (devices_dir / "sda").mkdir(parents=True)
            conf = ObjectServerConf(
                devices_dir=devices_dir,
                hash_path_prefix=PREFIX,
                hash_path_suffix=SUFFIX,
                threads_per_device=2,
                node_timeout_s=5.0,
                reclaim_age_s=reclaim_age_s,
            )
            url = await stack.enter_async_context(running_app(await make_object_app(conf, clock)))
            made.append(Node(i, devices_dir, url, int(url.rsplit(":", 1)[1])))
        builder = RingBuilder(PART_POWER, 3, 0)
        for n in made:
            builder.add(
                NewDevice(1, n.index + 1, "127.0.0.1", n.port, "127.0.0.1", n.port, "sda", 100.0)
            )
        builder.rebalance(seed=1)
        ring_path = tmp_path / "rings" / "object.ring"
        ring_path.parent.mkdir()
        write_ring(ring_path, builder.ring_data())
        session = await stack.enter_async_context(aiohttp.ClientSession(auto_decompress=False))
        yield Cluster(made, ring_path, session, clock, reclaim_age_s)
