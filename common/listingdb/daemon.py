"""Running background daemons: passes on an interval, recon files, a clean stop.

Each job runs one pass, writes ``<devices_dir>/recon/<job>.json``, then waits for its
interval (measured from the start of the pass) or for a stop. ``once`` runs one pass of each
job and returns. SIGTERM/SIGINT cancel the running passes (every pass is idempotent and
resumable: replication continues from sync points, the updater re-sends what is pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from common.clock import Clock
from common.deploy import AccountDaemonsConfig, ContainerDaemonsConfig
from common.listingdb.http import DeviceEnvs
from common.listingdb.recon import write_recon
from common.listingdb.repl_transport import HttpTransport
from common.listingdb.replicator import (
    DbReplicator,
    MakeBroker,
    PartitionRing,
    ReclaimSchedule,
    ReplicatorSettings,
    RingDevice,
)
from common.log import get_logger

__all__ = ["Job", "replicator_job", "run_job", "run_jobs"]

log = get_logger("cairn.listingdb.daemon")


@dataclass(frozen=True)
class Job:
    name: str  # also the recon file name, e.g. "container-replicator"
    interval_s: float
    run_pass: Callable[[], Awaitable[dict[str, Any]]]


async def _one_pass(job: Job, devices_dir: Path, node: str, clock: Clock, passes: int) -> None:
    started, t0 = clock.time(), clock.monotonic()
    error: str | None = None
    stats: dict[str, Any] = {}
    try:
        stats = await job.run_pass()
    except Exception as e:  # a failed pass is recorded and retried next interval
        log.exception("pass failed", extra={"fields": {"daemon": job.name}})
        error = repr(e)[:1000]
    duration = clock.monotonic() - t0
    record = {
        "node": node,
        "pass_started": started,
        "pass_ended": clock.time(),
        "pass_duration_s": round(duration, 6),
        "passes": passes,
        "interval_s": job.interval_s,
        "stats": stats,
        "error": error,
    }
    await asyncio.to_thread(write_recon, devices_dir, job.name, record)
    log.info("pass done", extra={"fields": {"daemon": job.name, **record}})


async def run_job(
    job: Job, devices_dir: Path, node: str, clock: Clock, stop: asyncio.Event, once: bool
) -> None:
    passes = 0
    while not stop.is_set():
        t0 = clock.monotonic()
        passes += 1
        await _one_pass(job, devices_dir, node, clock, passes)
        if once:
            return
        wait_s = max(0.0, job.interval_s - (clock.monotonic() - t0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait_s)


async def run_jobs(
    jobs: Sequence[Job], devices_dir: Path, node: str, clock: Clock, once: bool
) -> None:
    """Run every job until all are done (`once`) or SIGTERM/SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(run_job(j, devices_dir, node, clock, stop, once)) for j in jobs]
    everything: asyncio.Future[list[None]] = asyncio.gather(*tasks)
    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([everything, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (*tasks, stopper):
            t.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    failure = everything.exception() if everything.done() and not everything.cancelled() else None
    if isinstance(failure, Exception) and not stop.is_set():
        raise failure  # a job died outside its pass (its recon file could not be written)


def replicator_job(
    name: str,
    *,
    cfg: ContainerDaemonsConfig | AccountDaemonsConfig,
    reclaim_age_s: float,
    ring: PartitionRing,
    envs: DeviceEnvs,
    devices: Sequence[str],
    is_local: Callable[[RingDevice], bool],
    session: aiohttp.ClientSession,
    make_broker: MakeBroker,
    clock: Clock,
) -> Job:
    """The database replicator of one node's container or account databases, as a Job."""
    transport = HttpTransport(session, cfg.conn_timeout_s, cfg.node_timeout_s)
    settings = ReplicatorSettings(
        reclaim_age_s=reclaim_age_s,
        concurrency=cfg.replicator_concurrency,
        batch_rows=cfg.replicator_batch_rows,
    )
    schedule = ReclaimSchedule(settings.rows_reclaim_interval_s)
    names = list(devices)

    async def replicate() -> dict[str, Any]:
        opened = await asyncio.to_thread(envs.open_devices, names)
        replicator = DbReplicator(
            devices=opened,
            ring=ring,
            is_local=is_local,
            transport=transport,
            make_broker=make_broker,
            clock=clock,
            settings=settings,
            reclaim_schedule=schedule,
        )
        stats = (await replicator.run_once()).as_dict()
        stats["devices_skipped"] = len(names) - len(opened)
        return stats

    return Job(name, cfg.replicator_interval_s, replicate)
