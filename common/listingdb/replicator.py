"""The container/account replicator: one pass over every database on this node's devices.

For each database: reclaim what is past ``reclaim_age_s``; find the partition's primaries in
the ring; for each primary that is not this device, ``Sync`` (the peer merges our
timestamps and metadata and answers its row hash and its sync point for us). A peer without
the database gets a staged full copy; otherwise rows changed after the sync point go in
batches, each batch moving the peer's sync point forward, so a sync that dies half way
resumes where it stopped. A database on a handoff device is pushed to every primary and
removed here once all of them took it. The rings are read through a small protocol so
``common`` need not import ``ring`` (``ring.Ring`` satisfies it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from common.clock import Clock
from common.listingdb import staging
from common.listingdb.broker import Broker, list_databases
from common.listingdb.env import ListingEnv
from common.listingdb.records import DbInfo
from common.listingdb.repl_transport import Peer, PeerError, ReplicationTransport
from common.listingdb.replication import (
    MergeRows,
    Reply,
    Request,
    StageBegin,
    StageCommit,
    Sync,
    WireInfo,
)
from common.log import get_logger
from common.timestamps import Timestamp

__all__ = [
    "DbReplicator",
    "PartitionRing",
    "ReclaimSchedule",
    "ReplicationStats",
    "ReplicatorSettings",
    "RingDevice",
    "is_local_to",
]

log = get_logger("cairn.listingdb.replicator")
MakeBroker = Callable[[ListingEnv, int, str], Broker[Any]]
_TASKS_MAX = 1000  # databases scheduled at a time (the semaphore bounds the running ones)


class RingDevice(Protocol):
    @property
    def replication_ip(self) -> str: ...
    @property
    def replication_port(self) -> int: ...
    @property
    def ip(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def device(self) -> str: ...


class PartitionRing(Protocol):
    def get_part_nodes(self, part: int) -> Sequence[RingDevice]: ...


def is_local_to(host: str, port: int) -> Callable[[RingDevice], bool]:
    """A predicate: is a ring device served by the server listening on host:port?"""

    def local(dev: RingDevice) -> bool:
        return (dev.ip == host and dev.port == port) or (
            dev.replication_ip == host and dev.replication_port == port
        )

    return local


@dataclass(frozen=True)
class ReplicatorSettings:
    reclaim_age_s: float
    concurrency: int = 4
    batch_rows: int = 1000
    # An incremental sync sends at most this many batches per peer per pass (the rest next
    # pass, from the sync point), so one huge database cannot starve the others.
    batches_per_peer_max: int = 1000
    # A staged copy nobody finished is removed after this long.
    stage_ttl_s: float = 3600.0
    # How often a long-running daemon reclaims tombstone rows (see ReclaimSchedule).
    rows_reclaim_interval_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.batch_rows < 1 or self.batches_per_peer_max < 1:
            raise ValueError("replicator concurrency and batch sizes must be at least 1")


@dataclass
class ReplicationStats:
    dbs_total: int = 0
    dbs_in_sync: int = 0  # every peer already had every row
    dbs_synced: int = 0  # rows or a copy were sent and every peer took them
    dbs_failed: int = 0  # at least one peer could not be synced
    full_copies: int = 0
    rows_sent: int = 0
    peers_failed: int = 0
    handoffs_removed: int = 0
    rows_reclaimed: int = 0
    dbs_reclaimed: int = 0
    staged_reaped: int = 0
    devices_skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _PeerFailed(Exception):
    pass


class ReclaimSchedule:
    """When each device last had its tombstone rows reclaimed. Reclaiming rows scans every
    row of every database, so a long-running daemon does it at most once per `interval_s`
    per device; a deleted database past reclaim age is still removed on every pass (that
    check reads one record). A fresh schedule (or none) reclaims on the first pass."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def due(self, device: str, now: float) -> bool:
        last = self._last.get(device)
        return last is None or now - last >= self.interval_s

    def done(self, device: str, now: float) -> None:
        self._last[device] = now


class DbReplicator:
    def __init__(
        self,
        *,
        devices: Mapping[str, ListingEnv],
        ring: PartitionRing,
        is_local: Callable[[RingDevice], bool],
        transport: ReplicationTransport,
        make_broker: MakeBroker,
        clock: Clock,
        settings: ReplicatorSettings,
        reclaim_schedule: ReclaimSchedule | None = None,
    ) -> None:
        self.reclaim_schedule = reclaim_schedule
        self.devices = devices
        self.ring = ring
        self.is_local = is_local
        self.transport = transport
        self.make_broker = make_broker
        self.clock = clock
        self.settings = settings

    async def run_once(self) -> ReplicationStats:
        stats = ReplicationStats()
        gate = asyncio.Semaphore(self.settings.concurrency)
        now = self.clock.time()
        cutoff = Timestamp.from_float(max(0.0, now - self.settings.reclaim_age_s))
        stage_cutoff = Timestamp.from_float(max(0.0, now - self.settings.stage_ttl_s))

        async def one(device: str, env: ListingEnv, part: int, hash_hex: str, rows: bool) -> None:
            async with gate:
                try:
                    await self._replicate_db(device, env, part, hash_hex, cutoff, rows, stats)
                except Exception:  # one bad database must not stop the pass
                    stats.dbs_failed += 1
                    log.exception(
                        "replicating a database failed",
                        extra={"fields": {"device": device, "partition": part, "hash": hash_hex}},
                    )

        for device, env in sorted(self.devices.items()):
            stats.staged_reaped += await env.run(staging.reap, env, self.make_broker, stage_cutoff)
            dbs = await env.run(list_databases, env)
            schedule = self.reclaim_schedule
            rows = schedule is None or schedule.due(device, now)
            for start in range(0, len(dbs), _TASKS_MAX):
                batch = dbs[start : start + _TASKS_MAX]
                await asyncio.gather(*(one(device, env, p, h, rows) for p, h in batch))
            if schedule is not None and rows:
                schedule.done(device, now)
        return stats

    async def _replicate_db(
        self,
        device: str,
        env: ListingEnv,
        part: int,
        hash_hex: str,
        cutoff: Timestamp,
        reclaim_rows: bool,
        stats: ReplicationStats,
    ) -> None:
        broker = self.make_broker(env, part, hash_hex)
        info = await env.run(broker.get_info)
        if info is None:
            return
        expired = broker.is_deleted(info) and info.ts("delete_timestamp") < cutoff
        if reclaim_rows or expired:
            removed, dropped = await env.run(broker.reclaim, cutoff)
            stats.rows_reclaimed += removed
            if dropped:
                stats.dbs_reclaimed += 1
                return
            info = await env.run(broker.get_info)
            if info is None:
                return
        stats.dbs_total += 1
        primaries = list(self.ring.get_part_nodes(part))
        here = [d for d in primaries if self.is_local(d) and d.device == device]
        peers = [d for d in primaries if not (self.is_local(d) and d.device == device)]
        sent_any = failed = False
        for dev in peers:
            peer = Peer(dev.replication_ip, dev.replication_port, dev.device)
            try:
                sent_any |= await self._sync_peer(broker, info, peer, part, stats)
            except (_PeerFailed, PeerError) as e:
                failed = True
                stats.peers_failed += 1
                log.warning(
                    "peer sync failed",
                    extra={
                        "fields": {
                            "peer": f"{peer.netloc}/{peer.device}",
                            "partition": part,
                            "hash": hash_hex,
                            "error": str(e),
                        }
                    },
                )
        if failed:
            stats.dbs_failed += 1
        elif sent_any:
            stats.dbs_synced += 1
        else:
            stats.dbs_in_sync += 1
        # A handoff copy every primary now holds: drop it, unless it changed meanwhile.
        handoff_done = not here and not failed and bool(peers)
        if handoff_done and await env.run(broker.destroy_if_unchanged, info):
            stats.handoffs_removed += 1

    async def _call(self, peer: Peer, part: int, hash_hex: str, req: Request) -> Reply:
        reply = await self.transport.call(peer, part, hash_hex, req)
        if reply.status == "error":
            raise _PeerFailed(f"peer refused {type(req).__name__}: {reply.error}")
        return reply

    async def _sync_peer(
        self,
        broker: Broker[Any],
        info: DbInfo,
        peer: Peer,
        part: int,
        stats: ReplicationStats,
        copy_allowed: bool = True,
    ) -> bool:
        """Bring one peer up to date with `info`'s database; True when anything was sent."""
        reply = await self._call(peer, part, broker.hash_hex, Sync(WireInfo.of(info)))
        if reply.status == "missing":
            if not copy_allowed:
                raise _PeerFailed("the peer's database vanished during the sync")
            return await self._full_copy(broker, info, peer, part, stats)
        if reply.status != "ok" or reply.info is None or reply.sync_point is None:
            raise _PeerFailed(f"unexpected sync reply {reply.status}")
        since = reply.sync_point
        if since >= info.max_seq:
            return False
        if info.row_hash is not None and reply.info.row_hash == info.row_hash:
            # Same rows already (they reached it another way): just move its mark for us.
            req = MergeRows(info.instance_id, info.max_seq)
            await self._expect_ok(peer, part, broker.hash_hex, req)
            return False
        limit = self.settings.batches_per_peer_max
        return await self._send_rows(broker, info, peer, part, since, False, limit, stats)

    async def _expect_ok(self, peer: Peer, part: int, hash_hex: str, req: Request) -> Reply:
        reply = await self._call(peer, part, hash_hex, req)
        if reply.status != "ok":
            raise _PeerFailed(f"{type(req).__name__} answered {reply.status}")
        return reply

    async def _send_rows(
        self,
        broker: Broker[Any],
        info: DbInfo,
        peer: Peer,
        part: int,
        since: int,
        staged: bool,
        batches_max: int | None,
        stats: ReplicationStats,
    ) -> bool:
        """Send rows changed after `since`, batch by batch; True when any batch was sent.

        A short batch holds every row left, so its sync point can vouch for everything up to
        `info.max_seq` (read before the batch): rows changed later have higher seqs."""
        env, batch, sent = broker.env, self.settings.batch_rows, False
        n = 0
        while batches_max is None or n < batches_max:
            rows = await env.run(broker.rows_since, since, batch)
            last = int(rows[-1]["seq"]) if rows else since
            sync_to = last if len(rows) == batch else max(last, info.max_seq)
            if sync_to <= since and not staged:
                return sent
            req = MergeRows(info.instance_id, sync_to, tuple(rows), staged)
            await self._expect_ok(peer, part, broker.hash_hex, req)
            stats.rows_sent += len(rows)
            sent = sent or bool(rows)
            since, n = sync_to, n + 1
            if len(rows) < batch:
                return sent
        return sent

    async def _full_copy(
        self, broker: Broker[Any], info: DbInfo, peer: Peer, part: int, stats: ReplicationStats
    ) -> bool:
        begun = await self._call(peer, part, broker.hash_hex, StageBegin(WireInfo.of(info)))
        if begun.status == "exists":  # created since our Sync: send it rows instead
            return await self._sync_peer(broker, info, peer, part, stats, copy_allowed=False)
        if begun.status != "ok" or begun.sync_point is None:
            raise _PeerFailed(f"stage_begin answered {begun.status}")
        await self._send_rows(broker, info, peer, part, begun.sync_point, True, None, stats)
        latest = await broker.env.run(broker.get_info)
        if latest is None:  # removed here meanwhile (reclaimed): nothing to install
            return False
        done = await self._call(peer, part, broker.hash_hex, StageCommit(WireInfo.of(latest)))
        if done.status == "missing":
            raise _PeerFailed("the staged copy vanished before commit")
        if done.status == "exists":  # a real one appeared; the staged copy was dropped
            return await self._sync_peer(broker, info, peer, part, stats, copy_allowed=False)
        stats.full_copies += 1
        return True
