"""The store contract against the in-memory twin and the fault twin (with no faults planned)."""

from __future__ import annotations

import asyncio
import random

import pytest

from blockd.store import FaultPlan, FaultyObjectStore, MemoryObjectStore, StoreUnavailable
from tests.unit.blockd.store_contract import check_store_contract


def test_memory_store_keeps_the_contract():
    asyncio.run(check_store_contract(MemoryObjectStore()))


def test_faulty_store_without_faults_keeps_the_contract():
    asyncio.run(check_store_contract(FaultyObjectStore(MemoryObjectStore(), random.Random(1))))


def test_faulty_store_failures_are_seeded_and_reproducible():
    async def failures(seed):
        store = FaultyObjectStore(MemoryObjectStore(), random.Random(seed), FaultPlan(0.5, 0.5))
        out = []
        for i in range(40):
            try:
                await store.put("a", "c", f"o{i}", b"x")
                out.append("ok")
            except StoreUnavailable:
                out.append("fail")
        return out

    first = asyncio.run(failures(9))
    assert first == asyncio.run(failures(9))
    assert "ok" in first
    assert "fail" in first


def test_faulty_store_down_fails_everything():
    async def run():
        store = FaultyObjectStore(MemoryObjectStore(), random.Random(1), FaultPlan(down=True))
        for call in (
            store.put("a", "c", "o", b"x"),
            store.get("a", "c", "o"),
            store.head("a", "c", "o"),
            store.delete("a", "c", "o"),
            store.post("a", "c", "o", {}),
        ):
            with pytest.raises(StoreUnavailable):
                await call

    asyncio.run(run())
