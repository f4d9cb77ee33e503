"""Background checkpoints yield to the volume's own I/O, but never past their bounds.

The clock here stands still unless the test moves it (`StillClock`): "the volume is busy"
is then a fact the test controls, not a race with the wall clock.
"""

from __future__ import annotations

import asyncio

from blockd.cache import ChunkCache
from blockd.cachejournal import CHECKPOINT_QUIET_S, JOURNAL_HURRY_FACTOR
from blockd.store import MemoryObjectStore
from blockd.volume import Volume
from common.clock import ManualClock
from tests.unit.blockd.helpers import BS, attach_journal, make_volume, pattern

CHUNK = 64 * BS  # 32 KiB
NCHUNKS = 8
SIZE = NCHUNKS * CHUNK
TURNS = 50  # event-loop turns given to a paused checkpoint to show it stays paused


class StillClock(ManualClock):
    """A ManualClock whose sleep lets other tasks run but does not move time."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


async def _journaled(journal_bytes_max: int) -> tuple[Volume, StillClock]:
    """A volume whose journal holds one record for every chunk (their objects are behind)."""
    clock = StillClock()
    cache = ChunkCache(1 << 20, clock=clock, journal_bytes_max=journal_bytes_max)
    vol = make_volume(MemoryObjectStore(), size_bytes=SIZE, chunk_bytes=CHUNK, cache=cache)
    await attach_journal(vol)
    for i in range(NCHUNKS):
        await vol.write(i * 64 + 3, pattern(i, 1))  # the write is also the volume's last I/O
    await vol.flush()
    assert vol.cache.stats.journal_records == 1
    return vol, clock


async def _turns() -> None:
    for _ in range(TURNS):
        await asyncio.sleep(0)


def test_a_background_checkpoint_rewrites_nothing_while_the_volume_is_busy():
    async def run():
        vol, clock = await _journaled(1 << 20)
        cache = vol.cache
        assert cache.stats.flushed_chunks == 0
        cache.start_checkpoint(vol.chunks, reason="size")
        await _turns()
        assert cache.stats.flushed_chunks == 0 and cache.stats.checkpoints == 0
        clock.advance(CHECKPOINT_QUIET_S / 2)
        assert await vol.read(5, 1) == bytes(BS)  # a read keeps the volume busy
        await _turns()
        assert cache.stats.flushed_chunks == 0
        clock.advance(CHECKPOINT_QUIET_S)  # quiet now
        for _ in range(TURNS):
            if cache.stats.checkpoints:
                break
            await asyncio.sleep(0.01)
        assert cache.stats.checkpoints == 1 and cache.stats.flushed_chunks == NCHUNKS
        assert cache.journal_pinned_bytes() == 0

    asyncio.run(run())


def test_a_checkpoint_somebody_waits_for_is_not_held_up_by_a_yielding_one():
    async def run():
        vol, _ = await _journaled(1 << 20)
        cache = vol.cache
        cache.start_checkpoint(vol.chunks, reason="size")
        await _turns()
        assert cache.stats.flushed_chunks == 0
        # as detach or shutdown do, with the volume still busy: the paused one goes on
        await asyncio.wait_for(cache.checkpoint(vol.chunks, reason="detach"), 10)
        assert cache.stats.flushed_chunks == NCHUNKS
        assert cache.journal_pinned_bytes() == 0
        assert vol.chunks.journal is not None and not vol.chunks.journal.live

    asyncio.run(run())


def test_a_journal_past_its_bound_is_checkpointed_even_while_busy():
    async def run():
        # One record is far past the hurry bound: the checkpoint its append starts does not
        # wait, though the volume is busy (the still clock never lets it become quiet).
        vol, _ = await _journaled(64)
        assert 64 * JOURNAL_HURRY_FACTOR < 4 * BS  # the record holds a block per chunk
        for _ in range(TURNS):
            if vol.cache.stats.checkpoints:
                break
            await asyncio.sleep(0.01)
        assert vol.cache.stats.checkpoints == 1
        assert vol.cache.stats.flushed_chunks == NCHUNKS

    asyncio.run(run())


def test_the_flush_timer_is_not_held_up_by_a_paused_idle_checkpoint():
    """The idle checkpoint runs beside the timer (it used to be awaited inline): writes that
    resume pause it, and the timer still flushes them."""

    async def run():
        vol, clock = await _journaled(1 << 20)
        cache = vol.cache
        clock.advance(cache.journal_idle_s + 1)
        cache.start_idle_checkpoints(cache.journal_idle_s)
        await vol.write(2 * 64 + 9, pattern(50, 1))  # busy again before any rewrite
        await _turns()
        assert cache.stats.flushed_chunks == 0 and cache.dirty_count() == 1
        records = cache.stats.journal_records
        cache.start_timer(1.0)  # the still clock's sleep returns at once: it keeps flushing
        for _ in range(TURNS):
            if cache.stats.journal_records > records:
                break
            await asyncio.sleep(0.01)
        assert cache.stats.journal_records > records and cache.dirty_count() == 0
        assert cache.stats.checkpoints == 0  # still paused: the volume stays busy
        await cache.stop_background()

    asyncio.run(run())
