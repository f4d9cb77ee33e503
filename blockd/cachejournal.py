"""The cache's side of a volume journal: appending records, checkpoints and replay.

The rules (docs/block.md, "Journal"), and why each keeps data safe:

- A flush cuts, for every dirty chunk of the volume with few granules changed, the granules
  written since the last cut (``Entry.jdirty``) and appends them as one record, with one
  capture id taken in the same synchronous step. The record is the durability point: the
  entries are then clean, but their chunk objects are behind the journal (``stale_chunk``), so
  they stay in the cache until a checkpoint: a read must never go to the stale object.
- Every chunk put carries the capture id of its contents. Replay applies a record's granules
  to a chunk only if the record's capture id is newer than the chunk object's: a chunk put
  after the record already holds them, and an older record never overwrites newer data.
- A checkpoint puts every stale chunk whole (read-modify-write) and then retires the records
  appended before it started. A chunk with records in the live journal is never deleted (a
  missing object has no capture id): it is stored as zeros instead.
- One record in flight per volume (``Journal.append_lock``), and each entry's ``flush_lock``
  is held from the cut to the record's commit, so a flush of the same chunk (journal or
  chunk put) waits for it, as flushes of one chunk always have.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from blockd.cacheentry import Entry, zeros
from blockd.chunkstore import ChunkStore
from blockd.journal import Journal, RecordEntry, Run
from blockd.sparse import GRANULE, granule_runs
from common.clock import Clock
from common.log import get_logger

if TYPE_CHECKING:
    from blockd.cache import ChunkCache

__all__ = [
    "JournalCheckpoints",
    "checkpoint",
    "journal_flush",
    "open_journal",
    "wants_journal",
]

log = get_logger("cairn.blockd.journal")

Gate = Callable[[], Awaitable[None]]  # awaited before each chunk rewrite of a checkpoint

# A chunk goes to the journal when at most this share of it changed since its last cut; more,
# and rewriting the chunk costs about as much as journaling it (and needs no checkpoint).
JOURNAL_SHARE_MAX = 4
# Writers waiting this long for room while journal chunks hold memory force a checkpoint.
CHECKPOINT_WAIT_S = 5.0
# Chunk rewrites in flight for a checkpoint nobody waits for (size or idle triggered).
BACKGROUND_CHECKPOINT_PUTS = 4
# Such a checkpoint yields to the volume's own I/O: it starts no chunk rewrite while the volume
# had reads or writes in the last CHECKPOINT_QUIET_S (looking again every CHECKPOINT_POLL_S),
# unless it is behind: the live journal past JOURNAL_HURRY_FACTOR x journal_bytes_max, writers
# waiting for cache room, or a checkpoint somebody waits for (detach, stop) queued behind it.
CHECKPOINT_QUIET_S = 0.25
CHECKPOINT_POLL_S = 0.05
JOURNAL_HURRY_FACTOR = 2


class JournalCheckpoints:
    """The checkpoint scheduling part of ChunkCache (a base class, to keep cache.py small)."""

    journal_bytes_max: int
    bytes_max: int
    _waiting_since: float | None
    clock: Clock
    _journaled: dict[str, ChunkStore]  # volumes whose journal had records
    # Volumes dropped (deleted, lease lost, attach failed), by their ChunkStore: an append in
    # flight when one went must not register it again (the shutdown's checkpoint would fence
    # on its released lease: LeaseLost). An attach of the volume (open_journal) clears it, so
    # a retried attach, even over the same ChunkStore, journals and checkpoints as usual.
    _dropped: weakref.WeakSet[ChunkStore]
    _checkpoints: dict[str, asyncio.Task[None]]  # their running background checkpoints
    _space_freed: asyncio.Event
    # volume -> checkpoints somebody waits for, queued or running (background ones stop yielding)
    _urgent: dict[str, int]

    def entry(self, chunks: ChunkStore, idx: int) -> Entry | None: ...

    async def _flush_entry(self, e: Entry, *, force: bool = False) -> None: ...

    async def _all_flushed(self, work: list[Coroutine[Any, Any, None]]) -> None: ...

    def journal_attached(self, chunks: ChunkStore) -> None:
        """The volume is being attached (again, perhaps after a drop): its appends count."""
        self._dropped.discard(chunks)

    def journal_appended(self, chunks: ChunkStore) -> None:
        """A record went in: checkpoint once the journal holds more than its budget."""
        if chunks in self._dropped:
            return  # the volume was dropped while the record was in flight
        self._journaled[chunks.container] = chunks
        journal = chunks.journal
        if journal is not None and journal.live_bytes > self.journal_bytes_max:
            self.start_checkpoint(chunks, reason="size")

    def start_checkpoint(self, chunks: ChunkStore, *, reason: str) -> None:
        """A background checkpoint of the volume, unless one is running (nobody waits for it:
        a paused one must not hold up, say, the flush timer)."""
        task = self._checkpoints.get(chunks.container)
        if task is None or task.done():
            task = asyncio.create_task(self._background_checkpoint(chunks, reason))
            self._checkpoints[chunks.container] = task

    async def _background_checkpoint(self, chunks: ChunkStore, reason: str) -> None:
        try:
            await self.checkpoint(chunks, background=True, reason=reason)
        except Exception as e:
            log.warning("journal checkpoint failed", extra={"fields": {"error": repr(e)}})

    async def checkpoint(
        self, chunks: ChunkStore, *, background: bool = False, reason: str = "requested"
    ) -> None:
        """Merge the journal into the chunks and retire its records (`background`: a few
        chunk rewrites at a time, none while the volume is busy unless the checkpoint is
        behind, leaving the store and the CPU to the volume's own I/O)."""
        cache = cast("ChunkCache", self)
        if background:
            gate = functools.partial(self._yield_to_io, chunks)
            await checkpoint(cache, chunks, BACKGROUND_CHECKPOINT_PUTS, gate, reason=reason)
        else:
            key = chunks.container
            self._urgent[key] = self._urgent.get(key, 0) + 1
            try:
                await checkpoint(cache, chunks, None, None, reason=reason)
            finally:
                self._urgent[key] -= 1
                if not self._urgent[key]:
                    del self._urgent[key]
        self._space_freed.set()

    def _checkpoint_behind(self, chunks: ChunkStore) -> bool:
        """Must a background checkpoint of this volume stop yielding to its I/O?"""
        journal = chunks.journal
        return (
            chunks.container in self._urgent
            or self._waiting_since is not None
            or (
                journal is not None
                and journal.live_bytes > JOURNAL_HURRY_FACTOR * self.journal_bytes_max
            )
        )

    async def _yield_to_io(self, chunks: ChunkStore) -> None:
        """Wait until the volume has been quiet for CHECKPOINT_QUIET_S (or the checkpoint is
        behind); called before each chunk rewrite of a background checkpoint."""
        while not self._checkpoint_behind(chunks):
            busy_s = CHECKPOINT_QUIET_S - (self.clock.monotonic() - chunks.last_io_s)
            if busy_s <= 0:
                return
            await self.clock.sleep(min(busy_s, CHECKPOINT_POLL_S))

    async def rewrite_stale(
        self, entries: list[Entry], concurrency: int | None, gate: Gate | None
    ) -> None:
        """Put these chunks whole (also the clean ones the journal is ahead of), at most
        `concurrency` at once (besides the cache-wide flush limit), each after `gate`."""
        limit = asyncio.Semaphore(concurrency) if concurrency else contextlib.nullcontext()

        async def one(e: Entry) -> None:
            async with limit:
                if gate is not None:
                    await gate()
                await self._flush_entry(e, force=True)

        await self._all_flushed([one(e) for e in entries])

    def _journal_in_the_way(self) -> bool:
        """After a flush, eviction still cannot make room: is a checkpoint the way out?

        Yes if the chunks only the journal is ahead of hold more than half the cache (the
        background checkpoints are behind), or if no reservation went through for
        CHECKPOINT_WAIT_S while such chunks hold any memory (the rest is held by operations
        under way, which may be waiting themselves). Otherwise the cache is moving (flushes
        and evictions make room as they finish) and a checkpoint would only compete.
        """
        pinned = self.journal_pinned_bytes()
        if pinned == 0:
            return False
        if pinned > self.bytes_max // 2:
            return True
        since = self._waiting_since
        return since is not None and asyncio.get_running_loop().time() - since > CHECKPOINT_WAIT_S

    def journal_pinned_bytes(self) -> int:
        """Memory held by cached chunks only the journal is ahead of (they cannot be evicted
        before a checkpoint)."""
        return sum(e.held for c in self._journaled.values() for e in self.stale_entries(c))

    def stale_entries(self, chunks: ChunkStore) -> list[Entry]:
        """The volume's cached chunks its journal is ahead of (all of them are cached: such a
        chunk is never evicted)."""
        if chunks.journal is None:
            return []
        found = (self.entry(chunks, idx) for idx in chunks.journal.chunks_live)
        return [e for e in found if e is not None and e.stale_chunk]

    async def checkpoint_all(self, *, reason: str = "requested") -> None:
        """Checkpoint every volume with a live journal, at full speed."""
        for chunks in self._live_journals():
            await self.checkpoint(chunks, reason=reason)

    def start_idle_checkpoints(self, idle_s: float) -> None:
        """Start a background checkpoint of every volume with a live journal and no reads or
        writes for `idle_s` (so that the chunk rewrites do not compete with its I/O)."""
        now = self.clock.monotonic()
        for chunks in self._live_journals():
            journal = chunks.journal
            assert journal is not None
            if now - max(journal.last_append_s, chunks.last_io_s) >= idle_s:
                self.start_checkpoint(chunks, reason="idle")

    def _live_journals(self) -> list[ChunkStore]:
        out = []
        for container, chunks in list(self._journaled.items()):
            journal = chunks.journal
            if journal is None or not journal.live:
                self._journaled.pop(container, None)
            else:
                out.append(chunks)
        return out


def wants_journal(e: Entry) -> bool:
    """Does a flush of this dirty entry go through the journal? Yes for few granules changed,
    and for a dirty entry with none uncut: its writes are in a record (or a chunk put) still
    in flight, and the journal's flush waits for that (append and flush locks) without putting
    the chunk whole again, as a chunk flush would if writes land on it meanwhile."""
    if e.chunks.journal is None:
        return False
    if not e.jdirty:
        return e.dirty
    return e.jdirty.bit_count() * GRANULE * JOURNAL_SHARE_MAX <= e.size


def _runs(e: Entry, mask: int) -> list[Run]:
    """The granules of `mask` as runs of views of the entry's buffers, not copies: they are
    encoded (copied once, into the record) before anything can write to the entry again."""
    if not e.loaded:  # written granules are always held
        return e.sparse.held_runs(mask)
    out: list[Run] = []
    for first, end in granule_runs(mask):
        offset, length = first * GRANULE, min(end * GRANULE, e.size) - first * GRANULE
        if e.data is None:
            out.append((offset, zeros(length)))
        else:
            out.append((offset, memoryview(e.data)[offset : offset + length]))
    return out


async def journal_flush(cache: ChunkCache, chunks: ChunkStore, entries: list[Entry]) -> None:
    """Append what `entries` changed as one record of `chunks`' journal."""
    journal = chunks.journal
    assert journal is not None
    pinned: list[Entry] = []
    held: list[Entry] = []
    async with journal.append_lock:
        try:
            for e in entries:
                e.pins += 1
                pinned.append(e)
                await e.flush_lock.acquire()
                held.append(e)
            # From here to the cut nothing awaits: the record is one consistent moment.
            cuts = [(e, e.dirty_gen, e.jdirty) for e in held if e.dirty and e.jdirty]
            if not cuts:
                return
            capture = chunks.next_capture()
            record: list[RecordEntry] = [(e.idx, _runs(e, mask)) for e, _, mask in cuts]
            for e, _, _ in cuts:
                e.jdirty = 0
            try:
                await journal.append(capture, record)
            except BaseException:
                for e, _, mask in cuts:
                    e.jdirty |= mask  # not durable: the next flush takes them again
                raise
            cache.stats.journal_records += 1
            for e, gen, _ in cuts:
                cache.settle(e, gen)
        finally:
            for e in held:
                e.flush_lock.release()
            for e in pinned:
                e.pins -= 1
    cache.journal_appended(chunks)


async def checkpoint(
    cache: ChunkCache,
    chunks: ChunkStore,
    concurrency: int | None,
    gate: Gate | None,
    *,
    reason: str,
) -> None:
    """Put every chunk the journal is ahead of, then retire the records before that (at most
    `concurrency` rewrites at once, each after `gate`)."""
    journal = chunks.journal
    if journal is None:
        return
    started = cache.clock.monotonic()
    async with journal.checkpoint_lock:
        upto = journal.next_seq  # records below: complete, and cut before what follows
        if upto <= journal.low:
            return
        stale = cache.stale_entries(chunks)
        await cache.rewrite_stale(stale, concurrency, gate)
        await journal.retire(upto)
        cache.stats.checkpoints += 1
        for e in stale:
            cache.settle(e, e.flushed_gen)  # no longer behind the journal: evictable again
    log.info(
        "journal checkpoint",
        extra={
            "fields": {
                "volume": chunks.volume_id,
                "chunks": len(stale),
                "upto": upto,
                "reason": reason,
                "seconds": round(cache.clock.monotonic() - started, 3),
            }
        },
    )


async def open_journal(cache: ChunkCache, chunks: ChunkStore) -> Journal:
    """The volume's journal, ready for appends, after applying and retiring what a crash left.

    Run before the volume is exported, with ``chunks.journal`` not yet set (every flush here
    puts whole chunks). Safe to repeat: a replay cut short leaves the records in place.
    """
    assert chunks.journal is None
    cache.journal_attached(chunks)
    journal = Journal(
        chunks.store, chunks.account, chunks.container, fence=chunks.fence, clock=cache.clock
    )
    records = await journal.load()
    if not records:
        return journal
    captures: dict[int, int] = {}
    for rec in records:
        chunks.observe_capture(rec.capture)
        for idx, runs in rec.entries:
            if idx not in captures:
                captures[idx] = await chunks.capture_of(idx)
                chunks.observe_capture(captures[idx])
            if rec.capture <= captures[idx]:
                continue  # the chunk object is newer than this record
            for offset, data in runs:
                await cache.write(chunks, idx, offset, memoryview(data))
    await cache.flush(chunks, sorted(captures), direct=True)
    await journal.retire(journal.next_seq)
    cache.stats.replayed_records += len(records)
    log.info(
        "journal replayed",
        extra={"fields": {"volume": chunks.volume_id, "records": len(records)}},
    )
    return journal
