"""Export leases: one holder at a time, on a ManualClock."""

from __future__ import annotations

import asyncio
import random

import pytest

from blockd.chunkstore import RESERVED_ACCOUNT, chunk_container
from blockd.lease import LEASES_CONTAINER, Lease, LeaseHeld, LeaseLost, LeaseRecord
from blockd.manager import VolumeManager
from blockd.store import FaultPlan, FaultyObjectStore, MemoryObjectStore, StoreError
from common.clock import ManualClock, SystemClock
from common.deploy import BlockConfig
from tests.unit.blockd.helpers import VOLUME_ID


def lease(store, holder, clock):
    return Lease(store, VOLUME_ID, holder, clock=clock, ttl_s=30, settle_s=2, skew_margin_s=5)


def test_second_holder_is_refused_while_the_lease_is_live():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        a, b = lease(store, "blockd-a", clock), lease(store, "blockd-b", clock)
        await a.acquire()
        assert a.held
        with pytest.raises(LeaseHeld) as info:
            await b.acquire()
        assert info.value.holder == "blockd-a"
        assert not b.held
        clock.advance(20)
        await a.renew()  # renewal pushes the expiry out again
        clock.advance(20)
        with pytest.raises(LeaseHeld):
            await b.acquire()

    asyncio.run(run())


def test_expired_lease_can_be_taken_over_and_the_old_holder_is_fenced():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        a, b = lease(store, "blockd-a", clock), lease(store, "blockd-b", clock)
        await a.acquire()
        a.check()
        clock.advance(26)  # a never renewed: locally invalid after ttl - margin
        with pytest.raises(LeaseLost):
            a.check()
        clock.advance(10)  # and expired for everyone
        await b.acquire()
        b.check()
        with pytest.raises(LeaseLost):
            await a.renew()
        assert not a.held

    asyncio.run(run())


def test_release_lets_another_holder_in_at_once():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        a, b = lease(store, "blockd-a", clock), lease(store, "blockd-b", clock)
        await a.acquire()
        await a.release()
        assert not a.held
        await b.acquire()
        await a.release()  # releasing a lease we no longer hold leaves b's alone
        record = await b.read()
        assert record is not None
        assert record.holder == "blockd-b"

    asyncio.run(run())


def test_racing_acquirers_end_with_exactly_one_holder():
    """Store latency interleaves the read-check-writes; the settle delay covers them."""

    async def run(seed):
        store = FaultyObjectStore(
            MemoryObjectStore(), random.Random(seed), FaultPlan(latency_max_s=0.005)
        )
        clock = SystemClock()
        holders = [
            Lease(store, VOLUME_ID, f"blockd-{i}", clock=clock, settle_s=0.1) for i in range(4)
        ]
        results = await asyncio.gather(*(h.acquire() for h in holders), return_exceptions=True)
        winners = [h for h, r in zip(holders, results, strict=True) if r is None]
        assert len(winners) == 1
        assert all(isinstance(r, LeaseHeld) for r in results if r is not None)
        record = await winners[0].read()
        assert record is not None
        assert record.holder == winners[0].holder

    for seed in range(3):
        asyncio.run(run(seed))


def test_corrupt_lease_record_is_an_error_not_a_free_lease():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        await store.put(RESERVED_ACCOUNT, LEASES_CONTAINER, VOLUME_ID, b"{not json")
        with pytest.raises(StoreError):
            await lease(store, "blockd-a", clock).acquire()

    asyncio.run(run())


def test_lease_record_round_trips_and_rejects_other_versions():
    rec = LeaseRecord(VOLUME_ID, "blockd-a", 123.5, 7)
    assert LeaseRecord.decode(rec.encode()) == rec
    with pytest.raises(StoreError):
        LeaseRecord.decode(rec.encode().replace(b'"format_version": 1', b'"format_version": 2'))


def test_taken_over_lease_fences_the_volume_writes():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        conf = BlockConfig(lease_settle_s=0.0, default_chunk_bytes=64 << 10)
        m = VolumeManager(store, conf, holder_id="blockd-a", clock=clock)
        await m.start(timers=False)
        rec = await m.create("AUTH_a", "v", 1 << 20)
        att = m.attached[rec.id]
        current = await att.lease.read()
        assert current is not None
        thief = LeaseRecord(rec.id, "blockd-b", clock.time() + 30, current.version + 1)
        await store.put(RESERVED_ACCOUNT, LEASES_CONTAINER, rec.id, thief.encode())
        with pytest.raises(LeaseLost):
            await att.lease.renew()
        await att.volume.write(0, b"\x01" * 512)  # the cache still takes it...
        with pytest.raises(LeaseLost):
            await att.volume.flush()  # ...but nothing reaches the store
        assert store.object_names(RESERVED_ACCOUNT, chunk_container(rec.id)) == [".alloc"]

    asyncio.run(run())


def test_renewal_loop_reports_a_takeover():
    async def run():
        store = MemoryObjectStore()
        a = Lease(
            store,
            VOLUME_ID,
            "blockd-a",
            clock=SystemClock(),
            ttl_s=0.3,
            settle_s=0.0,
            skew_margin_s=0.05,
        )
        await a.acquire()
        lost = asyncio.Event()
        a.start_renewal(on_lost=lambda _e: lost.set())
        thief = LeaseRecord(VOLUME_ID, "blockd-b", 2e9, 99)
        await store.put(RESERVED_ACCOUNT, LEASES_CONTAINER, VOLUME_ID, thief.encode())
        await asyncio.wait_for(lost.wait(), 10)
        assert not a.held
        a.stop_renewal()

    asyncio.run(run())
