"""Volume + ChunkCache against the memory and faulty object stores."""

from __future__ import annotations

import asyncio
import random

import pytest

from blockd.allocmap import AllocMap
from blockd.backend import BackendRangeError, BlockBackend
from blockd.cache import ENTRY_BYTES, CacheFull, ChunkCache
from blockd.chunkstore import RESERVED_ACCOUNT, ChunkCorrupt, chunk_container
from blockd.store import FaultPlan, FaultyObjectStore, MemoryObjectStore, StoreUnavailable
from tests.unit.blockd.helpers import BS, VOLUME_ID, make_volume, pattern

CONTAINER = chunk_container(VOLUME_ID)


def test_volume_is_a_block_backend():
    vol = make_volume(MemoryObjectStore())
    assert isinstance(vol, BlockBackend)
    assert vol.block_size == BS
    assert vol.num_blocks == 320
    assert vol.serial == VOLUME_ID


def test_unwritten_volume_reads_zeros_without_storing_anything():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        assert await vol.read(0, vol.num_blocks) == bytes(vol.num_blocks * BS)
        await vol.flush()
        assert store.object_names(RESERVED_ACCOUNT, CONTAINER) == []

    asyncio.run(run())


def test_write_read_across_chunk_boundaries_and_flush_reaches_a_new_volume():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        data = pattern(1, 21)
        await vol.write(5, data)  # blocks 5..25: four chunks, partial at both ends
        assert await vol.read(5, 21) == data
        assert await vol.read(4, 1) == bytes(BS)
        fresh = make_volume(store)
        assert await fresh.read(5, 21) == bytes(21 * BS)  # not flushed yet: a cache, like a disk
        await vol.flush()
        fresh = make_volume(store)
        assert await fresh.read(5, 21) == data
        assert store.object_names(RESERVED_ACCOUNT, CONTAINER) == [
            "000000000000",
            "000000000001",
            "000000000002",
            "000000000003",
        ]

    asyncio.run(run())


def test_fua_write_is_durable_without_flush():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        await vol.write(0, pattern(1, 1))  # cached only
        await vol.write(17, pattern(2, 2), fua=True)
        fresh = make_volume(store)
        assert await fresh.read(17, 2) == pattern(2, 2)
        assert await fresh.read(0, 1) == bytes(BS)  # FUA flushed only the chunk it touched

    asyncio.run(run())


def test_out_of_range_and_partial_block_requests_raise():
    async def run():
        vol = make_volume(MemoryObjectStore())
        with pytest.raises(BackendRangeError):
            await vol.read(vol.num_blocks, 1)
        with pytest.raises(BackendRangeError):
            await vol.write(vol.num_blocks - 1, pattern(1, 2))
        with pytest.raises(BackendRangeError):
            await vol.write(0, b"x" * 100)
        with pytest.raises(BackendRangeError):
            await vol.unmap(-1, 1)

    asyncio.run(run())


def test_last_chunk_may_be_short():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store, size_bytes=20 * BS, chunk_bytes=8 * BS)  # chunks 8, 8, 4
        await vol.write(16, pattern(3, 4))
        await vol.flush()
        assert len(await store.get(RESERVED_ACCOUNT, CONTAINER, "000000000002") or b"") == 4 * BS
        assert await make_volume(store, size_bytes=20 * BS).read(14, 6) == bytes(2 * BS) + pattern(
            3, 4
        )

    asyncio.run(run())


def test_unmap_whole_chunks_deletes_objects_and_partial_unmap_zeroes():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        await vol.write(0, pattern(1, 24))  # chunks 0, 1, 2
        await vol.flush()
        await vol.unmap(4, 12)  # half of chunk 0, all of chunk 1
        expect = pattern(1, 24)[: 4 * BS] + bytes(12 * BS) + pattern(1, 24)[16 * BS :]
        assert await vol.read(0, 24) == expect
        await vol.flush()
        assert store.object_names(RESERVED_ACCOUNT, CONTAINER) == ["000000000000", "000000000002"]
        assert await make_volume(store).read(0, 24) == expect
        assert await vol.is_mapped(8) == (False, 8)
        assert await vol.is_mapped(0) == (True, 8)

    asyncio.run(run())


def test_zero_filled_chunk_is_stored_as_no_object():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        await vol.write(8, pattern(1, 8))
        await vol.flush()
        await vol.write(8, bytes(8 * BS))
        await vol.flush()
        assert store.object_names(RESERVED_ACCOUNT, CONTAINER) == []

    asyncio.run(run())


def test_is_mapped_reports_runs_from_a_fresh_cache():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        await vol.write(16, pattern(1, 16))  # chunks 2 and 3
        await vol.flush()
        fresh = make_volume(store)
        assert await fresh.is_mapped(3) == (False, 13)
        assert await fresh.is_mapped(18) == (True, 14)

    asyncio.run(run())


def test_concurrent_partial_writes_to_one_chunk_are_all_kept():
    async def run(seed: int):
        rng = random.Random(seed)
        store = FaultyObjectStore(MemoryObjectStore(), rng, FaultPlan(latency_max_s=0.002))
        vol = make_volume(store, chunk_bytes=64 * BS, size_bytes=128 * BS)
        order = list(range(64))
        rng.shuffle(order)

        async def writer(block: int) -> None:
            await asyncio.sleep(rng.uniform(0, 0.003))
            await vol.write(block, pattern(block, 1))

        async def flusher() -> None:
            for _ in range(10):
                await asyncio.sleep(rng.uniform(0, 0.002))
                await vol.flush()

        await asyncio.gather(*(writer(b) for b in order), flusher(), flusher())
        expect = b"".join(pattern(b, 1) for b in range(64))
        assert await vol.read(0, 64) == expect
        await vol.flush()
        assert (
            await make_volume(store, chunk_bytes=64 * BS, size_bytes=128 * BS).read(0, 64) == expect
        )

    for seed in range(5):
        asyncio.run(run(seed))


def test_failed_flush_keeps_data_dirty_until_a_later_flush_succeeds():
    async def run():
        inner = MemoryObjectStore()
        writes_fail = FaultPlan(put_fail_rate=1.0, delete_fail_rate=1.0)
        faulty = FaultyObjectStore(inner, random.Random(7), writes_fail)
        vol = make_volume(faulty)
        await vol.write(3, pattern(1, 10))
        with pytest.raises(StoreUnavailable):
            await vol.flush()
        assert vol.cache.dirty_count(vol.chunks) == 2
        assert await vol.read(3, 10) == pattern(1, 10)  # still served from the cache
        with pytest.raises(StoreUnavailable):
            await vol.write(20, pattern(2, 1), fua=True)
        faulty.plan = FaultPlan()
        await vol.flush()
        assert vol.cache.dirty_count() == 0
        fresh = make_volume(inner)
        assert await fresh.read(3, 10) == pattern(1, 10)
        assert await fresh.read(20, 1) == pattern(2, 1)

    asyncio.run(run())


def test_flaky_store_eventually_flushes_everything():
    async def run():
        inner = MemoryObjectStore()
        faulty = FaultyObjectStore(
            inner, random.Random(3), FaultPlan(put_fail_rate=0.5, get_fail_rate=0.0)
        )
        vol = make_volume(faulty)
        for i in range(0, 320, 16):
            await vol.write(i, pattern(i, 5))
        for _ in range(200):
            try:
                await vol.flush()
                break
            except StoreUnavailable:
                continue
        else:
            pytest.fail("flush never succeeded at a 50% failure rate")
        assert faulty.failures > 0
        fresh = make_volume(inner)
        for i in range(0, 320, 16):
            assert await fresh.read(i, 5) == pattern(i, 5)

    asyncio.run(run())


def test_backpressure_bounds_memory_and_writers_wait_for_flushes():
    async def run():
        store = MemoryObjectStore(put_latency_s=0.001)
        cache = ChunkCache(2 * 8 * BS, backpressure_timeout_s=10.0)
        vol = make_volume(store, cache=cache)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, cache.used_bytes)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(vol.write(i * 8 + 1, pattern(i, 3)) for i in range(40)))
        watcher.cancel()
        assert peak <= cache.bytes_max
        assert cache.stats.backpressure_waits > 0
        await vol.flush()
        fresh = make_volume(store)
        for i in range(40):
            assert await fresh.read(i * 8 + 1, 3) == pattern(i, 3)

    asyncio.run(run())


def test_backpressure_with_store_down_raises_cache_full_instead_of_growing():
    async def run():
        faulty = FaultyObjectStore(MemoryObjectStore(), random.Random(1), FaultPlan(down=True))
        cache = ChunkCache(2 * (8 * BS + ENTRY_BYTES), backpressure_timeout_s=0.05)
        vol = make_volume(faulty, cache=cache)
        await vol.write(0, pattern(1, 8))
        await vol.write(8, pattern(2, 8))
        with pytest.raises(CacheFull):
            await vol.write(16, pattern(3, 8))
        assert cache.used_bytes <= cache.bytes_max
        faulty.plan.down = False
        await vol.write(16, pattern(3, 8))  # space comes back once flushes work again
        assert await vol.read(0, 24) == pattern(1, 8) + pattern(2, 8) + pattern(3, 8)

    asyncio.run(run())


def test_sequential_reads_prefetch_following_chunks():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        await vol.write(0, pattern(1, 320))
        await vol.flush()
        fresh = make_volume(store)
        for lba in range(0, 64, 8):
            assert await fresh.read(lba, 8) == pattern(1, 320)[lba * BS : (lba + 8) * BS]
            await asyncio.sleep(0)  # let background prefetches run
        assert fresh.cache.stats.prefetches > 0
        assert fresh.cache.stats.hits > 0

    asyncio.run(run())


def test_oversized_chunk_object_is_reported_not_served():
    async def run():
        store = MemoryObjectStore()
        await store.put(RESERVED_ACCOUNT, CONTAINER, "000000000000", b"x" * (9 * BS))
        vol = make_volume(store)
        with pytest.raises(ChunkCorrupt):
            await vol.read(0, 1)

    asyncio.run(run())


def test_unflushed_writes_after_crash_are_old_or_new_never_torn():
    """Drop the cache at random points: each block reads as some value it once held."""

    async def run(seed: int):
        rng = random.Random(seed)
        store = MemoryObjectStore()
        vol = make_volume(store, cache_bytes_max=3 * 8 * BS)
        history: list[set[bytes]] = [{bytes(BS)} for _ in range(vol.num_blocks)]
        durable = [bytes(BS)] * vol.num_blocks
        current = list(durable)
        for step in range(60):
            lba = rng.randrange(vol.num_blocks - 10)
            n = rng.randint(1, 10)
            data = pattern(step, n)
            await vol.write(lba, data)
            for i in range(n):
                current[lba + i] = data[i * BS : (i + 1) * BS]
                history[lba + i].add(current[lba + i])
            if rng.random() < 0.2:
                await vol.flush()
                durable = list(current)
        crashed = make_volume(store)  # the old cache is simply abandoned
        got = await crashed.read(0, crashed.num_blocks)
        for b in range(crashed.num_blocks):
            block = got[b * BS : (b + 1) * BS]
            assert block in history[b], f"block {b} holds data it never held"
            if current[b] == durable[b]:
                assert block == durable[b], f"block {b} lost flushed data"

    for seed in range(5):
        asyncio.run(run(seed))


def test_dropping_a_volume_mid_write_leaves_nothing_dirty():
    async def run():
        store = FaultyObjectStore(
            MemoryObjectStore(), random.Random(2), FaultPlan(latency_max_s=0.01)
        )
        vol = make_volume(store)
        writes = asyncio.gather(*(vol.write(i * 8 + 1, pattern(i, 2)) for i in range(6)))
        await asyncio.sleep(0.002)  # some writes are loading their chunk now
        vol.cache.drop(vol.chunks)
        await writes
        assert vol.cache.dirty_count() == 0
        await vol.cache.flush()
        assert vol.cache.used_bytes == 0

    asyncio.run(run())


def test_partial_writes_are_acknowledged_without_reading_the_chunk():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        await vol.write(0, pattern(1, 8))  # chunk 0 exists in the store
        await vol.flush()
        fresh = make_volume(store)
        gets = store.gets
        await fresh.write(2, pattern(2, 1))  # partial: no read of the chunk yet
        await fresh.write(5, pattern(3, 2))
        assert store.gets == gets
        assert await fresh.read(5, 2) == pattern(3, 2)  # served from what was written here
        assert store.gets == gets
        expect = bytearray(pattern(1, 8))
        expect[2 * BS : 3 * BS] = pattern(2, 1)
        expect[5 * BS : 7 * BS] = pattern(3, 2)
        assert await fresh.read(0, 8) == bytes(expect)  # needs the rest: read and merged
        assert store.gets == gets + 1
        await fresh.unmap(3, 1)
        expect[3 * BS : 4 * BS] = bytes(BS)
        await fresh.flush()
        assert await make_volume(store).read(0, 8) == bytes(expect)

    asyncio.run(run())


def test_unmerged_partial_writes_are_merged_at_flush():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        await vol.write(8, pattern(1, 8))
        await vol.flush()
        fresh = make_volume(store)
        await fresh.write(9, pattern(2, 1))
        await fresh.unmap(12, 2)
        await fresh.flush()
        expect = bytearray(pattern(1, 8))
        expect[1 * BS : 2 * BS] = pattern(2, 1)
        expect[4 * BS : 6 * BS] = bytes(2 * BS)
        assert await make_volume(store).read(8, 8) == bytes(expect)

    asyncio.run(run())


def test_partial_reads_fetch_only_the_blocks_they_lack():
    async def run():
        store = MemoryObjectStore()
        vol = make_volume(store)
        await vol.write(0, pattern(1, 8))  # chunk 0: blocks 0..7
        await vol.flush()
        fresh = make_volume(store)
        got = store.bytes_got
        assert await fresh.read(3, 1) == pattern(1, 8)[3 * BS : 4 * BS]
        assert store.bytes_got == got + BS  # one block, not the 8-block chunk
        gets = store.gets
        assert await fresh.read(3, 1) == pattern(1, 8)[3 * BS : 4 * BS]
        assert store.gets == gets  # held now
        await fresh.write(5, pattern(2, 1))  # newer than the store's block 5
        expect = bytearray(pattern(1, 8))
        expect[5 * BS : 6 * BS] = pattern(2, 1)
        assert await fresh.read(2, 5) == bytes(expect[2 * BS : 7 * BS])  # merged, newest wins
        await fresh.flush()  # the whole chunk is merged and written
        assert await make_volume(store).read(0, 8) == bytes(expect)

    asyncio.run(run())


def test_a_chunk_the_allocation_map_lacks_is_never_fetched():
    async def run():
        store = MemoryObjectStore()
        chunks_container = chunk_container(VOLUME_ID)
        amap = AllocMap(store, RESERVED_ACCOUNT, chunks_container, 40)
        await amap.start_empty()
        vol = make_volume(store, alloc=amap)
        gets = store.gets
        assert await vol.read(9, 2) == bytes(2 * BS)  # partial read of a new chunk
        await vol.write(17, pattern(1, 1))  # partial write, merged at flush without a read
        await vol.flush()
        assert store.gets == gets
        assert await make_volume(store, alloc=amap).read(16, 2) == bytes(BS) + pattern(1, 1)

    asyncio.run(run())


def test_small_random_writes_take_pages_not_chunks_of_cache_memory():
    """4 KiB writes to 64 KiB chunks: 40 of them fit a cache of 16 whole chunks, with no store
    traffic (each holds a page); a flush merges each with the store's copy."""

    async def run():
        store = MemoryObjectStore()
        chunk = 128 * BS
        old = pattern(9, 40 * 128)
        base = make_volume(store, size_bytes=len(old), chunk_bytes=chunk, cache_bytes_max=8 << 20)
        await base.write(0, old)
        await base.flush()
        cache = ChunkCache(16 * (chunk + ENTRY_BYTES), backpressure_timeout_s=5.0)
        vol = make_volume(store, size_bytes=len(old), chunk_bytes=chunk, cache=cache)
        puts, gets = store.puts, store.gets
        new = pattern(5, 8)
        for i in range(40):
            await vol.write(i * 128 + 16, new)  # a 4 KiB write into each of 40 chunks
        assert store.puts == puts and store.gets == gets  # acknowledged from the cache
        assert cache.used_bytes == cache.held_bytes() <= 40 * (4096 + ENTRY_BYTES)
        await vol.flush()
        assert cache.stats.merge_reads == 40
        want = bytearray(old)
        for i in range(40):
            want[(i * 128 + 16) * BS : (i * 128 + 24) * BS] = new
        fresh = make_volume(store, size_bytes=len(old), chunk_bytes=chunk)
        assert await fresh.read(0, 40 * 128) == bytes(want)
        assert await vol.read(0, 40 * 128) == bytes(want)
        assert cache.used_bytes <= cache.bytes_max

    asyncio.run(run())
