"""Hypothesis stateful test: a Volume behaves like a bytearray, across flushes and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from blockd.allocmap import AllocMap
from blockd.cache import ChunkCache
from blockd.chunkstore import RESERVED_ACCOUNT, chunk_container
from blockd.store import (
    FaultPlan,
    FaultyObjectStore,
    MemoryObjectStore,
    ObjectStore,
    StoreUnavailable,
)
from tests.unit.blockd.helpers import BS, VOLUME_ID, attach_journal, make_volume

CHUNK = 4 * BS
SIZE = 9 * CHUNK + 2 * BS  # a short last chunk
NBLOCKS = SIZE // BS
NCHUNKS = -(-SIZE // CHUNK)
# Back-pressure flushes over the faulty store fail a third of the time: retried after at
# most this long (blockd waits up to a second, which made these models mostly sleep).
KICK_BACKOFF_MAX_S = 0.02


class VolumeModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = self._store()
        self.alloc_started = False
        self.model = bytearray(SIZE)
        self.durable = bytearray(SIZE)  # what a restart must show at least for unchanged blocks
        self.changed_since_flush: set[int] = set()
        self.vol = self._open()
        self.fill = 0

    def _store(self) -> ObjectStore:
        self.mem = MemoryObjectStore()
        return self.mem

    def _alloc(self) -> AllocMap:
        """The volume's allocation map, as a (re)starting blockd finds it."""
        amap = AllocMap(self.mem, RESERVED_ACCOUNT, chunk_container(VOLUME_ID), NCHUNKS)
        if not self.alloc_started:
            self.run(amap.start_empty())
            self.alloc_started = True
        self.run(amap.load())
        amap.store = self.store  # later map writes see the same faults as the chunks
        return amap

    def _open(self):
        # a cache of 3 chunks: eviction and back-pressure flushes happen all the time
        cache = ChunkCache(
            3 * CHUNK, backpressure_timeout_s=60.0, kick_backoff_max_s=KICK_BACKOFF_MAX_S
        )
        return make_volume(
            self.store, size_bytes=SIZE, chunk_bytes=CHUNK, cache=cache, alloc=self._alloc()
        )

    def _check_alloc_superset(self) -> None:
        """Every chunk object in the store has its bit in the (stored) allocation map."""
        amap = AllocMap(self.mem, RESERVED_ACCOUNT, chunk_container(VOLUME_ID), NCHUNKS)
        self.run(amap.load())
        for name in self.mem.object_names(RESERVED_ACCOUNT, chunk_container(VOLUME_ID)):
            if not name.startswith("."):  # not the map or the journal
                assert amap.may_exist(int(name)), f"chunk {name} missing from the map"

    def _reopen(self) -> None:
        """A new blockd: a fresh cache over the same store (the old one's tasks end here)."""
        self.run(self.vol.cache.stop_background())
        assert self.vol.cache.used_bytes == self.vol.cache.held_bytes()  # nothing in flight
        self._check_alloc_superset()
        self.vol = self._open()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.vol.cache.stop_background())
        self.loop.close()

    @rule(lba=st.integers(0, NBLOCKS - 1), n=st.integers(1, 12), fua=st.booleans())
    def write(self, lba: int, n: int, fua: bool) -> None:
        n = min(n, NBLOCKS - lba)
        self.fill += 1
        data = bytes([self.fill % 251 + 1]) * (n * BS)
        try:
            self.run(self.vol.write(lba, data, fua=fua))
        except StoreUnavailable:
            assert fua  # only the FUA flush can fail; the data is in the cache regardless
        self.model[lba * BS : (lba + n) * BS] = data
        self.changed_since_flush.update(range(lba, lba + n))

    @rule(lba=st.integers(0, NBLOCKS - 1), n=st.integers(1, 12))
    def read(self, lba: int, n: int) -> None:
        n = min(n, NBLOCKS - lba)
        assert self.run(self.vol.read(lba, n)) == bytes(self.model[lba * BS : (lba + n) * BS])

    @rule(lba=st.integers(0, NBLOCKS - 1), n=st.integers(1, 16))
    def unmap(self, lba: int, n: int) -> None:
        n = min(n, NBLOCKS - lba)
        self.run(self.vol.unmap(lba, n))
        self.model[lba * BS : (lba + n) * BS] = bytes(n * BS)
        self.changed_since_flush.update(range(lba, lba + n))

    @rule()
    def flush(self) -> None:
        self._flush()

    def _flush(self) -> bool:
        try:
            self.run(self.vol.flush())
        except StoreUnavailable:
            return False  # the data stays dirty: reads still see it, a later flush writes it
        self.durable[:] = self.model
        self.changed_since_flush.clear()
        return True

    @rule()
    def restart_after_flush(self) -> None:
        if self._flush():
            self._reopen()
            assert self.run(self.vol.read(0, NBLOCKS)) == bytes(self.model)

    @precondition(lambda self: bool(self.changed_since_flush))
    @rule()
    def crash(self) -> None:
        """Abandon the cache: unchanged blocks keep flushed data, changed ones are whole blocks."""
        self._reopen()
        got = self.run(self.vol.read(0, NBLOCKS))
        for b in range(NBLOCKS):
            block = got[b * BS : (b + 1) * BS]
            if b not in self.changed_since_flush:
                assert block == self.durable[b * BS : (b + 1) * BS]
            else:
                assert len(set(block)) == 1, f"block {b} is torn"
        self.model[:] = got
        self.durable[:] = got
        self.changed_since_flush.clear()

    @invariant()
    def memory_is_bounded(self) -> None:
        assert self.vol.cache.used_bytes <= self.vol.cache.bytes_max


class FaultyStoreVolumeModel(VolumeModel):
    """The same model over a store where a third of the puts and deletes fail.

    Writes that need a chunk load get no faults (a failed read is simply an error to the
    initiator and changes nothing); every failure is in the flush path.
    """

    def _store(self) -> ObjectStore:
        self.mem = MemoryObjectStore()
        plan = FaultPlan(put_fail_rate=0.33, delete_fail_rate=0.33)
        return FaultyObjectStore(self.mem, random.Random(5), plan, partial_write_rate=0.5)


class JournaledVolumeModel(VolumeModel):
    """The same model with the volume journal on (small writes flushed as records, replayed
    after a crash), a journal budget of a few records and explicit checkpoints."""

    def _open(self):
        cache = ChunkCache(
            3 * CHUNK,
            backpressure_timeout_s=60.0,
            journal_bytes_max=3 * BS,
            kick_backoff_max_s=KICK_BACKOFF_MAX_S,
        )
        vol = make_volume(self.store, size_bytes=SIZE, chunk_bytes=CHUNK, cache=cache)
        vol.chunks.alloc = self._alloc()
        for _ in range(100):  # as blockd retries an attach whose replay met store faults
            try:
                self.run(attach_journal(vol))
                return vol
            except StoreUnavailable:
                vol.cache.drop(vol.chunks)
        raise AssertionError("the journal never replayed")

    @rule()
    def checkpoint(self) -> None:
        # A failed one leaves the records live; a later checkpoint or a replay merges them.
        with contextlib.suppress(StoreUnavailable):
            self.run(self.vol.cache.checkpoint(self.vol.chunks))


class FaultyStoreJournaledVolumeModel(JournaledVolumeModel, FaultyStoreVolumeModel):
    """Journal on, over the store where a third of the puts and deletes fail."""


_SETTINGS = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestVolumeModel = VolumeModel.TestCase
TestVolumeModel.settings = _SETTINGS
TestFaultyStoreVolumeModel = FaultyStoreVolumeModel.TestCase
TestFaultyStoreVolumeModel.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
TestJournaledVolumeModel = JournaledVolumeModel.TestCase
TestJournaledVolumeModel.settings = _SETTINGS
TestFaultyStoreJournaledVolumeModel = FaultyStoreJournaledVolumeModel.TestCase
TestFaultyStoreJournaledVolumeModel.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
