"""Whole-page writes into partly held chunks (the cache's shortest path) against a model.

Random 4 KiB writes reach the cache as one page of immutable bytes each; they take
``cacheentry.write_page`` rather than the general ``apply_write``. Mixed here with writes
of other sizes and buffer types, flushes (journal records and chunk puts), a fill-up of a
whole chunk, and a crash-and-reopen, every read must match a bytearray model and the cache's
accounting must equal what its entries hold.
"""

from __future__ import annotations

import asyncio
import random

from blockd.cacheentry import write_page
from blockd.sparse import PAGE
from blockd.store import MemoryObjectStore
from tests.unit.blockd.helpers import BS, attach_journal, make_volume

CHUNK = 32 * PAGE
NCHUNKS = 6
SIZE = NCHUNKS * CHUNK


async def _volume(store: MemoryObjectStore, cache=None):
    vol = make_volume(
        store, size_bytes=SIZE, chunk_bytes=CHUNK, cache_bytes_max=4 << 20, cache=cache
    )
    await attach_journal(vol)
    return vol


def test_page_writes_match_a_model_through_flushes_and_a_crash():
    async def run():
        rng = random.Random(17)
        store = MemoryObjectStore()
        vol = await _volume(store)
        model = bytearray(SIZE)
        for _ in range(400):
            kind = rng.randrange(10)
            if kind < 6:  # one whole page, as the iSCSI layer hands it over
                page = rng.randrange(SIZE // PAGE)
                data = rng.randbytes(PAGE)
                await vol.write(page * PAGE // BS, data)
                model[page * PAGE : (page + 1) * PAGE] = data
            elif kind < 8:  # blocks anywhere, as bytes or a buffer
                lba = rng.randrange(SIZE // BS)
                n = rng.randint(1, min(12, SIZE // BS - lba))
                data = rng.randbytes(n * BS)
                await vol.write(lba, data if kind == 6 else bytearray(data))
                model[lba * BS : (lba + n) * BS] = data
            elif kind == 8:
                await vol.flush()
            else:
                lba = rng.randrange(SIZE // BS)
                n = rng.randint(1, min(16, SIZE // BS - lba))
                assert await vol.read(lba, n) == model[lba * BS : (lba + n) * BS]
            cache = vol.cache
            assert cache.used_bytes == cache.held_bytes()
        assert await vol.read(0, SIZE // BS) == model
        await vol.flush()
        assert vol.cache.stats.journal_records > 0  # page writes went into records too
        reopened = await _volume(store)  # a fresh cache: what the store holds, journal replayed
        assert await reopened.read(0, SIZE // BS) == model

    asyncio.run(run())


def test_a_page_write_that_would_fill_the_chunk_or_lacks_room_takes_the_general_path():
    async def run():
        store = MemoryObjectStore()
        vol = await _volume(store)
        for p in range(CHUNK // PAGE - 1):
            await vol.write(p * PAGE // BS, bytes([p + 1]) * PAGE)
        e = vol.cache.entry(vol.chunks, 0)
        assert e is not None and not e.loaded
        last = (CHUNK // PAGE - 1) * PAGE
        assert write_page(e, last, b"z" * PAGE, room=1 << 20) is None  # would make it full
        assert write_page(e, CHUNK, b"z" * PAGE, room=1 << 20) is None  # past the chunk
        e1 = vol.cache.entry(vol.chunks, 0)
        assert e1 is e
        assert write_page(e, 0, bytearray(PAGE), room=1 << 20) is None  # mutable: copied
        await vol.write(1, bytes(BS))  # a page now held, so the next write to it adds nothing
        assert write_page(e, 0, b"y" * PAGE, room=0) == 0
        await vol.write(last // BS, b"z" * PAGE)  # full: one buffer
        assert e.loaded and e.data is not None
        assert (
            await vol.read(0, CHUNK // BS)
            == b"y" * PAGE
            + b"".join(bytes([p + 1]) * PAGE for p in range(1, CHUNK // PAGE - 1))
            + b"z" * PAGE
        )
        fresh = vol.cache.entry(vol.chunks, 1)
        assert fresh is None
        await vol.write((CHUNK + PAGE) // BS, bytes(BS))  # makes the entry of chunk 1
        e2 = vol.cache.entry(vol.chunks, 1)
        assert e2 is not None
        assert write_page(e2, 2 * PAGE, b"q" * PAGE, room=PAGE - 1) is None  # no room

    asyncio.run(run())
