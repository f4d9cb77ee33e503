"""The account background daemon of one storage node: the account replicator.

    python -m accountd.daemons --config FILE --node NAME [--data-dir DIR] [--once]

It keeps every account database's replicas in sync (docs/db-replication.md) and writes
``<devices_dir>/recon/account-replicator.json`` after every pass. ``--once`` runs one pass
and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiohttp
import uvloop

from accountd.broker import AccountBroker
from accountd.conf import AccountServerConf
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
from ring import Ring, RingError

__all__ = ["build_jobs", "main"]


def build_jobs(
    deploy: DeploymentConfig,
    node: StorageNodeConfig,
    envs: DeviceEnvs,
    session: aiohttp.ClientSession,
    clock: Clock,
) -> list[Job]:
    """The node's account daemons; RingError when the account ring is unusable."""
    cfg = deploy.account_daemons
    cluster = deploy.cluster
    ring = Ring(
        deploy.ring_dir() / "account.ring",
        cluster.hash_path_prefix,
        cluster.hash_path_suffix,
        clock=clock,
    )
    transport = HttpTransport(session, cfg.conn_timeout_s, cfg.node_timeout_s)
    settings = ReplicatorSettings(
        reclaim_age_s=cluster.reclaim_age_s,
        concurrency=cfg.replicator_concurrency,
        batch_rows=cfg.replicator_batch_rows,
    )
    schedule = ReclaimSchedule(settings.rows_reclaim_interval_s)
    names = [d.name for d in node.devices]

    async def replicate() -> dict[str, Any]:
        devices = await asyncio.to_thread(envs.open_devices, names)
        replicator = DbReplicator(
            devices=devices,
            ring=ring,
            is_local=is_local_to(node.host, node.account_port),
            transport=transport,
            make_broker=AccountBroker,
            clock=clock,
            settings=settings,
            reclaim_schedule=schedule,
        )
        stats = (await replicator.run_once()).as_dict()
        stats["devices_skipped"] = len(names) - len(devices)
        return stats

    return [Job("account-replicator", cfg.replicator_interval_s, replicate)]


async def _amain(deploy: DeploymentConfig, node: StorageNodeConfig, once: bool) -> int:
    conf = AccountServerConf.from_deployment(deploy, node)
    envs = DeviceEnvs(conf.devices_dir, "accounts", conf.mount_check, conf.env_options())
    clock = SystemClock()
    try:
        async with aiohttp.ClientSession() as session:
            try:
                jobs = build_jobs(deploy, node, envs, session, clock)
            except RingError as e:
                print(f"accountd.daemons: {e}", file=sys.stderr)
                return 2
            await run_jobs(jobs, conf.devices_dir, node.name, clock, once)
    finally:
        await asyncio.to_thread(envs.close)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accountd.daemons", description=__doc__)
    parser.add_argument("--config", required=True, help="deployment TOML file")
    parser.add_argument("--node", required=True, help="storage node name in the deployment")
    parser.add_argument("--data-dir", default=None, help="override the deployment's data_dir")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args(argv)
    try:
        deploy = load_deployment(args.config, args.data_dir)
        node = deploy.node(args.node)
    except (ConfigError, ValueError) as e:
        print(f"accountd.daemons: {e}", file=sys.stderr)
        return 2
    except KeyError:
        print(f"accountd.daemons: no node {args.node!r} in {args.config}", file=sys.stderr)
        return 2
    setup_logging("account-daemons", deploy.log.level, deploy.log.format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_amain(deploy, node, args.once))


if __name__ == "__main__":
    sys.exit(main())
