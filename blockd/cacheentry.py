"""A cache entry: one chunk of one volume, whole or in parts, with its flush state.

The cache (blockd/cache.py) owns the entries, their locks and the memory budget; this module
is what an entry holds and how a write changes it (no I/O).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from blockd.chunkstore import ChunkStore
from blockd.sparse import GRANULE, PAGE, SparseChunk, granule_mask

__all__ = ["ENTRY_BYTES", "CacheStats", "Entry", "apply_write", "write_page", "zeros"]


def apply_write(e: Entry, offset: int, data: bytes | memoryview) -> None:
    """A write into an entry, whole or partial, loaded or not (never a store read). Immutable
    `data` may be held as it is (not copied)."""
    e.jdirty |= granule_mask(offset, len(data))
    if offset == 0 and len(data) == e.size:
        e.set_loaded(bytes(data))  # whole chunk: no read needed
    elif e.loaded:
        if e.data is None:
            e.data = bytearray(e.size)
        elif isinstance(e.data, bytes):
            e.data = bytearray(e.data)  # copy on write: the bytes may be a flush's body
        e.data[offset : offset + len(data)] = data
    else:
        e.sparse.write(offset, data)
        if e.sparse.full:  # written all over: one buffer, nothing left to merge
            e.set_loaded(e.sparse.joined(None))


_PAGE_GRANULES = PAGE // GRANULE
_PAGE_MASK = (1 << _PAGE_GRANULES) - 1


def write_page(e: Entry, offset: int, data: bytes | memoryview, room: int) -> int | None:
    """:func:`apply_write` in the common case of a random 4 KiB write, in fewer steps: a
    whole page of immutable bytes into a partly held chunk (the bytes are held as they are),
    adding at most `room` bytes and leaving the chunk not full. Returns the bytes added to
    the entry; None when the case does not apply (nothing done: use apply_write)."""
    if e.loaded or type(data) is not bytes or len(data) != PAGE:
        return None
    p, off = divmod(offset, PAGE)
    sparse = e.sparse
    if off or (p + 1) * PAGE > e.size:
        return None
    grow = 0 if p in sparse.pages else PAGE
    mask = _PAGE_MASK << (p * _PAGE_GRANULES)
    valid = sparse.valid | mask
    if grow > room or sparse.full_mask(valid):
        return None
    sparse.pages[p] = data
    sparse.held_bytes += grow
    sparse.valid = valid
    e.jdirty |= mask
    return grow


@functools.lru_cache(maxsize=16)
def zeros(n: int) -> bytes:
    return bytes(n)


# What an entry costs besides its data (the object, its locks, its index slots), so that
# entries holding no data (chunks read as zeros) still count against the budget.
ENTRY_BYTES = 512


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    flushed_chunks: int = 0
    deleted_chunks: int = 0
    flush_errors: int = 0
    evictions: int = 0
    prefetches: int = 0
    backpressure_waits: int = 0
    # Flushes of a partly held chunk that read the store's copy first (read-modify-write).
    merge_reads: int = 0
    # Journal records appended, checkpoints done, records applied by replays.
    journal_records: int = 0
    checkpoints: int = 0
    replayed_records: int = 0


class Entry:
    __slots__ = (
        "chunks",
        "data",
        "dirty_gen",
        "flush_lock",
        "flushed_gen",
        "idx",
        "jdirty",
        "loaded",
        "lock",
        "pins",
        "size",
        "sparse",
    )

    def __init__(self, chunks: ChunkStore, idx: int) -> None:
        self.chunks = chunks
        self.idx = idx
        self.size = chunks.chunk_len(idx)
        # loaded: `data` is the whole chunk (None: all zeros, no object); immutable bytes after
        # a whole-chunk write or load (a flush then sends it as is, no copy), made a bytearray
        # by the first partial write. Not loaded: `sparse` holds the granules known here.
        self.data: bytes | bytearray | None = None
        self.loaded = False
        self.sparse = SparseChunk(self.size)
        self.dirty_gen = 0
        self.flushed_gen = 0
        self.lock = asyncio.Lock()
        self.flush_lock = asyncio.Lock()
        self.pins = 0
        # Granules written since they were last cut for a flush (journal record or chunk put):
        # what the next journal record of this chunk must carry.
        self.jdirty = 0

    @property
    def dirty(self) -> bool:
        return self.dirty_gen != self.flushed_gen

    @property
    def held(self) -> int:
        """The bytes this entry counts against the cache budget."""
        if self.loaded:
            return ENTRY_BYTES + (len(self.data) if self.data is not None else 0)
        return ENTRY_BYTES + self.sparse.held_bytes

    @property
    def stale_chunk(self) -> bool:
        """The volume's journal holds newer data for this chunk than its object: the entry is
        the only up-to-date copy outside the journal and must stay until a checkpoint."""
        journal = self.chunks.journal
        return journal is not None and journal.chunk_stale(self.idx)

    @property
    def evictable(self) -> bool:
        return (
            not self.dirty
            and self.pins == 0
            and not self.lock.locked()
            and not self.flush_lock.locked()
            and not self.stale_chunk
        )

    def set_loaded(self, data: bytes | bytearray | None) -> None:
        self.data = data
        self.loaded = True
        if self.sparse.pages or self.sparse.valid:
            self.sparse = SparseChunk(self.size)

    def whole_need(self) -> int:
        """Memory the entry would grow by when it holds the whole chunk."""
        return max(0, ENTRY_BYTES + self.size - self.held)

    def write_need(self, offset: int, length: int) -> int:
        """Memory a write of [offset, offset+length) may add (an upper bound)."""
        if offset == 0 and length == self.size:
            return self.whole_need()
        if self.loaded:
            return self.size if self.data is None else 0
        return self.sparse.new_bytes(offset, length)

    def read_need(self, offset: int, length: int) -> int:
        """Memory a read miss of [offset, offset+length) may add (an upper bound)."""
        if self.loaded or length == self.size:
            return self.whole_need()
        return self.sparse.new_bytes(offset, length)

    def cached_read(self, offset: int, length: int) -> bytes | None:
        """The bytes if this entry knows them without the store, else None."""
        if self.loaded:
            if self.data is None:
                return zeros(length)
            if length == self.size and isinstance(self.data, bytes):
                return self.data
            with memoryview(self.data) as view:
                return bytes(view[offset : offset + length])
        if self.sparse.covers(offset, length):
            return self.sparse.read(offset, length)
        return None
