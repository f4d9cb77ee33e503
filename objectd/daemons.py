"""Run a storage node's object background daemons in one process.

``python -m objectd.daemons --config FILE --node NAME [--data-dir DIR] [--once]
[--only replicator,auditor,updater,expirer]``

Each daemon runs a pass, writes its recon file (`objectd.recon`), then sleeps its
configured interval (``[object_daemons]`` in the deployment file). SIGTERM/SIGINT stop it
between passes (a running pass is cancelled). ``--once`` runs one pass of each (the
auditor runs its fast zero-byte pass first, then the full one) and exits 0, or 1 if a pass
failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from common.clock import Clock, SystemClock
from common.deploy import DeploymentConfig, StorageNodeConfig
from common.log import get_logger, setup_logging
from common.nodecli import parse_daemon_args
from objectd.asyncpending import list_pendings
from objectd.auditor import AuditorConf, ObjectAuditor
from objectd.expirer import ExpirerConf, ObjectExpirer
from objectd.recon import write_recon
from objectd.replicator import ObjectReplicator, ReplicatorConf, local_device_names
from objectd.updater import run_once as updater_run_once
from ring import Ring, RingError

__all__ = ["DAEMON_NAMES", "NodeDaemons", "main"]

log = get_logger("cairn.object-daemons")
DAEMON_NAMES = ("replicator", "auditor", "updater", "expirer")
SESSION_CONNECTIONS_MAX = 64


@dataclass
class _Daemon:
    name: str  # recon name, e.g. object-replicator
    interval_s: float
    run_once: Callable[[], Awaitable[dict[str, Any]]]


def _count_pendings(devices_dir: Path) -> int:
    return sum(len(list_pendings(devices_dir / d)) for d in local_device_names(devices_dir))


def _count_quarantined(devices_dir: Path) -> int:
    total = 0
    for d in local_device_names(devices_dir):
        with contextlib.suppress(FileNotFoundError):
            total += len(os.listdir(devices_dir / d / "quarantined" / "objects"))
    return total


class NodeDaemons:
    """The four daemons of one node, sharing one HTTP session and the node's rings."""

    def __init__(
        self,
        deploy: DeploymentConfig,
        node: StorageNodeConfig,
        session: aiohttp.ClientSession,
        clock: Clock | None = None,
    ) -> None:
        self.deploy = deploy
        self.node = node
        self.session = session
        self.clock: Clock = clock or SystemClock()
        self.devices_dir = deploy.devices_dir(node)
        self._rings: dict[str, Ring] = {}

    def ring(self, kind: str) -> Ring:
        ring = self._rings.get(kind)
        if ring is None:
            c = self.deploy.cluster
            path = self.deploy.ring_dir() / f"{kind}.ring"
            ring = Ring(path, c.hash_path_prefix, c.hash_path_suffix, clock=self.clock)
            self._rings[kind] = ring
        return ring

    def daemons(self, only: tuple[str, ...] = DAEMON_NAMES) -> list[_Daemon]:
        od = self.deploy.object_daemons
        table = {
            "replicator": _Daemon("object-replicator", od.replicator_interval_s, self.replicate),
            "auditor": _Daemon("object-auditor", od.auditor_interval_s, self.audit),
            "updater": _Daemon("object-updater", od.updater_interval_s, self.update),
            "expirer": _Daemon("object-expirer", od.expirer_interval_s, self.expire),
        }
        return [table[n] for n in only]

    async def replicate(self) -> dict[str, Any]:
        od = self.deploy.object_daemons
        conf = ReplicatorConf(
            devices_dir=self.devices_dir,
            node_ip=self.node.host,
            node_port=self.node.object_port,
            reclaim_age_s=float(self.deploy.cluster.reclaim_age_s),
            concurrency=od.replicator_concurrency,
            bytes_per_s=od.replicator_bytes_per_s,
            conn_timeout_s=od.conn_timeout_s,
            node_timeout_s=od.node_timeout_s,
        )
        rep = ObjectReplicator(conf, self.ring("object"), self.session, self.clock)
        return asdict(await rep.run_once())

    async def audit(self, zero_byte_only: bool = False) -> dict[str, Any]:
        c = self.deploy.cluster
        conf = AuditorConf(
            devices_dir=self.devices_dir,
            hash_path_prefix=c.hash_path_prefix,
            hash_path_suffix=c.hash_path_suffix,
            bytes_per_s=self.deploy.object_daemons.auditor_bytes_per_s,
            zero_byte_only=zero_byte_only,
            reclaim_age_s=float(c.reclaim_age_s),
        )
        stats = asdict(await ObjectAuditor(conf, self.clock).run_once())
        stats["mode"] = "zero-byte" if zero_byte_only else "full"
        stats["quarantined_total"] = await asyncio.to_thread(_count_quarantined, self.devices_dir)
        return stats

    async def audit_zero_byte(self) -> dict[str, Any]:
        return await self.audit(zero_byte_only=True)

    async def update(self) -> dict[str, Any]:
        od = self.deploy.object_daemons
        stats = asdict(
            await updater_run_once(self.devices_dir, self.session, timeout_s=od.node_timeout_s)
        )
        stats["async_pendings"] = await asyncio.to_thread(_count_pendings, self.devices_dir)
        return stats

    async def expire(self) -> dict[str, Any]:
        od = self.deploy.object_daemons
        try:
            container_ring: Ring | None = self.ring("container")
        except RingError:
            container_ring = None  # no container updates then; the objects still go
        conf = ExpirerConf(
            self.devices_dir, conn_timeout_s=od.conn_timeout_s, node_timeout_s=od.node_timeout_s
        )
        exp = ObjectExpirer(conf, self.ring("object"), container_ring, self.session, self.clock)
        return asdict(await exp.run_once())

    async def run_pass(self, d: _Daemon) -> bool:
        """One pass with its recon file; False if it failed."""
        started = self.clock.time()
        try:
            stats = await d.run_once()
            ok = True
        except (RingError, OSError, aiohttp.ClientError, ValueError) as e:
            log.warning("pass failed", extra={"fields": {"daemon": d.name, "error": str(e)}})
            stats, ok = {"failed": str(e)[:500]}, False
        stats["ok"] = ok
        finished = self.clock.time()
        await asyncio.to_thread(write_recon, self.devices_dir, d.name, started, finished, stats)
        return ok

    async def loop(self, d: _Daemon, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_pass(d)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), d.interval_s)


async def run(
    deploy: DeploymentConfig, node: StorageNodeConfig, *, once: bool, only: tuple[str, ...]
) -> int:
    connector = aiohttp.TCPConnector(limit=SESSION_CONNECTIONS_MAX)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        nd = NodeDaemons(deploy, node, session)
        daemons = nd.daemons(only)
        if once:
            ok = True
            for d in daemons:
                if d.name == "object-auditor":
                    zbf = _Daemon("object-auditor-zbf", d.interval_s, nd.audit_zero_byte)
                    ok = await nd.run_pass(zbf) and ok
                ok = await nd.run_pass(d) and ok
            return 0 if ok else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(nd.loop(d, stop)) for d in daemons]
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_daemon_args("objectd.daemons", __doc__, DAEMON_NAMES, argv)
    if args is None:
        return 2
    setup_logging("object-daemons", args.deploy.log.level, args.deploy.log.format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(args.deploy, args.node, once=args.once, only=args.only))


if __name__ == "__main__":
    sys.exit(main())
