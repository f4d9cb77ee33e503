"""The object replicator: keep every partition's replicas identical, move handoffs home.

For each partition on each local device:

* primary here: compare suffix hashes with each other primary (REPLICATE); for suffixes
  that differ, let the peer recompute them, then push the difference over one SSYNC
  exchange (the peer takes what it lacks or holds older; tombstones win over older data).
  A peer whose device answers 507 is covered by pushing to the next handoff instead.
* handoff here (our device is not a primary, e.g. after a failure or a ring change): push
  everything to every primary; once all of them took it, delete the local partition.

Hashing also reclaims tombstones older than `reclaim_age_s`. Bounded concurrency
(partitions at once per node), a bytes/s limit per device, stats in the recon file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from common.clock import Clock
from common.log import get_logger
from objectd.client import ReplicateError, direct_replicate
from objectd.hashes import HashStats, get_hashes
from objectd.layout import DeviceLayout, valid_device_name
from objectd.partition import local_partitions, remove_partition
from objectd.ratelimit import RateLimiter
from objectd.recon import RECON_DIR
from objectd.ssync_sender import SyncError, ssync_push
from ring import Device, Ring
from ring.device import normalize_ip

__all__ = ["ObjectReplicator", "ReplicationStats", "ReplicatorConf", "local_device_names"]

log = get_logger("cairn.object-replicator")
HANDOFF_TRIES_MAX = 4  # handoffs tried in place of a primary whose device answers 507


@dataclass(frozen=True)
class ReplicatorConf:
    devices_dir: Path
    # How the ring names this node (its object server's ip and port).
    node_ip: str
    node_port: int
    reclaim_age_s: float = 7 * 24 * 3600.0
    concurrency: int = 4
    bytes_per_s: int = 50 * 1024 * 1024
    conn_timeout_s: float = 0.5
    node_timeout_s: float = 10.0


@dataclass
class ReplicationStats:
    devices: int = 0
    partitions_total: int = 0
    partitions_in_sync: int = 0  # every primary matched, or took our push, this pass
    partitions_pushed: int = 0
    handoffs_removed: int = 0
    objects_synced: int = 0  # files streamed to peers
    bytes_synced: int = 0
    suffixes_hashed: int = 0
    tombstones_reclaimed: int = 0
    errors: int = 0


def local_device_names(devices_dir: Path) -> list[str]:
    try:
        names = os.listdir(devices_dir)
    except FileNotFoundError:
        return []
    return sorted(
        n for n in names if valid_device_name(n) and n != RECON_DIR and (devices_dir / n).is_dir()
    )


def clean_tmp(layout: DeviceLayout, now_s: float, age_s: float) -> int:
    """Remove leftovers in tmp/ older than `age_s` (writes cut short by a crash)."""
    removed = 0
    try:
        names = os.listdir(layout.tmp)
    except FileNotFoundError:
        return 0
    for name in names:
        path = layout.tmp / name
        try:
            if os.lstat(path).st_mtime >= now_s - age_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def _url(dev: Device) -> str:
    ip = f"[{dev.replication_ip}]" if ":" in dev.replication_ip else dev.replication_ip
    return f"http://{ip}:{dev.replication_port}"


class ObjectReplicator:
    def __init__(
        self, conf: ReplicatorConf, ring: Ring, session: aiohttp.ClientSession, clock: Clock
    ) -> None:
        self.conf = conf
        self.ring = ring
        self.session = session
        self.clock = clock
        self._ip = normalize_ip(conf.node_ip)
        self._limiters: dict[str, RateLimiter] = {}
        self.stats = ReplicationStats()

    def _is_me(self, dev: Device, device_name: str) -> bool:
        here = {(dev.ip, dev.port), (dev.replication_ip, dev.replication_port)}
        return dev.device == device_name and (self._ip, self.conf.node_port) in here

    def _limiter(self, device: str) -> RateLimiter:
        lim = self._limiters.get(device)
        if lim is None:
            lim = RateLimiter(self.conf.bytes_per_s, self.clock)
            self._limiters[device] = lim
        return lim

    async def run_once(self) -> ReplicationStats:
        """One pass over every partition of every local device."""
        self.stats = ReplicationStats()
        sem = asyncio.Semaphore(self.conf.concurrency)
        devices = await asyncio.to_thread(local_device_names, self.conf.devices_dir)
        self.stats.devices = len(devices)
        jobs = []
        for device in devices:
            layout = DeviceLayout(self.conf.devices_dir, device)
            await asyncio.to_thread(clean_tmp, layout, self.clock.time(), self.conf.reclaim_age_s)
            for part in await asyncio.to_thread(local_partitions, layout):
                jobs.append(self._guarded(sem, layout, part))
        self.stats.partitions_total = len(jobs)
        await asyncio.gather(*jobs)
        log.info("replication pass", extra={"fields": asdict(self.stats)})
        return self.stats

    async def _guarded(self, sem: asyncio.Semaphore, layout: DeviceLayout, part: int) -> None:
        async with sem:
            try:
                await self.replicate_partition(layout, part)
            except Exception as e:  # one bad partition must not stop the pass
                self.stats.errors += 1
                log.warning(
                    "partition replication failed",
                    extra={"fields": {"device": layout.device, "part": part, "error": repr(e)}},
                )

    async def _hashes(self, layout: DeviceLayout, part: int, suffixes: list[str]) -> dict[str, str]:
        st = HashStats()
        hashes = await asyncio.to_thread(
            get_hashes,
            layout,
            part,
            now_s=self.clock.time(),
            reclaim_age_s=self.conf.reclaim_age_s,
            recalculate=suffixes,
            stats=st,
        )
        self.stats.suffixes_hashed += st.suffixes_hashed
        self.stats.tombstones_reclaimed += st.tombstones_reclaimed
        return hashes

    def _targets(self, layout: DeviceLayout, part: int) -> tuple[bool, list[Device]]:
        """(is handoff, the devices to push to)."""
        if part >= self.ring.partition_count:
            raise ValueError(f"partition {part} is outside the ring")
        primaries = self.ring.get_part_nodes(part)
        mine = [d for d in primaries if self._is_me(d, layout.device)]
        return not mine, [d for d in primaries if d not in mine]

    async def replicate_partition(self, layout: DeviceLayout, part: int) -> bool:
        """Sync one partition; True if every target is in sync afterwards."""
        handoff, targets = self._targets(layout, part)
        local = await self._hashes(layout, part, [])
        if not local and handoff:
            removed = await asyncio.to_thread(remove_partition, layout, part, {})
            self.stats.handoffs_removed += int(removed)
            return True
        handoffs = (d for d in self.ring.get_more_nodes(part) if not self._is_me(d, layout.device))
        ok = True
        for dev in targets:
            status = await self._sync_with(layout, part, local, dev)
            if status == 507 and not handoff:
                # The copy is safe on a handoff, but the partition is not in sync yet.
                await self._cover_with_handoff(layout, part, local, handoffs)
            ok = ok and status == 200
        if ok:
            self.stats.partitions_in_sync += 1
        if handoff and ok:
            again = await self._hashes(layout, part, [])
            if again == local:
                removed = await asyncio.to_thread(remove_partition, layout, part, local)
                self.stats.handoffs_removed += int(removed)
        return ok

    async def _cover_with_handoff(
        self, layout: DeviceLayout, part: int, local: dict[str, str], handoffs: Iterator[Device]
    ) -> bool:
        """Push to the next handoffs until one takes the partition; False if none did."""
        for _ in range(HANDOFF_TRIES_MAX):
            dev = next(handoffs, None)
            if dev is None:
                break
            if await self._sync_with(layout, part, local, dev) == 200:
                return True
        return False

    async def _sync_with(
        self, layout: DeviceLayout, part: int, local: dict[str, str], dev: Device
    ) -> int:
        """Push what `dev` lacks; 200 if in sync afterwards, else the failure's status."""
        url = _url(dev)
        c, n = self.conf.conn_timeout_s, self.conf.node_timeout_s
        try:
            remote = await direct_replicate(
                self.session, url, dev.device, part, conn_timeout_s=c, node_timeout_s=n
            )
            diff = sorted(s for s, h in local.items() if remote.get(s) != h)
            if diff:
                # Both sides recompute what differs from their disks before we decide: the
                # peer may hold invalidated entries, and our own cache may be behind too.
                remote = await direct_replicate(
                    self.session, url, dev.device, part, diff, conn_timeout_s=c, node_timeout_s=n
                )
                diff = [s for s in diff if remote.get(s) != local[s]]
            if diff:
                fresh = await self._hashes(layout, part, diff)
                diff = [s for s in diff if s in fresh and remote.get(s) != fresh[s]]
            if not diff:
                return 200
            result = await ssync_push(
                self.session,
                url,
                dev.device,
                layout,
                part,
                diff,
                self._limiter(layout.device),
                conn_timeout_s=c,
                node_timeout_s=n,
            )
        except ReplicateError as e:
            return self._failed(dev, part, e, e.status or 0)
        except SyncError as e:
            return self._failed(dev, part, e, 0)
        self.stats.partitions_pushed += 1
        self.stats.objects_synced += result.sent
        self.stats.bytes_synced += result.sent_bytes
        if not result.in_sync:
            return self._failed(dev, part, RuntimeError(f"incomplete: {result}"), 0)
        return 200

    def _failed(self, dev: Device, part: int, e: Exception, status: int) -> int:
        self.stats.errors += 1
        log.warning(
            "sync with peer failed",
            extra={"fields": {"peer": dev.label(), "part": part, "error": str(e)}},
        )
        return status
