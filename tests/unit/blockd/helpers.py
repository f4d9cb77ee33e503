"""Small builders shared by the blockd unit tests."""

from __future__ import annotations

from blockd.allocmap import AllocMap
from blockd.cache import ChunkCache
from blockd.cachejournal import open_journal
from blockd.chunkstore import ChunkStore
from blockd.store import ObjectStore
from blockd.volume import Volume

VOLUME_ID = "0123456789abcdef0123456789abcdef"
BS = 512


def make_volume(
    store: ObjectStore,
    *,
    size_bytes: int = 40 * BS * 8,
    chunk_bytes: int = 8 * BS,
    cache_bytes_max: int = 1 << 20,
    cache: ChunkCache | None = None,
    backpressure_timeout_s: float = 10.0,
    volume_id: str = VOLUME_ID,
    alloc: AllocMap | None = None,
) -> Volume:
    """A small volume; a fresh cache unless one is given (a fresh cache = a restarted blockd)."""
    chunks = ChunkStore(store, volume_id, size_bytes, chunk_bytes, alloc=alloc)
    if cache is None:
        cache = ChunkCache(cache_bytes_max, backpressure_timeout_s=backpressure_timeout_s)
    return Volume(chunks, cache, block_size=BS)


def pattern(tag: int, nblocks: int) -> bytes:
    """Distinct, recognisable block contents: every block starts with its tag and index."""
    out = bytearray()
    for i in range(nblocks):
        head = f"tag{tag:06d}-blk{i:06d}-".encode()
        out += (head * (BS // len(head) + 1))[:BS]
    return bytes(out)


async def attach_journal(vol: Volume) -> int:
    """Give the volume its journal as blockd's attach does: replay what is there, then append
    small writes to it. Returns the records the replay applied."""
    before = vol.cache.stats.replayed_records
    vol.chunks.journal = await open_journal(vol.cache, vol.chunks)
    return vol.cache.stats.replayed_records - before
