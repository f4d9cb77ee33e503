"""The container background daemons of one storage node: replicator and updater.

    python -m containerd.daemons --config FILE --node NAME [--data-dir DIR] [--once]
                                 [--only replicator,updater]

The replicator keeps every container database's replicas in sync (docs/db-replication.md);
the updater pushes container totals to the account servers it finds in the account ring.
Each writes ``<devices_dir>/recon/container-replicator.json`` / ``container-updater.json``
after every pass. ``--once`` runs one pass of each and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import aiohttp
import uvloop

from common.clock import Clock, SystemClock
from common.config import ConfigError
from common.deploy import DeploymentConfig, StorageNodeConfig, load_deployment
from common.listingdb.daemon import Job, run_jobs
from common.listingdb.http import DeviceEnvs
from common.listingdb.repl_transport import HttpTransport
from common.listingdb.replicator import (
    DbReplicator,
    ReclaimSchedule,
    ReplicatorSettings,
    is_local_to,
)
from common.log import setup_logging
from containerd.broker import ContainerBroker
from containerd.conf import ContainerServerConf
from containerd.updater import AccountTarget, run_once
from ring import Ring, RingError

__all__ = ["DAEMONS", "build_jobs", "locate_accounts", "main", "parse_only"]

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
        transport = HttpTransport(session, cfg.conn_timeout_s, cfg.node_timeout_s)
        settings = ReplicatorSettings(
            reclaim_age_s=deploy.cluster.reclaim_age_s,
            concurrency=cfg.replicator_concurrency,
            batch_rows=cfg.replicator_batch_rows,
        )
        schedule = ReclaimSchedule(settings.rows_reclaim_interval_s)

        async def replicate() -> dict[str, Any]:
            devices = await asyncio.to_thread(envs.open_devices, names)
            replicator = DbReplicator(
                devices=devices,
                ring=ring,
                is_local=is_local_to(node.host, node.container_port),
                transport=transport,
                make_broker=ContainerBroker,
                clock=clock,
                settings=settings,
                reclaim_schedule=schedule,
            )
            stats = (await replicator.run_once()).as_dict()
            stats["devices_skipped"] = len(names) - len(devices)
            return stats

        jobs.append(Job("container-replicator", cfg.replicator_interval_s, replicate))
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


def parse_only(raw: str | None) -> list[str]:
    chosen = [x.strip() for x in (raw or ",".join(DAEMONS)).split(",") if x.strip()]
    unknown = sorted(set(chosen) - set(DAEMONS))
    if unknown or not chosen:
        raise ValueError(f"--only takes {','.join(DAEMONS)}; got {raw!r}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m containerd.daemons", description=__doc__)
    parser.add_argument("--config", required=True, help="deployment TOML file")
    parser.add_argument("--node", required=True, help="storage node name in the deployment")
    parser.add_argument("--data-dir", default=None, help="override the deployment's data_dir")
    parser.add_argument("--once", action="store_true", help="one pass of each daemon, then exit")
    parser.add_argument("--only", default=None, help="comma list of: replicator,updater")
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
        deploy = load_deployment(args.config, args.data_dir)
        node = deploy.node(args.node)
    except (ConfigError, ValueError) as e:
        print(f"containerd.daemons: {e}", file=sys.stderr)
        return 2
    except KeyError:
        print(f"containerd.daemons: no node {args.node!r} in {args.config}", file=sys.stderr)
        return 2
    setup_logging("container-daemons", deploy.log.level, deploy.log.format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_amain(deploy, node, args.once, only))


if __name__ == "__main__":
    sys.exit(main())
