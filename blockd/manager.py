"""The volume manager: creates, lists and deletes volumes and exports each one it holds.

It owns the shared :class:`ChunkCache`, one :class:`Lease` and one :class:`Volume` per exported
volume, and calls an :class:`Exporter` (the iSCSI target) to attach and detach them. Volumes
whose lease another blockd holds are listed but not exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

from blockd.allocmap import AllocCorrupt, AllocMap
from blockd.backend import BlockBackend
from blockd.cache import ChunkCache
from blockd.cachejournal import open_journal
from blockd.catalog import Catalog, VolumeRecord
from blockd.chunkstore import RESERVED_ACCOUNT, ChunkStore, chunk_container
from blockd.journal import Journal
from blockd.lease import Lease, LeaseHeld, LeaseLost
from blockd.store import ObjectStore, StoreError
from blockd.volume import Volume
from common.clock import Clock, SystemClock
from common.deploy import BlockConfig
from common.log import get_logger

__all__ = [
    "ExportInfo",
    "Exporter",
    "NameInUse",
    "VolumeManager",
    "VolumeNotFound",
]

log = get_logger("cairn.blockd.manager")

NAME_BYTES_MAX = 255
SIZE_BYTES_MAX = 64 << 40  # 64 TiB
_DELETE_CONCURRENCY = 32
_ATTACH_CONCURRENCY = 32
CHUNKS_MAX = 1 << 23  # keeps the allocation map at 1 MiB (8 TiB at 1 MiB chunks)
_CACHE_CHUNKS_MIN = 8  # a cache must hold several chunks or every write waits for a flush


class VolumeNotFound(LookupError):
    pass


class NameInUse(ValueError):
    pass


class Exporter(Protocol):
    """What the manager needs from the iSCSI target."""

    def export(self, iqn: str, backend: BlockBackend, chap_user: str, chap_secret: str) -> None: ...

    def unexport(self, iqn: str) -> None: ...


@dataclass(frozen=True)
class ExportInfo:
    iqn: str
    portal: str  # host:port
    lun: int
    chap_user: str
    chap_secret: str
    url: str  # iscsi://user%secret@host:port/iqn/lun (libiscsi and QEMU)
    exported: bool  # False when another blockd holds the volume's lease


@dataclass
class _Attached:
    volume: Volume
    lease: Lease


class VolumeManager:
    def __init__(
        self,
        store: ObjectStore,
        conf: BlockConfig,
        *,
        holder_id: str,
        clock: Clock | None = None,
        exporter: Exporter | None = None,
        portal: str | None = None,
    ) -> None:
        self.store = store
        self.conf = conf
        self.holder_id = holder_id
        self.clock = clock or SystemClock()
        self.exporter = exporter
        self.portal = portal or f"{conf.host}:{conf.iscsi_port}"
        self.catalog = Catalog(store)
        self.cache = ChunkCache(
            conf.cache_bytes_max,
            clock=self.clock,
            backpressure_timeout_s=conf.backpressure_timeout_s,
            # Chunks behind the journal stay cached: at most half the cache may be theirs.
            journal_bytes_max=min(conf.journal_bytes_max, conf.cache_bytes_max // 2),
            journal_idle_s=conf.journal_idle_s,
        )
        self.attached: dict[str, _Attached] = {}
        self._lock = asyncio.Lock()  # create/delete/attach are serialised
        self._background: set[asyncio.Task[None]] = set()
        self._timers = True
        self._adopt_task: asyncio.Task[None] | None = None

    # ---- lifetime --------------------------------------------------------------------------

    async def start(self, *, timers: bool = True) -> None:
        """Export every volume we can take the lease of; finish interrupted deletes.

        `timers` starts the cache flush timer and lease renewals (off for ManualClock tests).
        """
        self._timers = timers
        sem = asyncio.Semaphore(_ATTACH_CONCURRENCY)  # each attach waits lease_settle_s

        async def attach(record: VolumeRecord) -> None:
            async with sem:
                try:
                    await self._attach(record)
                except (LeaseHeld, StoreError) as e:
                    log.warning(
                        "volume not exported here",
                        extra={"fields": {"volume": record.id, "error": str(e)}},
                    )

        records = await self.catalog.records()
        for record in records:
            if record.status == "deleting":
                self._spawn(self._finish_delete(record))
        await asyncio.gather(*(attach(r) for r in records if r.status != "deleting"))
        if timers:
            self.cache.start_timer(self.conf.flush_interval_s)
            self._adopt_task = asyncio.create_task(self._adopt_loop())

    async def stop(self) -> None:
        """Flush every volume, detach it and release its lease."""
        tasks = list(self._background)
        if self._adopt_task is not None:
            tasks.append(self._adopt_task)
            self._adopt_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.cache.close()
        finally:
            for volume_id in list(self.attached):
                await self._detach(volume_id, flush=False)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- queries ---------------------------------------------------------------------------

    async def get(self, project: str, volume_id: str) -> VolumeRecord:
        record = await self.catalog.get(volume_id)
        if record is None or record.project != project or record.status == "deleting":
            raise VolumeNotFound(volume_id)
        return record

    async def list(self, project: str) -> list[VolumeRecord]:
        records = await self.catalog.records()
        mine = [r for r in records if r.project == project and r.status != "deleting"]
        return sorted(mine, key=lambda r: (r.created_at, r.id))

    def export_info(self, record: VolumeRecord) -> ExportInfo:
        iqn = self.iqn(record.id)
        user, secret = record.chap_user, record.chap_secret
        url = f"iscsi://{quote(user, safe='')}%{quote(secret, safe='')}@{self.portal}/{iqn}/0"
        return ExportInfo(iqn, self.portal, 0, user, secret, url, record.id in self.attached)

    def iqn(self, volume_id: str) -> str:
        return f"{self.conf.target_prefix}:volume-{volume_id}"

    # ---- changes ---------------------------------------------------------------------------

    async def create(
        self, project: str, name: str, size_bytes: int, chunk_bytes: int | None = None
    ) -> VolumeRecord:
        _check_name(name)
        chunk = chunk_bytes or self.conf.default_chunk_bytes
        if not 0 < size_bytes <= SIZE_BYTES_MAX or size_bytes % 512:
            raise ValueError(f"size must be 1..{SIZE_BYTES_MAX} bytes in whole 512-byte blocks")
        if chunk % 512 or not 4096 <= chunk <= 64 << 20:
            raise ValueError("chunk size must be 4 KiB..64 MiB in whole 512-byte blocks")
        if -(-size_bytes // chunk) > CHUNKS_MAX:
            raise ValueError(f"a volume has at most {CHUNKS_MAX} chunks: use a larger chunk size")
        if chunk * _CACHE_CHUNKS_MIN > self.cache.bytes_max:
            raise ValueError(
                f"chunk size must be at most 1/{_CACHE_CHUNKS_MIN} of the cache "
                f"({self.cache.bytes_max} bytes)"
            )
        async with self._lock:
            if any(r.name == name for r in await self.list(project)):
                raise NameInUse(f"a volume named {name!r} already exists")
            record = VolumeRecord(
                id=uuid.uuid4().hex,
                name=name,
                project=project,
                size_bytes=size_bytes,
                chunk_bytes=chunk,
                block_size=512,
                created_at=datetime.fromtimestamp(self.clock.time(), UTC).strftime(
                    "%Y-%m-%dT%H:%M:%S.%f"
                ),
                chap_user=f"cairn{secrets.token_hex(4)}",
                chap_secret=secrets.token_hex(8),  # 16 characters: every initiator accepts it
            )
            await self.catalog.create(record)
            await self._alloc_map(record).start_empty()
            await self._attach(record)
        log.info("volume created", extra={"fields": {"volume": record.id, "bytes": size_bytes}})
        return record

    async def delete(self, project: str, volume_id: str) -> None:
        async with self._lock:
            record = await self.get(project, volume_id)
            if record.id in self.attached:
                await self._detach(record.id, flush=False, drop=True)
            else:  # exported by another blockd? then its lease refuses us (LeaseHeld)
                lease = self._lease(record.id)
                await lease.acquire()
                await lease.release()
            record = await self.catalog.update(record, status="deleting")
        self._spawn(self._finish_delete(record))
        log.info("volume deleted", extra={"fields": {"volume": record.id}})

    async def _finish_delete(self, record: VolumeRecord) -> None:
        """Delete the chunks the allocation map names (all of them without a map), the record."""
        chunks = ChunkStore(self.store, record.id, record.size_bytes, record.chunk_bytes)
        alloc = self._alloc_map(record)
        try:
            await alloc.load()
        except AllocCorrupt as e:  # then every chunk index is deleted
            log.warning("bad allocation map", extra={"fields": {"volume": record.id, "e": str(e)}})
        idxs = alloc.allocated()
        sem = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def one(idx: int) -> None:
            async with sem:
                await chunks.delete(idx)

        for start in range(0, len(idxs), 1024):
            await asyncio.gather(*(one(i) for i in idxs[start : start + 1024]))
        await Journal(self.store, RESERVED_ACCOUNT, chunks.container).remove()
        await alloc.remove()
        await self.catalog.remove(record.id)

    async def adopt(self) -> int:
        """Export available volumes not exported here whose lease is free; return how many.

        Picks up volumes created by another process and volumes whose blockd died (once their
        lease has expired).
        """
        adopted = 0
        async with self._lock:
            for record in await self.catalog.records():
                if record.status != "available" or record.id in self.attached:
                    continue
                try:
                    await self._attach(record)
                except LeaseHeld:
                    continue
                adopted += 1
                log.info("volume adopted", extra={"fields": {"volume": record.id}})
        return adopted

    async def _adopt_loop(self) -> None:
        while True:
            await self.clock.sleep(self.conf.lease_ttl_s)
            try:
                await self.adopt()
            except StoreError as e:
                log.warning("adopting volumes failed", extra={"fields": {"error": repr(e)}})

    async def wait_idle(self) -> None:
        """Wait for background deletes (tests and shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # ---- attach / detach -------------------------------------------------------------------

    def _lease(self, volume_id: str) -> Lease:
        return Lease(
            self.store,
            volume_id,
            self.holder_id,
            clock=self.clock,
            ttl_s=self.conf.lease_ttl_s,
            settle_s=self.conf.lease_settle_s,
            skew_margin_s=self.conf.lease_ttl_s / 6,
        )

    def _alloc_map(self, record: VolumeRecord) -> AllocMap:
        num_chunks = -(-record.size_bytes // record.chunk_bytes)
        return AllocMap(self.store, RESERVED_ACCOUNT, chunk_container(record.id), num_chunks)

    async def _attach(self, record: VolumeRecord) -> None:
        lease = self._lease(record.id)
        await lease.acquire()
        alloc = self._alloc_map(record)
        try:
            await alloc.load()
        except AllocCorrupt as e:  # every chunk may exist; still exportable
            log.warning("bad allocation map", extra={"fields": {"volume": record.id, "e": str(e)}})
        except BaseException:
            with contextlib.suppress(StoreError):
                await lease.release()
            raise
        chunks = ChunkStore(
            self.store,
            record.id,
            record.size_bytes,
            record.chunk_bytes,
            fence=lease.check,
            alloc=alloc,
            clock=self.clock,
        )
        try:
            journal = await open_journal(self.cache, chunks)  # replays what a crash left
        except BaseException:
            self.cache.drop(chunks)
            with contextlib.suppress(StoreError):
                await lease.release()
            raise
        if self.conf.journal:
            chunks.journal = journal
        volume = Volume(chunks, self.cache, block_size=record.block_size, serial=record.id)
        self.attached[record.id] = _Attached(volume, lease)
        if self.exporter is not None:
            self.exporter.export(self.iqn(record.id), volume, record.chap_user, record.chap_secret)
        if self._timers:
            lease.start_renewal(on_lost=self._on_lease_lost(record.id))

    def _on_lease_lost(self, volume_id: str) -> Callable[[LeaseLost], None]:
        def lost(_: LeaseLost) -> None:
            self._spawn(self._detach(volume_id, flush=False, drop=True))

        return lost

    async def _detach(self, volume_id: str, *, flush: bool, drop: bool = False) -> None:
        att = self.attached.pop(volume_id, None)
        if att is None:
            return
        if self.exporter is not None:
            with contextlib.suppress(KeyError):
                self.exporter.unexport(self.iqn(volume_id))
        try:
            if flush:
                await att.volume.flush()
                await self.cache.checkpoint(att.volume.chunks, reason="detach")
        finally:
            if drop:
                self.cache.drop(att.volume.chunks)
            with contextlib.suppress(StoreError):
                await att.lease.release()


def _check_name(name: str) -> None:
    if not name or len(name.encode()) > NAME_BYTES_MAX or not name.isprintable():
        raise ValueError(f"volume name must be 1..{NAME_BYTES_MAX} printable bytes")
