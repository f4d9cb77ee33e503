"""A flush that finds a chunk's record still being put waits for that record, it does not put
the chunk whole (real cache, journal and in-memory store; record puts held back on purpose)."""

from __future__ import annotations

import asyncio
from typing import Any

from blockd.cache import ChunkCache
from blockd.store import MemoryObjectStore
from blockd.volume import Volume
from tests.unit.blockd.helpers import BS, attach_journal, make_volume, pattern

CHUNK = 128 * BS  # 64 KiB
WRITE_BLOCKS = 8  # 4 KiB
SIZE = 4 * CHUNK


async def _volume(store: MemoryObjectStore) -> Volume:
    vol = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK, cache=ChunkCache(1 << 20))
    await attach_journal(vol)
    return vol


class HeldRecordStore(MemoryObjectStore):
    """Fault injection: journal record puts wait until `release` is set (a slow replica)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def put(self, account: str, container: str, obj: str, *a: Any, **kw: Any) -> str | None:
        if obj.startswith(".journal."):
            await self.release.wait()
        return await super().put(account, container, obj, *a, **kw)


def test_a_flush_during_a_record_in_flight_waits_for_it_instead_of_putting_chunks():
    """A flush (the timer's) finding a chunk whose record is being put waits for that record;
    writes landing on the chunk meanwhile go in a record of their own, not a whole-chunk put
    (a chunk flush used to wait for the record and then put the chunk whole)."""

    async def run():
        store = HeldRecordStore()
        vol = await _volume(store)
        await vol.write(0, pattern(1, WRITE_BLOCKS))
        first = asyncio.create_task(vol.flush())  # a SYNCHRONIZE CACHE: its record is held
        for _ in range(20):
            await asyncio.sleep(0)
        second = asyncio.create_task(vol.cache.flush())  # the timer's flush, meanwhile
        for _ in range(20):
            await asyncio.sleep(0)
        await vol.write(WRITE_BLOCKS, pattern(2, WRITE_BLOCKS))  # same chunk, after both
        store.release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert vol.cache.stats.journal_records == 2
        assert vol.cache.stats.flushed_chunks == 0 and vol.cache.stats.merge_reads == 0
        fresh = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK)
        assert await attach_journal(fresh) == 2
        assert await fresh.read(0, 2 * WRITE_BLOCKS) == pattern(1, WRITE_BLOCKS) + pattern(
            2, WRITE_BLOCKS
        )

    asyncio.run(run())
