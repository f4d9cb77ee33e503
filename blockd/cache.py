"""The chunk write-back cache: a disk write cache's semantics over chunk objects.

One cache serves every volume of a blockd, bounded by ``bytes_max``. Each cached chunk is an
entry holding the whole chunk (or ``None`` for "all zeros / no object").

- A write is applied to the entry under the entry's lock and acknowledged; the entry is then
  dirty. A partial-chunk write does not read the chunk: the entry records which granules it
  holds (``valid``) and is merged with the store's copy (read-modify-write) at flush, or when a
  read needs the whole chunk. A read of part of a chunk fetches only the granules it lacks
  (a ranged GET), so a 4 KiB read costs 4 KiB from each replica, not the whole chunk.
- Every write bumps the entry's ``dirty_gen``. A flush snapshots the bytes and the generation
  under the lock, writes the snapshot without holding it, and then records ``flushed_gen``.
  Writes landing during the put leave ``dirty_gen > flushed_gen``: the entry stays dirty and the
  next flush writes them. Only one put per chunk is in flight (``flush_lock``), so an older
  snapshot can never land after a newer one.
- A failed put leaves the entry dirty and the flush raises; nothing is dropped.
- Memory: an entry reserves its chunk length when created. When the budget is full, clean
  entries are evicted (least recently used first); if that is not enough the writer starts a
  flush and waits for space (back-pressure) for at most ``backpressure_timeout_s``, then
  :class:`CacheFull` is raised (the SCSI layer turns it into an error, never unbounded growth).
- An all-zero or discarded chunk is flushed as a DELETE of its object (thin again).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from blockd.chunkstore import ChunkStore
from blockd.sparse import PAGE, SparseChunk
from common.clock import Clock, SystemClock
from common.log import get_logger

__all__ = ["CacheFull", "CacheStats", "ChunkCache", "zeros"]

log = get_logger("cairn.blockd.cache")


_KICK_BACKOFF_MIN_S = 0.01
_KICK_BACKOFF_MAX_S = 1.0


class CacheFull(Exception):
    """No cache space was freed within the back-pressure timeout (store too slow or down)."""


def _apply(e: _Entry, offset: int, data: memoryview) -> None:
    """A write into an entry, whole or partial, loaded or not (never a store read)."""
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
            e.set_loaded(e.sparse.merged(None))


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


class _Entry:
    __slots__ = (
        "chunks",
        "data",
        "dirty_gen",
        "flush_lock",
        "flushed_gen",
        "idx",
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
    def evictable(self) -> bool:
        return (
            not self.dirty
            and self.pins == 0
            and not self.lock.locked()
            and not self.flush_lock.locked()
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
        return self.sparse.new_pages(offset, length) * PAGE

    def read_need(self, offset: int, length: int) -> int:
        """Memory a read miss of [offset, offset+length) may add (an upper bound)."""
        if self.loaded or length == self.size:
            return self.whole_need()
        return self.sparse.new_pages(offset, length) * PAGE

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


_Key = tuple[str, int]


class ChunkCache:
    def __init__(
        self,
        bytes_max: int,
        *,
        clock: Clock | None = None,
        flush_concurrency: int = 32,
        backpressure_timeout_s: float = 30.0,
        prefetch_inflight_max: int = 32,
    ) -> None:
        if bytes_max <= 0:
            raise ValueError("cache bytes_max must be positive")
        self.bytes_max = bytes_max
        self.clock = clock or SystemClock()
        self.backpressure_timeout_s = backpressure_timeout_s
        self.prefetch_inflight_max = prefetch_inflight_max
        self.stats = CacheStats()
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        # The entries not dirty, least recently used first: what eviction scans. Without it
        # every writer waiting for space scanned every (dirty) entry on every flush completion.
        # A superset (eviction re-checks each entry), never missing a clean entry.
        self._clean: OrderedDict[_Key, None] = OrderedDict()
        self._dirty: dict[str, set[int]] = {}
        # Sum of the entries' `held` plus the reservations of operations under way.
        self._used_bytes = 0
        self._space_freed = asyncio.Event()
        self._flush_sem = asyncio.Semaphore(flush_concurrency)
        self._kick_task: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._prefetch_tasks: set[asyncio.Task[None]] = set()
        self._kick_backoff_s = _KICK_BACKOFF_MIN_S

    @property
    def used_bytes(self) -> int:
        return self._used_bytes

    def held_bytes(self) -> int:
        """What the entries hold (``used_bytes`` less the reservations of operations under
        way: the two agree whenever nothing is in flight)."""
        return sum(e.held for e in self._entries.values())

    def dirty_count(self, chunks: ChunkStore | None = None) -> int:
        if chunks is None:
            return sum(len(s) for s in self._dirty.values())
        return len(self._dirty.get(chunks.container, ()))

    # ---- the data path -------------------------------------------------------------------

    async def read(self, chunks: ChunkStore, idx: int, offset: int, length: int) -> bytes:
        e = await self._pin(chunks, idx)
        try:
            # No lock for a hit: entries change only in synchronous steps (a load merges what
            # it fetched without awaiting), so what is seen here is consistent.
            found = e.cached_read(offset, length)
            if found is not None:
                self.stats.hits += 1
                return found
            async with self._room(e, lambda: e.read_need(offset, length)):
                found = e.cached_read(offset, length)  # another task may have loaded it
                if found is not None:
                    self.stats.hits += 1
                    return found
                if length < e.size:
                    await self._load_range(e, offset, length)  # not the whole chunk for 4 KiB
                else:
                    await self._load(e)
                found = e.cached_read(offset, length)
                assert found is not None
                return found
        finally:
            self._unpin(e)

    async def write(self, chunks: ChunkStore, idx: int, offset: int, data: memoryview) -> None:
        e = await self._pin(chunks, idx)
        try:
            async with self._room(e, lambda: e.write_need(offset, len(data))):
                _apply(e, offset, data)
                self._mark_dirty(e)
        finally:
            self._unpin(e)

    async def discard(self, chunks: ChunkStore, idx: int, offset: int, length: int) -> None:
        """Zero a range; a whole chunk becomes "no object" and is deleted at flush."""
        e = await self._pin(chunks, idx)
        try:
            if e.loaded and e.data is None:
                return  # already zeros
            async with self._room(e, lambda: e.write_need(offset, length)):
                if offset == 0 and length == e.size:
                    e.set_loaded(None)
                elif e.loaded and e.data is None:
                    return
                else:
                    _apply(e, offset, memoryview(zeros(length)))
                self._mark_dirty(e)
        finally:
            self._unpin(e)

    async def is_mapped(self, chunks: ChunkStore, idx: int) -> bool:
        """Whether the chunk holds data (cached state first, then the store)."""
        e = self._entries.get((chunks.container, idx))
        if e is not None:
            if e.loaded:
                return e.data is not None
            if e.sparse.valid:
                return True  # unmerged writes will create the object at flush
            if e.sparse.base_zero:
                return False
        return await chunks.exists(idx)

    def _mark_dirty(self, e: _Entry) -> None:
        e.dirty_gen += 1
        self._clean.pop((e.chunks.container, e.idx), None)
        if self._entries.get((e.chunks.container, e.idx)) is e:  # not dropped meanwhile
            self._dirty.setdefault(e.chunks.container, set()).add(e.idx)

    async def _load(self, e: _Entry) -> None:
        """Make the entry whole: the store's copy under the granules held here.

        Called with e.lock held, so no write lands between the read and the merge.
        """
        if e.loaded:
            return
        self.stats.misses += 1
        held = e.sparse
        body = None if held.base_zero or held.full else await e.chunks.get(e.idx)
        if held.valid:  # keep what was written here, take the rest from the store
            e.set_loaded(held.merged(body))
        else:
            e.set_loaded(body)

    async def _load_range(self, e: _Entry, offset: int, length: int) -> None:
        """Fetch only the granules of [offset, offset+length) not held here (e.lock held).

        They join the held granules: a copy of the store's bytes is as good as a write of the
        same bytes (this blockd is the volume's only writer), and a flush merges them back
        unchanged. A chunk without an object is all zeros outside what was written here.
        """
        self.stats.misses += 1
        body = await e.chunks.get_range(e.idx, offset, length)
        if body is None:
            e.sparse.base_zero = True
            return
        e.sparse.fill(offset, body)
        if e.sparse.full:
            e.set_loaded(e.sparse.merged(None))

    # ---- memory budget -------------------------------------------------------------------

    async def _pin(self, chunks: ChunkStore, idx: int) -> _Entry:
        key = (chunks.container, idx)
        e = self._entries.get(key)
        if e is None:
            await self._reserve(ENTRY_BYTES)
            e = self._entries.get(key)  # another task may have made it while we waited
            if e is None:
                e = _Entry(chunks, idx)
                self._entries[key] = e
                self._clean[key] = None
            else:
                self._release(ENTRY_BYTES)
        self._entries.move_to_end(key)
        if key in self._clean:
            self._clean.move_to_end(key)
        e.pins += 1
        return e

    @contextlib.asynccontextmanager
    async def _room(self, e: _Entry, need: Callable[[], int]) -> AsyncIterator[None]:
        """Hold e.lock with room reserved for what the body may add to the entry's memory.

        `need` is evaluated under the lock (the entry may have changed while we waited); if
        the room cannot be had without waiting, the lock is let go while waiting for it (a
        writer must not block the flush of its own entry). Unused room is given back.
        """
        reserved = 0
        try:
            while True:
                await e.lock.acquire()
                want = need() - reserved
                if want <= 0:
                    break
                if self._evict_for(want):
                    self._used_bytes += want
                    reserved += want
                    break
                e.lock.release()
                await self._reserve(want)
                reserved += want
            before = e.held
            try:
                yield
            finally:
                e.lock.release()
                reserved -= e.held - before  # the reservation became the entry's memory
        finally:
            if reserved:
                self._release(reserved)

    def _unpin(self, e: _Entry) -> None:
        e.pins -= 1
        assert e.pins >= 0

    def _release(self, size: int) -> None:
        self._used_bytes -= size
        assert self._used_bytes >= 0
        self._space_freed.set()

    def _evict_for(self, size: int) -> bool:
        """Evict clean entries (LRU first) until `size` more bytes fit; True if they do."""
        if self._used_bytes + size <= self.bytes_max:
            return True
        for key in list(self._clean):
            e = self._entries.get(key)
            if e is None or e.dirty:
                del self._clean[key]  # gone or dirty again: not a candidate
                continue
            if e.evictable:
                del self._entries[key]
                del self._clean[key]
                self._release(e.held)
                self.stats.evictions += 1
                if self._used_bytes + size <= self.bytes_max:
                    return True
        return False

    async def _reserve(self, size: int) -> None:
        if size > self.bytes_max:
            raise CacheFull(f"{size} bytes do not fit a {self.bytes_max}-byte cache")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.backpressure_timeout_s
        while not self._evict_for(size):
            self.stats.backpressure_waits += 1
            self._kick_flush()
            self._space_freed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise CacheFull(f"no cache space freed within {self.backpressure_timeout_s} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._space_freed.wait(), remaining)
        self._used_bytes += size

    def _kick_flush(self) -> None:
        if self._kick_task is None or self._kick_task.done():
            self._kick_task = asyncio.create_task(self._kicked_flush())

    async def _kicked_flush(self) -> None:
        try:
            await self.flush()
            self._kick_backoff_s = _KICK_BACKOFF_MIN_S
        except Exception as e:
            log.warning("back-pressure flush failed", extra={"fields": {"error": repr(e)}})
            # do not hammer a store that is down: back off up to a second between attempts
            await asyncio.sleep(self._kick_backoff_s)
            self._kick_backoff_s = min(self._kick_backoff_s * 2, _KICK_BACKOFF_MAX_S)
        finally:
            self._space_freed.set()  # let waiters re-check (and re-kick)

    # ---- flushing ------------------------------------------------------------------------

    async def flush(
        self, chunks: ChunkStore | None = None, idxs: Iterable[int] | None = None
    ) -> None:
        """Write dirty chunks (of one volume, optionally only `idxs`; or of all volumes).

        Returns once every write acknowledged before the call is in the store; raises the first
        store error after trying every chunk (the failed ones stay dirty).
        """
        targets = self._flush_targets(chunks, idxs)
        if not targets:
            return
        results = await asyncio.gather(
            *(self._flush_entry(e) for e in targets), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self.stats.flush_errors += len(errors)
            raise errors[0]

    def _flush_targets(self, chunks: ChunkStore | None, idxs: Iterable[int] | None) -> list[_Entry]:
        containers = list(self._dirty) if chunks is None else [chunks.container]
        wanted = None if idxs is None else set(idxs)
        out = []
        for c in containers:
            for idx in sorted(self._dirty.get(c, ())):
                if wanted is None or idx in wanted:
                    out.append(self._entries[(c, idx)])  # dirty entries are never evicted
        return out

    async def _flush_entry(self, e: _Entry) -> None:
        e.pins += 1
        try:
            async with self._flush_sem, e.flush_lock:
                if not e.dirty:
                    return  # a concurrent flush already wrote everything we were asked for
                base = None
                if not e.loaded and not e.sparse.base_zero and not e.sparse.full:
                    # The read of read-modify-write, without e.lock (writes go on landing): the
                    # store's copy cannot change meanwhile, flush_lock keeps our puts in order
                    # and this blockd is the only writer. An entry only ever learns more, so
                    # what is decided here still holds under the lock.
                    self.stats.merge_reads += 1
                    base = await e.chunks.get(e.idx)
                async with e.lock:
                    gen = e.dirty_gen
                    body = self._flush_body(e, base)
                if body is None:
                    await e.chunks.delete(e.idx)
                    self.stats.deleted_chunks += 1
                else:
                    await e.chunks.put(e.idx, body)
                    self.stats.flushed_chunks += 1
                e.flushed_gen = gen
                if e.dirty_gen == gen:  # no write landed during the put
                    self._dirty.get(e.chunks.container, set()).discard(e.idx)
                    key = (e.chunks.container, e.idx)
                    if self._entries.get(key) is e:
                        self._clean[key] = None  # the most recently used end: flushed last
                    self._space_freed.set()
        finally:
            self._unpin(e)

    def _flush_body(self, e: _Entry, base: bytes | None) -> bytes | None:
        """What a flush stores (None: delete the object), from under e.lock.

        A partly held entry is merged with the store's copy; the whole chunk then stays in the
        entry if the budget has room for it without evicting (the next flush of the chunk needs
        no read, and reads of it hit), else the entry keeps only its own granules.
        """
        if e.loaded:
            data = e.data
            if data is None or data == zeros(e.size):
                return None
            return data if isinstance(data, bytes) else bytes(data)
        merged = bytes(e.sparse.merged(base))
        body = None if merged == zeros(e.size) else merged
        grow = ENTRY_BYTES + (e.size if body is not None else 0) - e.held
        if grow <= 0 or self._used_bytes + grow <= self.bytes_max:
            e.set_loaded(body)
            self._used_bytes += grow
            if grow < 0:
                self._space_freed.set()
        return body

    def start_timer(self, interval_s: float) -> None:
        """Flush everything every `interval_s` (uses the injected clock's sleep)."""
        if self._timer_task is None:
            self._timer_task = asyncio.create_task(self._timer(interval_s))

    async def _timer(self, interval_s: float) -> None:
        while True:
            await self.clock.sleep(interval_s)
            try:
                await self.flush()
            except Exception as e:
                log.warning("timed flush failed", extra={"fields": {"error": repr(e)}})

    # ---- prefetch and lifetime -----------------------------------------------------------

    def prefetch(self, chunks: ChunkStore, idxs: Iterable[int]) -> None:
        """Load chunks in the background if there is room without waiting; never blocks."""
        for idx in idxs:
            if len(self._prefetch_tasks) >= self.prefetch_inflight_max:
                return
            key = (chunks.container, idx)
            room = ENTRY_BYTES + chunks.chunk_len(idx)
            if key in self._entries or not self._evict_for(room):
                continue
            self._used_bytes += room
            e = _Entry(chunks, idx)
            self._entries[key] = e
            self._clean[key] = None
            e.pins += 1
            task = asyncio.create_task(self._prefetch_one(e, room))
            self._prefetch_tasks.add(task)
            task.add_done_callback(self._prefetch_tasks.discard)

    async def _prefetch_one(self, e: _Entry, room: int) -> None:
        share = ENTRY_BYTES  # of `room`: the entry, and what this load adds to it
        try:
            async with e.lock:
                before = e.held
                try:
                    if not e.loaded:
                        await self._load(e)
                        self.stats.prefetches += 1
                finally:
                    share += e.held - before
        except Exception as err:  # a failed prefetch is only a missed optimisation
            log.debug("prefetch failed", extra={"fields": {"error": repr(err)}})
        finally:
            self._release(room - share)
            self._unpin(e)

    def drop(self, chunks: ChunkStore) -> None:
        """Forget a volume's entries, dirty or not (the volume is being deleted)."""
        for key in [k for k in self._entries if k[0] == chunks.container]:
            e = self._entries.pop(key)
            self._clean.pop(key, None)
            self._release(e.held)
        self._dirty.pop(chunks.container, None)

    async def stop_background(self) -> None:
        """Cancel the timer, back-pressure flushes and prefetches (dirty data stays)."""
        tasks = [t for t in (self._timer_task, self._kick_task) if t is not None]
        tasks += list(self._prefetch_tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._timer_task = None
        self._kick_task = None

    async def close(self) -> None:
        """Stop background work, then flush everything (raises if that fails)."""
        await self.stop_background()
        await self.flush()
