"""A few storage "nodes" in one process for replicator tests: a real ring file, a real LMDB
environment per node device, the real ReplicationService, and the in-process transport
(DirectTransport) between them instead of sockets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.clock import ManualClock
from common.listingdb import Broker, EnvOptions, ListingEnv
from common.listingdb.http import DeviceEnvs
from common.listingdb.repl_service import ReplicationService
from common.listingdb.repl_transport import DirectTransport, ReplicationTransport
from common.listingdb.replicator import (
    DbReplicator,
    MakeBroker,
    ReclaimSchedule,
    ReplicationStats,
    ReplicatorSettings,
    is_local_to,
)
from common.timestamps import Timestamp
from ring import NewDevice, Ring, RingBuilder, hash_path, write_ring

PREFIX, SUFFIX = "pre", "suf"
DEVICE = "sda"
START = 1_700_000_000.0


def ts(offset: float) -> str:
    return Timestamp.from_float(START + offset).internal


@dataclass
class Node:
    name: str
    port: int
    envs: DeviceEnvs
    service: ReplicationService

    @property
    def env(self) -> ListingEnv:
        return self.envs.open_devices([DEVICE])[DEVICE]


class Cluster:
    def __init__(
        self,
        root: Path,
        nodes: int,
        make_broker: MakeBroker,
        kind: str = "containers",
        part_power: int = 2,
    ) -> None:
        self.clock = ManualClock(START)
        self.make_broker = make_broker
        builder = RingBuilder(part_power, 3, 0)
        self.nodes: list[Node] = []
        for i in range(nodes):
            port = 7001 + i
            builder.add(NewDevice(1, i + 1, "127.0.0.1", port, "127.0.0.1", port, DEVICE, 100.0))
            devices_dir = root / f"node{i}"
            (devices_dir / DEVICE).mkdir(parents=True)
            envs = DeviceEnvs(devices_dir, kind, True, EnvOptions(map_bytes=1 << 28, threads=2))
            service = ReplicationService(envs, make_broker, self.clock)
            self.nodes.append(Node(f"node{i}", port, envs, service))
        builder.rebalance(seed=1)
        ring_path = root / "rings" / "test.ring"
        ring_path.parent.mkdir()
        write_ring(ring_path, builder.ring_data())
        self.ring = Ring(ring_path, PREFIX, SUFFIX)
        self.transport: ReplicationTransport = DirectTransport(
            {("127.0.0.1", n.port): n.service for n in self.nodes}
        )

    def close(self) -> None:
        for n in self.nodes:
            n.envs.close()

    def where(self, account: str, container: str | None = None) -> tuple[int, str]:
        return self.ring.get_part(account, container), hash_path(PREFIX, SUFFIX, account, container)

    def primaries(self, account: str, container: str | None = None) -> list[Node]:
        part = self.ring.get_part(account, container)
        ports = [d.port for d in self.ring.get_part_nodes(part)]
        return [n for n in self.nodes if n.port in ports]

    def others(self, account: str, container: str | None = None) -> list[Node]:
        prim = self.primaries(account, container)
        return [n for n in self.nodes if n not in prim]

    def broker(self, node: Node, account: str, container: str | None = None) -> Broker[Any]:
        part, hash_hex = self.where(account, container)
        return self.make_broker(node.env, part, hash_hex)

    def replicator(
        self,
        node: Node,
        transport: ReplicationTransport | None = None,
        reclaim_schedule: ReclaimSchedule | None = None,
        **settings: Any,
    ) -> DbReplicator:
        opts: dict[str, Any] = {"reclaim_age_s": 7 * 86400, "batch_rows": 100, **settings}
        return DbReplicator(
            devices={DEVICE: node.env},
            ring=self.ring,
            is_local=is_local_to("127.0.0.1", node.port),
            transport=transport or self.transport,
            make_broker=self.make_broker,
            clock=self.clock,
            settings=ReplicatorSettings(**opts),
            reclaim_schedule=reclaim_schedule,
        )

    def run(
        self, node: Node, transport: ReplicationTransport | None = None, **settings: Any
    ) -> ReplicationStats:
        return asyncio.run(self.replicator(node, transport, **settings).run_once())

    def round(self) -> list[ReplicationStats]:
        """One pass on every node, in order."""
        return [self.run(n) for n in self.nodes]
