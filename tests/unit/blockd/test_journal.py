"""The volume journal: its format, and the cache appending, checkpointing and replaying it.

A "crash" here is abandoning a cache (dirty data and all) and opening the volume again on a
fresh one over the same store, as a restarted blockd does.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from blockd.cache import ChunkCache
from blockd.chunkstore import CAPTURE_HEADER, RESERVED_ACCOUNT
from blockd.journal import (
    STATE_OBJECT,
    JournalCorrupt,
    decode_record,
    decode_state,
    encode_record,
    encode_state,
    record_name,
)
from blockd.store import FaultPlan, FaultyObjectStore, MemoryObjectStore, StoreUnavailable
from tests.unit.blockd.helpers import BS, attach_journal, make_volume, pattern

CHUNK = 64 * BS  # 32 KiB
NCHUNKS = 16
SIZE = NCHUNKS * CHUNK


def test_record_round_trip_and_damage_is_refused():
    entries = [(3, [(0, b"a" * 512), (4096, b"b" * 1024)]), (7, [(512, b"c" * 512)])]
    data = encode_record(42, 1_700_000_000_000_000, entries)
    rec = decode_record(data)
    assert (rec.seq, rec.capture, rec.entries) == (42, 1_700_000_000_000_000, entries)
    flipped = bytearray(data)
    flipped[60] ^= 1
    with pytest.raises(JournalCorrupt, match="checksum"):
        decode_record(bytes(flipped))
    with pytest.raises(JournalCorrupt):
        decode_record(data[:20])
    future = bytearray(data)
    future[12:16] = (2).to_bytes(4, "big")  # version 2, checksum made to match
    import xxhash

    future[-8:] = xxhash.xxh3_64_intdigest(bytes(future[:-8])).to_bytes(8, "big")
    with pytest.raises(JournalCorrupt, match="version 1"):
        decode_record(bytes(future))


def test_state_round_trip_and_damage_is_refused():
    assert decode_state(encode_state(9)) == 9
    with pytest.raises(JournalCorrupt):
        decode_state(encode_state(9)[:-1] + b"\x00")
    with pytest.raises(JournalCorrupt):
        decode_state(b"short")


def _names(store: MemoryObjectStore, vol) -> list[str]:
    return sorted(store.object_names(RESERVED_ACCOUNT, vol.chunks.container))


def _journal_names(store, vol) -> list[str]:
    return [n for n in _names(store, vol) if n.startswith(STATE_OBJECT + ".")]


async def _journaled_volume(store, **kw):
    vol = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK, cache_bytes_max=4 << 20, **kw)
    await attach_journal(vol)
    return vol


def test_small_writes_flush_as_one_record_and_survive_a_crash():
    async def run():
        store = MemoryObjectStore()
        vol = await _journaled_volume(store)
        for i in range(NCHUNKS):
            await vol.write(i * 64 + 8, pattern(i, 2))
        puts = store.puts
        await vol.flush()  # SYNCHRONIZE CACHE
        assert store.puts == puts + 1  # one record, no chunk rewrite
        assert _journal_names(store, vol) == [record_name(0)]
        assert vol.cache.stats.journal_records == 1 and vol.cache.stats.merge_reads == 0
        assert vol.cache.dirty_count() == 0
        # the chunk objects are behind the journal: those entries stay in the cache
        assert all(vol.cache.entry(vol.chunks, i).stale_chunk for i in range(NCHUNKS))

        fresh = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK)  # the crash
        assert await attach_journal(fresh) == 1
        for i in range(NCHUNKS):
            assert await fresh.read(i * 64 + 8, 2) == pattern(i, 2)
            assert await fresh.read(i * 64, 8) == bytes(8 * BS)
        assert _journal_names(store, fresh) == []  # replayed into the chunks and retired
        again = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK)
        assert await attach_journal(again) == 0

    asyncio.run(run())


def test_a_checkpoint_merges_into_the_chunks_and_retires_the_records():
    async def run():
        store = MemoryObjectStore()
        base = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK)
        old = pattern(1, SIZE // BS)
        await base.write(0, old)
        await base.flush()
        vol = await _journaled_volume(store)
        want = bytearray(old)
        for rnd in range(3):  # three records, some chunks written in several
            for i in range(rnd, NCHUNKS, 2):
                lba = i * 64 + rnd * 4
                data = pattern(10 + rnd, 1)
                await vol.write(lba, data)
                want[lba * BS : (lba + 1) * BS] = data
            await vol.flush()
        assert vol.cache.stats.journal_records == 3
        await vol.cache.checkpoint(vol.chunks)
        assert _journal_names(store, vol) == []
        state = await store.get(RESERVED_ACCOUNT, vol.chunks.container, STATE_OBJECT)
        assert state is not None and decode_state(state) == 3
        assert not any(vol.cache.entry(vol.chunks, i).stale_chunk for i in range(NCHUNKS))
        fresh = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK)  # no replay needed
        assert await fresh.read(0, SIZE // BS) == bytes(want)

    asyncio.run(run())


def test_replay_never_takes_an_older_record_over_a_newer_chunk():
    async def run():
        store = MemoryObjectStore()
        vol = await _journaled_volume(store)
        await vol.write(3, pattern(1, 1))  # small: journaled
        await vol.flush()
        whole = pattern(2, 64)
        await vol.write(0, whole)  # the whole chunk: put directly, newer than the record
        await vol.flush()
        hdrs = await store.head(RESERVED_ACCOUNT, vol.chunks.container, "000000000000")
        assert int(hdrs[CAPTURE_HEADER]) > 0
        assert _journal_names(store, vol) == [record_name(0)]  # still live
        fresh = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK)
        assert await attach_journal(fresh) == 1
        assert await fresh.read(0, 64) == whole

    asyncio.run(run())


def test_a_chunk_with_live_records_is_stored_as_zeros_not_deleted():
    async def run():
        store = MemoryObjectStore()
        vol = await _journaled_volume(store)
        await vol.write(64 + 5, pattern(3, 1))
        await vol.flush()  # record 0 has chunk 1
        await vol.unmap(64, 64)  # the whole chunk
        await vol.flush()
        assert "000000000001" in _names(store, vol)  # zeros, so replay cannot revive record 0
        fresh = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK)
        await attach_journal(fresh)
        assert await fresh.read(64, 64) == bytes(64 * BS)
        await fresh.unmap(64, 64)
        await fresh.flush()
        assert "000000000001" not in _names(store, fresh)  # journal retired: thin again

    asyncio.run(run())


def test_a_failed_append_keeps_the_data_dirty_and_the_numbers_gapless():
    async def run():
        mem = MemoryObjectStore()
        faulty = FaultyObjectStore(mem, random.Random(1), FaultPlan())
        vol = await _journaled_volume(faulty)
        await vol.write(2, pattern(4, 1))
        faulty.plan.down = True
        with pytest.raises(StoreUnavailable):
            await vol.flush()
        assert vol.cache.dirty_count() == 1
        faulty.plan.down = False
        await vol.write(70, pattern(5, 1))
        await vol.flush()
        assert _journal_names(mem, vol) == [record_name(0)]  # the retry took number 0
        fresh = make_volume(mem, size_bytes=SIZE, chunk_bytes=CHUNK)
        await attach_journal(fresh)
        assert await fresh.read(2, 1) == pattern(4, 1)
        assert await fresh.read(70, 1) == pattern(5, 1)

    asyncio.run(run())


def test_writes_during_an_append_stay_dirty_for_the_next_record():
    async def run():
        store = MemoryObjectStore(put_latency_s=0.02)
        vol = await _journaled_volume(store)
        await vol.write(2, pattern(6, 1))
        flushing = asyncio.create_task(vol.flush())
        await asyncio.sleep(0.005)  # the record is cut and on its way
        await vol.write(3, pattern(7, 1))
        await flushing
        assert vol.cache.dirty_count() == 1
        await vol.flush()
        fresh = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK)
        assert await attach_journal(fresh) == 2
        assert await fresh.read(2, 2) == pattern(6, 1) + pattern(7, 1)

    asyncio.run(run())


def test_a_full_journal_is_checkpointed_and_its_memory_freed():
    async def run():
        store = MemoryObjectStore()
        cache = ChunkCache(1 << 20, journal_bytes_max=8 * 1024)
        vol = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK, cache=cache)
        await attach_journal(vol)
        for i in range(NCHUNKS):
            await vol.write(i * 64 + 1, pattern(i, 2))
            await vol.flush()
        for _ in range(100):
            if cache.stats.checkpoints:
                break
            await asyncio.sleep(0.01)
        assert cache.stats.checkpoints >= 1
        await cache.checkpoint(vol.chunks)
        assert not any(cache.entry(vol.chunks, i).stale_chunk for i in range(NCHUNKS))
        assert cache.used_bytes == cache.held_bytes()

    asyncio.run(run())


def test_a_chunk_put_after_its_records_is_not_held_back_once_evicted_and_read_again():
    """Staleness is the chunk's, not the cache entry's: a chunk put whole after its records,
    evicted and read again, is evictable (it used to pin the cache until a checkpoint)."""

    async def run():
        store = MemoryObjectStore()
        cache = ChunkCache(4 * (CHUNK + 512), journal_bytes_max=1 << 20)
        vol = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK, cache=cache)
        await attach_journal(vol)
        await vol.write(1, pattern(1, 1))
        await vol.flush()  # record for chunk 0
        assert cache.entry(vol.chunks, 0).stale_chunk
        await vol.write(0, pattern(2, 64))  # chunk 0 whole: put directly, newer
        await vol.flush()
        assert not cache.entry(vol.chunks, 0).stale_chunk
        for i in range(1, 6):  # read other chunks until chunk 0 is evicted
            await vol.read(i * 64, 64)
        assert cache.entry(vol.chunks, 0) is None
        assert await vol.read(0, 64) == pattern(2, 64)
        assert not cache.entry(vol.chunks, 0).stale_chunk
        assert cache.journal_pinned_bytes() == 0

    asyncio.run(run())


def test_a_record_landing_after_its_volume_was_dropped_is_not_checkpointed():
    """A journal append in flight when the volume is deleted: the cache forgets the volume,
    and the append finishing later must not register it again (the shutdown's checkpoint
    would then write to a volume whose lease is gone)."""

    async def run():
        store = MemoryObjectStore()
        vol = await _journaled_volume(store)
        await vol.write(8, pattern(1, 2))
        await vol.flush()  # one record: the volume's journal is live
        vol.cache.drop(vol.chunks)  # the volume is deleted
        vol.cache.journal_appended(vol.chunks)  # a record that was in flight lands
        puts = store.puts
        await vol.cache.checkpoint_all(reason="stop")
        assert store.puts == puts  # nothing written for the dropped volume

    asyncio.run(run())


def test_a_volume_attached_again_after_a_drop_journals_and_checkpoints_as_usual():
    """blockd drops a volume whose attach failed (or whose lease was lost) and attaches it
    again later, over a new ChunkStore or the same one: its records must count again, or
    they are never checkpointed and pin cache space until writes stall (CacheFull)."""

    async def run():
        store = MemoryObjectStore()
        vol = await _journaled_volume(store)
        vol.cache.drop(vol.chunks)  # as a failed replay's attach does
        vol.chunks.journal = None
        await attach_journal(vol)  # the retried attach, same ChunkStore
        await vol.write(8, pattern(1, 2))
        await vol.flush()  # one record
        assert vol.cache.journal_pinned_bytes() > 0
        puts = store.puts
        await vol.cache.checkpoint_all(reason="stop")
        assert store.puts > puts  # the record was merged into its chunk
        assert vol.cache.journal_pinned_bytes() == 0

        # a new ChunkStore for the same volume (blockd's retried attach) also counts
        again = make_volume(store, size_bytes=SIZE, chunk_bytes=CHUNK, cache=vol.cache)
        vol.cache.drop(vol.chunks)
        await attach_journal(again)
        await again.write(8, pattern(2, 2))
        await again.flush()
        await again.cache.checkpoint_all(reason="stop")
        assert again.cache.journal_pinned_bytes() == 0
        vol.cache.journal_appended(vol.chunks)  # a late record of the dropped one: ignored
        puts = store.puts
        await again.cache.checkpoint_all(reason="stop")
        assert store.puts == puts

    asyncio.run(run())
