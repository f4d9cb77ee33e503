"""The chunk write-back cache: a disk write cache's semantics over chunk objects.

One cache serves every volume of a blockd, bounded by ``bytes_max``. Each cached chunk is an
entry holding the whole chunk (or ``None`` for "all zeros / no object").

- A write is applied to the entry and acknowledged; the entry is then dirty. A partial-chunk
  write does not read the chunk: the entry holds the granules written (blockd/sparse.py,
  page by page) and is merged with the store's copy (read-modify-write) at flush, or when a
  read needs the whole chunk. A read of part of a chunk fetches only the granules it lacks
  (a ranged GET), so a 4 KiB read costs 4 KiB from each replica, not the whole chunk.
- Every write bumps the entry's ``dirty_gen``. A flush cuts the bytes and the generation in
  one synchronous step, writes them without holding the entry, and then records
  ``flushed_gen``. Writes landing during the put leave ``dirty_gen > flushed_gen``: the entry
  stays dirty and the next flush writes them. Only one flush per chunk is in flight
  (``flush_lock``), so an older cut can never land after a newer one.
- Of a volume with a journal, chunks with few granules changed are flushed as one journal
  record and merged into their objects later by a checkpoint (blockd/cachejournal.py).
- A failed put leaves the entry dirty and the flush raises; nothing is dropped.
- Memory: an entry counts what it holds (its pages, or the whole chunk) plus ENTRY_BYTES;
  room is reserved before an operation that may add to it. When the budget is full, clean
  entries are evicted (least recently used first); if that is not enough the writer starts a
  flush and waits for space (back-pressure) for at most ``backpressure_timeout_s``, then
  :class:`CacheFull` is raised (the SCSI layer turns it into an error, never unbounded growth).
- An all-zero or discarded chunk is flushed as a DELETE of its object (thin again), unless
  the live journal has records of it (then it is stored as zeros).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

from blockd.cachebackground import CacheBackground
from blockd.cacheentry import ENTRY_BYTES, CacheStats, Entry, apply_write, write_page, zeros
from blockd.cachejournal import JournalCheckpoints, journal_flush, wants_journal
from blockd.chunkstore import ChunkStore
from blockd.sparse import granule_mask
from common.clock import Clock, SystemClock
from common.log import get_logger

__all__ = ["ENTRY_BYTES", "CacheFull", "CacheStats", "ChunkCache", "zeros"]

log = get_logger("cairn.blockd.cache")


_KICK_BACKOFF_MIN_S = 0.01
# An eviction looks at this many least recently used clean entries before all of them.
_EVICT_SCAN = 64
_KICK_BACKOFF_MAX_S = 1.0


class CacheFull(Exception):
    """No cache space was freed within the back-pressure timeout (store too slow or down)."""


_Key = tuple[str, int]


class ChunkCache(JournalCheckpoints, CacheBackground):
    def __init__(
        self,
        bytes_max: int,
        *,
        clock: Clock | None = None,
        flush_concurrency: int = 32,
        backpressure_timeout_s: float = 30.0,
        prefetch_inflight_max: int = 32,
        journal_bytes_max: int = 64 << 20,
        journal_idle_s: float = 30.0,
        kick_backoff_max_s: float = _KICK_BACKOFF_MAX_S,
    ) -> None:
        if bytes_max <= 0:
            raise ValueError("cache bytes_max must be positive")
        if kick_backoff_max_s < _KICK_BACKOFF_MIN_S:
            raise ValueError(f"kick_backoff_max_s must be at least {_KICK_BACKOFF_MIN_S}")
        # The longest pause between back-pressure flushes that keep failing (a store that
        # is down is not hammered); tests over a faulty store shorten it.
        self.kick_backoff_max_s = kick_backoff_max_s
        self.bytes_max = bytes_max
        self.clock = clock or SystemClock()
        self.backpressure_timeout_s = backpressure_timeout_s
        self.prefetch_inflight_max = prefetch_inflight_max
        self.journal_bytes_max = journal_bytes_max
        self.journal_idle_s = journal_idle_s
        # Volumes whose journal had records, and their running checkpoints.
        self._journaled: dict[str, ChunkStore] = {}
        self._dropped: weakref.WeakSet[ChunkStore] = weakref.WeakSet()  # see JournalCheckpoints
        self._checkpoints: dict[str, asyncio.Task[None]] = {}
        self._urgent: dict[str, int] = {}
        self.stats = CacheStats()
        self._entries: OrderedDict[_Key, Entry] = OrderedDict()
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
        self._waiting_for = 0  # the largest room a writer is waiting for (kicked flush)
        # (loop time) since when writers wait for room with no reservation going through
        self._waiting_since: float | None = None

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

    async def write(
        self, chunks: ChunkStore, idx: int, offset: int, data: bytes | memoryview
    ) -> None:
        e = self._entries.get((chunks.container, idx))
        if e is not None and not e.lock.locked():
            # The common case without a suspension point (so nothing can interleave, and the
            # lock need not be taken): a cached chunk, room for what the write adds.
            grow = write_page(e, offset, data, self.bytes_max - self._used_bytes)
            if grow is not None:  # a whole page of a partly held chunk
                self._used_bytes += grow
                self._touch(e)
                self._mark_dirty(e)
                return
            need = e.write_need(offset, len(data))
            if self._used_bytes + need <= self.bytes_max:
                self._touch(e)
                before = e.held
                apply_write(e, offset, data)
                self._used_bytes += e.held - before
                self._mark_dirty(e)
                return
        e = await self._pin(chunks, idx)
        try:
            async with self._room(e, lambda: e.write_need(offset, len(data))):
                apply_write(e, offset, data)
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
                    e.jdirty = granule_mask(0, e.size)
                elif e.loaded and e.data is None:
                    return
                else:
                    apply_write(e, offset, memoryview(zeros(length)))
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

    def _mark_dirty(self, e: Entry) -> None:
        e.dirty_gen += 1
        self._clean.pop((e.chunks.container, e.idx), None)
        if self._entries.get((e.chunks.container, e.idx)) is e:  # not dropped meanwhile
            self._dirty.setdefault(e.chunks.container, set()).add(e.idx)

    async def _load(self, e: Entry) -> None:
        """Make the entry whole: the store's copy under the granules held here.

        Called with e.lock held, so no write lands between the read and the merge.
        """
        if e.loaded:
            return
        self.stats.misses += 1
        held = e.sparse
        body = None if held.base_zero or held.full else await e.chunks.get(e.idx)
        if held.valid:  # keep what was written here, take the rest from the store
            e.set_loaded(held.joined(body))
        else:
            e.set_loaded(body)

    async def _load_range(self, e: Entry, offset: int, length: int) -> None:
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
            e.set_loaded(e.sparse.joined(None))

    # ---- memory budget -------------------------------------------------------------------

    async def _pin(self, chunks: ChunkStore, idx: int) -> Entry:
        key = (chunks.container, idx)
        e = self._entries.get(key)
        if e is None:
            await self._reserve(ENTRY_BYTES)
            e = self._entries.get(key)  # another task may have made it while we waited
            if e is None:
                e = Entry(chunks, idx)
                self._entries[key] = e
                self._clean[key] = None
            else:
                self._release(ENTRY_BYTES)
        self._touch(e)
        e.pins += 1
        return e

    def _touch(self, e: Entry) -> None:
        """The entry was used (a read or write of its volume): the most recently used end of
        the LRU orders, and the volume's last I/O time (idle checkpoints go by it)."""
        e.chunks.last_io_s = self.clock.monotonic()
        key = (e.chunks.container, e.idx)
        self._entries.move_to_end(key)
        if key in self._clean:
            self._clean.move_to_end(key)

    @contextlib.asynccontextmanager
    async def _room(self, e: Entry, need: Callable[[], int]) -> AsyncIterator[None]:
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

    def _unpin(self, e: Entry) -> None:
        e.pins -= 1
        assert e.pins >= 0

    def _release(self, size: int) -> None:
        self._used_bytes -= size
        assert self._used_bytes >= 0
        self._space_freed.set()

    def _evict_for(self, size: int) -> bool:
        """Evict clean entries (LRU first) until `size` more bytes fit; True if they do. The
        least recently used few are looked at first, without copying every key for one
        eviction; all of them only if those could not make room (pinned or journal-ahead)."""
        if self._used_bytes + size <= self.bytes_max:
            self._waiting_since = None  # room was found: the cache is moving
            return True
        head = list(itertools.islice(self._clean, _EVICT_SCAN))
        if self._evict_among(head, size):
            return True
        return len(head) == _EVICT_SCAN and self._evict_among(list(self._clean), size)

    def _evict_among(self, keys: list[_Key], size: int) -> bool:
        for key in keys:
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
                    self._waiting_since = None
                    return True
        return False

    async def _reserve(self, size: int) -> None:
        if size > self.bytes_max:
            raise CacheFull(f"{size} bytes do not fit a {self.bytes_max}-byte cache")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.backpressure_timeout_s
        while not self._evict_for(size):
            self.stats.backpressure_waits += 1
            self._waiting_for = max(self._waiting_for, size)
            if self._waiting_since is None:
                self._waiting_since = loop.time()
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
            wanted, self._waiting_for = self._waiting_for, 0
            if not self._evict_for(wanted) and self._journal_in_the_way():
                log.info(
                    "cache full of chunks behind the journal: checkpoint",
                    extra={
                        "fields": {
                            "wanted": wanted,
                            "used": self._used_bytes,
                            "journal_pinned": self.journal_pinned_bytes(),
                        }
                    },
                )
                await self.checkpoint_all(reason="back-pressure")
            if self._evict_for(wanted):
                self._kick_backoff_s = _KICK_BACKOFF_MIN_S
                self._waiting_since = None
            else:  # held by writes under way: let them finish rather than spin
                await asyncio.sleep(_KICK_BACKOFF_MIN_S)
        except Exception as e:
            log.warning("back-pressure flush failed", extra={"fields": {"error": repr(e)}})
            # do not hammer a store that is down: back off up to a second between attempts
            await asyncio.sleep(self._kick_backoff_s)
            self._kick_backoff_s = min(self._kick_backoff_s * 2, self.kick_backoff_max_s)
        finally:
            self._space_freed.set()  # let waiters re-check (and re-kick)

    # ---- flushing ------------------------------------------------------------------------

    async def flush(
        self,
        chunks: ChunkStore | None = None,
        idxs: Iterable[int] | None = None,
        *,
        direct: bool = False,
    ) -> None:
        """Write dirty chunks (of one volume, optionally only `idxs`; or of all volumes).

        Returns once every write acknowledged before the call is in the store; raises the first
        store error after trying every chunk (the failed ones stay dirty). Of a volume with a
        journal, chunks with few granules changed go out as one journal record, the others as
        chunk puts (`direct`: all as chunk puts).
        """
        targets = self._flush_targets(chunks, idxs)
        if not targets:
            return
        by_volume: dict[str, list[Entry]] = {}
        work = []
        for e in targets:
            if not direct and wants_journal(e):
                by_volume.setdefault(e.chunks.container, []).append(e)
            else:
                work.append(self._flush_entry(e))
        for entries in by_volume.values():
            work.append(journal_flush(self, entries[0].chunks, entries))
        await self._all_flushed(work)

    async def _all_flushed(self, work: list[Coroutine[Any, Any, None]]) -> None:
        """Run the flushes together; raise the first error once all are done."""
        results = await asyncio.gather(*work, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self.stats.flush_errors += len(errors)
            raise errors[0]

    def _flush_targets(self, chunks: ChunkStore | None, idxs: Iterable[int] | None) -> list[Entry]:
        containers = list(self._dirty) if chunks is None else [chunks.container]
        wanted = None if idxs is None else set(idxs)
        out = []
        for c in containers:
            for idx in sorted(self._dirty.get(c, ())):
                if wanted is None or idx in wanted:
                    out.append(self._entries[(c, idx)])  # dirty entries are never evicted
        return out

    def entry(self, chunks: ChunkStore, idx: int) -> Entry | None:
        return self._entries.get((chunks.container, idx))

    def settle(self, e: Entry, gen: int) -> None:
        """A flush cut at generation `gen` is in the store (chunk put or journal record)."""
        e.flushed_gen = max(e.flushed_gen, gen)
        if e.dirty:
            return  # writes landed since the cut: the next flush takes them
        key = (e.chunks.container, e.idx)
        self._dirty.get(e.chunks.container, set()).discard(e.idx)
        if self._entries.get(key) is e and not e.stale_chunk:
            self._clean[key] = None  # the most recently used end: flushed last
        self._space_freed.set()

    async def _flush_entry(self, e: Entry, *, force: bool = False) -> None:
        """Put the chunk whole; `force`: also when clean, if the journal is ahead of it."""
        e.pins += 1
        try:
            async with self._flush_sem, e.flush_lock:
                if not e.dirty and not (force and e.stale_chunk):
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
                    cut, e.jdirty = e.jdirty, 0
                    capture = e.chunks.next_capture()
                    body = self._flush_body(e, base)
                try:
                    await self._store_chunk(e, body, capture)
                except BaseException:
                    e.jdirty |= cut  # not in the store: the next flush takes them again
                    raise
                self.settle(e, gen)
        finally:
            self._unpin(e)

    async def _store_chunk(self, e: Entry, body: bytes | None, capture: int) -> None:
        journal = e.chunks.journal
        if body is None and (journal is None or e.idx not in journal.chunks_live):
            await e.chunks.delete(e.idx)
            self.stats.deleted_chunks += 1
        else:
            # A chunk the live journal has records of is never deleted: with no object, replay
            # would take those older records for the newest data. It is stored as zeros.
            await e.chunks.put(e.idx, body if body is not None else zeros(e.size), capture)
            self.stats.flushed_chunks += 1
        if journal is not None:
            journal.note_put(e.idx, capture)

    def _flush_body(self, e: Entry, base: bytes | None) -> bytes | None:
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
        merged = e.sparse.joined(base)
        body = None if merged == zeros(e.size) else merged
        grow = ENTRY_BYTES + (e.size if body is not None else 0) - e.held
        if grow <= 0 or self._used_bytes + grow <= self.bytes_max:
            e.set_loaded(body)
            self._used_bytes += grow
            if grow < 0:
                self._space_freed.set()
        return body

    # ---- lifetime ------------------------------------------------------------------------

    def drop(self, chunks: ChunkStore) -> None:
        """Forget a volume's entries, dirty or not (the volume is being deleted)."""
        for key in [k for k in self._entries if k[0] == chunks.container]:
            e = self._entries.pop(key)
            self._clean.pop(key, None)
            self._release(e.held)
        self._dirty.pop(chunks.container, None)
        self._journaled.pop(chunks.container, None)
        self._dropped.add(chunks)

    async def close(self) -> None:
        """Stop background work, then flush everything and checkpoint the journals (raises if
        that fails)."""
        await self.stop_background()
        await self.flush()
        await self.checkpoint_all(reason="stop")
