"""The cache's background work: the flush timer, prefetches, and stopping them.

A base class of ChunkCache (blockd/cache.py), as JournalCheckpoints is, to keep that module
to the data path, room and flushing. Nothing here changes what a flush or a load does: the
timer calls the cache's flush and starts idle checkpoints; a prefetch loads a chunk with room
taken only if it is free without waiting (never evicting for it beyond clean entries, never
back-pressure); stop_background cancels all of it, leaving dirty data in the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from blockd.cacheentry import ENTRY_BYTES, Entry
from blockd.chunkstore import ChunkStore
from common.log import get_logger

if TYPE_CHECKING:
    from blockd.cache import ChunkCache

log = get_logger("cairn.blockd.cache")


class CacheBackground:
    """The timer and prefetch part of ChunkCache (a base class, to keep cache.py small)."""

    prefetch_inflight_max: int
    _timer_task: asyncio.Task[None] | None
    _kick_task: asyncio.Task[None] | None
    _prefetch_tasks: set[asyncio.Task[None]]
    _checkpoints: dict[str, asyncio.Task[None]]

    def start_timer(self, interval_s: float) -> None:
        """Flush everything every `interval_s` (uses the injected clock's sleep), and
        checkpoint journals idle for `journal_idle_s`."""
        if self._timer_task is None:
            self._timer_task = asyncio.create_task(self._timer(interval_s))

    async def _timer(self, interval_s: float) -> None:
        cache = cast("ChunkCache", self)
        while True:
            await cache.clock.sleep(interval_s)
            try:
                await cache.flush()
                cache.start_idle_checkpoints(cache.journal_idle_s)
            except Exception as e:
                log.warning("timed flush failed", extra={"fields": {"error": repr(e)}})

    def prefetch(self, chunks: ChunkStore, idxs: Iterable[int]) -> None:
        """Load chunks in the background if there is room without waiting; never blocks."""
        cache = cast("ChunkCache", self)
        for idx in idxs:
            if len(self._prefetch_tasks) >= self.prefetch_inflight_max:
                return
            key = (chunks.container, idx)
            room = ENTRY_BYTES + chunks.chunk_len(idx)
            if key in cache._entries or not cache._evict_for(room):
                continue
            cache._used_bytes += room
            e = Entry(chunks, idx)
            cache._entries[key] = e
            cache._clean[key] = None
            e.pins += 1
            task = asyncio.create_task(self._prefetch_one(e, room))
            self._prefetch_tasks.add(task)
            task.add_done_callback(self._prefetch_tasks.discard)

    async def _prefetch_one(self, e: Entry, room: int) -> None:
        cache = cast("ChunkCache", self)
        share = ENTRY_BYTES  # of `room`: the entry, and what this load adds to it
        try:
            async with e.lock:
                before = e.held
                try:
                    if not e.loaded:
                        await cache._load(e)
                        cache.stats.prefetches += 1
                finally:
                    share += e.held - before
        except Exception as err:  # a failed prefetch is only a missed optimisation
            log.debug("prefetch failed", extra={"fields": {"error": repr(err)}})
        finally:
            cache._release(room - share)
            cache._unpin(e)

    async def stop_background(self) -> None:
        """Cancel the timer, back-pressure flushes and prefetches (dirty data stays)."""
        tasks = [t for t in (self._timer_task, self._kick_task) if t is not None]
        tasks += list(self._prefetch_tasks) + list(self._checkpoints.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._timer_task = None
        self._kick_task = None
        self._checkpoints.clear()
