"""The container background daemons of one storage node: replicator and updater.

    python -m containerd.daemons --config FILE --node NAME [--data-dir DIR] [--once]
                                 [--only replicator,updater]

The replicator keeps every container database's replicas in sync (docs/db-replication.md);
the updater pushes container totals to the account servers it finds in the account ring.
Each writes ``<devices_dir>/recon/container-replicator.json`` / ``container-updater.json``
after every pass. ``--once`` runs one pass of each and exits 0.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import aiohttp
import uvloop

from common.clock import Clock, SystemClock
from common.deploy import DeploymentConfig, StorageNodeConfig
from common.listingdb.daemon import Job, replicator_job, run_jobs
from common.listingdb.http import DeviceEnvs
from common.listingdb.replicator import is_local_to
from common.log import setup_logging
from common.nodecli import parse_daemon_args
from containerd.broker import ContainerBroker
from containerd.conf import ContainerServerConf
from containerd.updater import AccountTarget, run_once
from ring import Ring, RingError

__all__ = ["DAEMONS", "build_jobs", "locate_accounts", "main"]

DAEMONS = ("replicator", "updater")


def locate_accounts(account_ring: Ring) -> Callable[[str], list[AccountTarget]]:
    """`locate(account)` for the updater: the account's primaries in the account ring."""

    def locate(account: str) -> list[AccountTarget]:
        part, devs = account_ring.get_nodes(account)
        return [
            AccountTarget(
                f"[{d.ip}]:{d.port}" if ":" in d.ip else f"{d.ip}:{d.port}", d.device, part
            )
            for d in devs
        ]

    return locate


def build_jobs(
    deploy: DeploymentConfig,
    node: StorageNodeConfig,
    envs: DeviceEnvs,
    session: aiohttp.ClientSession,
    clock: Clock,
    only: Sequence[str] = DAEMONS,
) -> list[Job]:
    """The node's container daemons; RingError when a ring file they need is unusable."""
    cfg = deploy.container_daemons
    prefix, suffix = deploy.cluster.hash_path_prefix, deploy.cluster.hash_path_suffix
    names = [d.name for d in node.devices]
    jobs: list[Job] = []
    if "replicator" in only:
        ring = Ring(deploy.ring_dir() / "container.ring", prefix, suffix, clock=clock)
        job = replicator_job(
            "container-replicator",
            cfg=cfg,
            reclaim_age_s=deploy.cluster.reclaim_age_s,
            ring=ring,
            envs=envs,
            devices=names,
            is_local=is_local_to(node.host, node.container_port),
            session=session,
            make_broker=ContainerBroker,
            clock=clock,
        )
        jobs.append(job)
    if "updater" in only:
        locate = locate_accounts(
            Ring(deploy.ring_dir() / "account.ring", prefix, suffix, clock=clock)
        )

        async def update() -> dict[str, Any]:
            devices = await asyncio.to_thread(envs.open_devices, names)
            stats = await run_once(
                session,
                devices,
                clock,
                timeout_s=cfg.node_timeout_s,
                locate=locate,
                concurrency_max=cfg.updater_concurrency,
            )
            return {**asdict(stats), "devices_skipped": len(names) - len(devices)}

        jobs.append(Job("container-updater", cfg.updater_interval_s, update))
    return jobs


async def _amain(
    deploy: DeploymentConfig, node: StorageNodeConfig, once: bool, only: Sequence[str]
) -> int:
    conf = ContainerServerConf.from_deployment(deploy, node)
    envs = DeviceEnvs(conf.devices_dir, "containers", conf.mount_check, conf.env_options())
    clock = SystemClock()
    try:
        async with aiohttp.ClientSession() as session:
            try:
                jobs = build_jobs(deploy, node, envs, session, clock, only)
            except RingError as e:
                print(f"containerd.daemons: {e}", file=sys.stderr)
                return 2
            await run_jobs(jobs, conf.devices_dir, node.name, clock, once)
    finally:
        await asyncio.to_thread(envs.close)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_daemon_args("containerd.daemons", __doc__, DAEMONS, argv)
    if args is None:
        return 2
    setup_logging("container-daemons", args.deploy.log.level, args.deploy.log.format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_amain(args.deploy, args.node, args.once, args.only))


if __name__ == "__main__":
    sys.exit(main())
