"""The ObjectStore contract, run against every implementation (memory, faulty, ring)."""

from __future__ import annotations

import uuid

import pytest

from blockd.store import ObjectStore, StoreNotFound

ACCOUNT = ".cairn_block_test"


async def check_store_contract(store: ObjectStore) -> None:
    c = f"contract-{uuid.uuid4().hex[:8]}"
    assert await store.get(ACCOUNT, c, "missing") is None
    assert await store.head(ACCOUNT, c, "missing") is None
    await store.delete(ACCOUNT, c, "missing")  # deleting nothing is not an error

    body = bytes(range(256)) * 64
    buf = bytearray(body)
    await store.put(ACCOUNT, c, "o1", bytes(buf), {"X-Object-Meta-Kind": "chunk"})
    buf[:4] = b"XXXX"  # the caller's buffer is not shared with the store
    assert await store.get(ACCOUNT, c, "o1") == body
    head = await store.head(ACCOUNT, c, "o1")
    assert head is not None
    assert {k.lower(): v for k, v in head.items()}["x-object-meta-kind"] == "chunk"

    n = len(body)
    assert await store.get_range(ACCOUNT, c, "o1", 0, 4) == (body[:4], n)
    assert await store.get_range(ACCOUNT, c, "o1", 4096, 512) == (body[4096:4608], n)
    assert await store.get_range(ACCOUNT, c, "o1", n - 8, 64) == (body[-8:], n)  # ends early
    assert await store.get_range(ACCOUNT, c, "o1", n + 10, 16) == (b"", n)  # past the end
    assert await store.get_range(ACCOUNT, c, "missing", 0, 16) is None

    await store.put(ACCOUNT, c, "o1", b"newer")
    assert await store.get(ACCOUNT, c, "o1") == b"newer"  # the newest write wins
    assert await store.get_range(ACCOUNT, c, "o1", 2, 2) == (b"we", 5)

    await store.post(ACCOUNT, c, "o1", {"X-Object-Meta-Holder": "a"})
    head = await store.head(ACCOUNT, c, "o1")
    assert head is not None
    assert {k.lower(): v for k, v in head.items()}["x-object-meta-holder"] == "a"
    assert await store.get(ACCOUNT, c, "o1") == b"newer"  # post changes metadata only
    with pytest.raises(StoreNotFound):
        await store.post(ACCOUNT, c, "never-written", {"X-Object-Meta-Holder": "a"})

    await store.put(ACCOUNT, c, "empty", b"")
    assert await store.get(ACCOUNT, c, "empty") == b""

    await store.delete(ACCOUNT, c, "o1")
    assert await store.get(ACCOUNT, c, "o1") is None
    assert await store.get_range(ACCOUNT, c, "o1", 0, 2) is None  # a tombstone is newest
    assert await store.head(ACCOUNT, c, "o1") is None
    await store.put(ACCOUNT, c, "o1", b"again")  # a deleted name can be written again
    assert await store.get(ACCOUNT, c, "o1") == b"again"
