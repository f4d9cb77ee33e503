"""The allocation map: format, batching of concurrent marks, failures, and its uses."""

from __future__ import annotations

import asyncio
import random

import pytest

from blockd.allocmap import (
    ALLOC_OBJECT,
    MARK_AHEAD_CHUNKS_MAX,
    AllocCorrupt,
    AllocMap,
    decode,
    encode,
)
from blockd.chunkstore import RESERVED_ACCOUNT, chunk_container
from blockd.manager import VolumeManager
from blockd.store import FaultPlan, FaultyObjectStore, MemoryObjectStore, StoreUnavailable
from common.clock import ManualClock
from common.deploy import BlockConfig
from tests.unit.blockd.helpers import VOLUME_ID

C = chunk_container(VOLUME_ID)


def test_round_trip_and_golden_bytes():
    bitmap = bytearray(2)
    bitmap[0] = 0b0000_0101
    bitmap[1] = 0b0000_0010
    body = encode(10, bitmap)
    assert body[:12] == b"cairn-alloc\x00"
    assert body[12:16] == b"\x00\x00\x00\x01"  # version 1
    assert body[16:24] == (10).to_bytes(8, "big")
    assert body[24:26] == b"\x05\x02"
    assert len(body) == 30
    assert decode(body, 10) == bitmap


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # checksum
        lambda b: b"x" + b[1:],  # magic (checksum also breaks)
        lambda b: b[:10],  # truncated
    ],
)
def test_damaged_maps_are_refused(mangle):
    body = encode(10, bytearray(2))
    with pytest.raises(AllocCorrupt):
        decode(mangle(body), 10)
    with pytest.raises(AllocCorrupt):
        decode(body, 11)  # a map for another geometry


def test_bits_past_the_end_are_refused():
    import struct
    import zlib

    body = b"cairn-alloc\x00" + struct.pack(">IQ", 1, 10) + b"\x00\x04"  # bit 10 of 10 chunks
    with pytest.raises(AllocCorrupt, match="past the last chunk"):
        decode(body + struct.pack(">I", zlib.crc32(body)), 10)


def test_marks_are_durable_batched_and_survive_a_failure():
    async def run():
        inner = MemoryObjectStore()
        store = FaultyObjectStore(inner, random.Random(3), FaultPlan(latency_max_s=0.002))
        amap = AllocMap(store, RESERVED_ACCOUNT, C, 100)
        await amap.start_empty()
        puts = inner.puts
        await asyncio.gather(*(amap.mark(i) for i in range(0, 100, 3)))
        assert inner.puts - puts < 34  # concurrent marks share map writes
        store.plan.down = True
        with pytest.raises(StoreUnavailable):
            await amap.mark(5)
        assert not amap.may_exist(5)
        store.plan.down = False
        await amap.mark(8)  # carries the failed mark of chunk 5 too (neither extends a run)
        fresh = AllocMap(inner, RESERVED_ACCOUNT, C, 100)
        await fresh.load()
        assert fresh.allocated() == sorted({*range(0, 100, 3), 5, 8})

    asyncio.run(run())


def test_a_sequential_run_marks_ahead_and_a_lone_chunk_does_not():
    async def run():
        store = MemoryObjectStore()
        n = 1000
        amap = AllocMap(store, RESERVED_ACCOUNT, C, n)
        await amap.start_empty()
        await amap.mark(500)  # alone: nothing ahead
        assert amap.allocated() == [500]
        puts = store.puts
        for i in range(400):  # chunks written in order, one flush at a time
            await amap.mark(i)
            assert amap.may_exist(i)
        # one write per chunk before; now the run doubles its lead up to the limit
        writes = store.puts - puts
        assert writes <= 8 + 400 // MARK_AHEAD_CHUNKS_MAX
        ahead = [i for i in amap.allocated() if 400 <= i < 500]
        assert ahead == list(range(400, 400 + len(ahead))) and len(ahead) <= MARK_AHEAD_CHUNKS_MAX
        for i in range(n - 3, n):  # a run at the end of the volume stops there
            await amap.mark(i)
        assert amap.allocated()[-1] == n - 1
        fresh = AllocMap(store, RESERVED_ACCOUNT, C, n)
        await fresh.load()
        assert fresh.allocated() == amap.allocated()

    asyncio.run(run())


def test_no_map_means_every_chunk_may_exist():
    async def run():
        amap = AllocMap(MemoryObjectStore(), RESERVED_ACCOUNT, C, 5)
        await amap.load()
        assert not amap.known
        assert amap.may_exist(3)
        assert amap.allocated() == [0, 1, 2, 3, 4]

    asyncio.run(run())


def test_delete_touches_only_allocated_chunks_and_status_skips_heads():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        conf = BlockConfig(lease_settle_s=0.0, default_chunk_bytes=64 << 10)
        m = VolumeManager(store, conf, holder_id="blockd-a", clock=clock)
        await m.start(timers=False)
        rec = await m.create("AUTH_a", "v", 1 << 30)  # 16384 chunks
        vol = m.attached[rec.id].volume
        await vol.write(0, b"\x07" * 512)
        await vol.write((5 << 20) // 512, b"\x08" * 512)
        await vol.flush()
        assert await vol.is_mapped(1 << 12) == (False, 16 * 128 - (1 << 12) % 128)
        deletes = store.deletes
        await m.delete("AUTH_a", rec.id)
        await m.wait_idle()
        # two chunks, the map, the lease and the record, instead of 16384 chunk deletes
        assert store.deletes - deletes == 5
        assert store.object_names(RESERVED_ACCOUNT, chunk_container(rec.id)) == []
        assert await store.get(RESERVED_ACCOUNT, chunk_container(rec.id), ALLOC_OBJECT) is None
        await m.stop()

    asyncio.run(run())
