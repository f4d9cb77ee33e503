"""The account background daemon of one storage node: the account replicator.

    python -m accountd.daemons --config FILE --node NAME [--data-dir DIR] [--once]
                               [--only replicator]

It keeps every account database's replicas in sync (docs/db-replication.md) and writes
``<devices_dir>/recon/account-replicator.json`` after every pass. ``--once`` runs one pass
and exits 0.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import uvloop

from accountd.broker import AccountBroker
from accountd.conf import AccountServerConf
from common.clock import Clock, SystemClock
from common.deploy import DeploymentConfig, StorageNodeConfig
from common.listingdb.daemon import Job, replicator_job, run_jobs
from common.listingdb.http import DeviceEnvs
from common.listingdb.replicator import is_local_to
from common.log import setup_logging
from common.nodecli import parse_daemon_args
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
    cluster = deploy.cluster
    ring = Ring(
        deploy.ring_dir() / "account.ring",
        cluster.hash_path_prefix,
        cluster.hash_path_suffix,
        clock=clock,
    )
    job = replicator_job(
        "account-replicator",
        cfg=deploy.account_daemons,
        reclaim_age_s=cluster.reclaim_age_s,
        ring=ring,
        envs=envs,
        devices=[d.name for d in node.devices],
        is_local=is_local_to(node.host, node.account_port),
        session=session,
        make_broker=AccountBroker,
        clock=clock,
    )
    return [job]


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
    args = parse_daemon_args("accountd.daemons", __doc__, ("replicator",), argv)
    if args is None:
        return 2
    setup_logging("account-daemons", args.deploy.log.level, args.deploy.log.format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_amain(args.deploy, args.node, args.once))


if __name__ == "__main__":
    sys.exit(main())
