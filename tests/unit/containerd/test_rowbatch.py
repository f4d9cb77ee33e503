"""Group commit of object rows (containerd/rowbatch.py, put_rows_batch) on real LMDB
environments: a batch gives exactly what one-by-one put_row gives, and each waiting update
is answered with its own result (or its own error) only after the shared commit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.listingdb import EnvOptions, ListingEnv, ListingParams, acquire_env, release_env
from common.listingdb.broker import put_rows_batch
from common.timestamps import Timestamp
from containerd import client
from containerd.broker import ContainerBroker, ObjectRow, object_count
from containerd.rowbatch import RowBatcher, RowsBusy
from tests.unit.containerd.test_server import make_conf, obj_headers, run, ts


@pytest.fixture
def env(tmp_path: Path) -> Iterator[ListingEnv]:
    e = acquire_env(tmp_path / "containers.lmdb", EnvOptions(1 << 26))
    yield e
    release_env(e)


def broker(env: ListingEnv, hash_hex: str, create: bool = True) -> ContainerBroker:
    b = ContainerBroker(env, 3, hash_hex)
    if create:
        b.create_or_update("a", "c", Timestamp.from_float(100), {})
    return b


def row(name: str, t: float, size: int = 1, etag: str = "e") -> ObjectRow:
    return ObjectRow(name, Timestamp.from_float(t).internal, size, "text/plain", etag)


def state(b: ContainerBroker) -> tuple[Any, ...]:
    got = b.list_rows(ListingParams(limit=1000))
    assert got is not None
    info, rows = got
    return info.stats, info.row_hash, rows


def test_batch_equals_one_by_one(tmp_path: Path) -> None:
    """Same rows, same order: one transaction or one each gives identical results and state,
    including several rows of one database (older after newer, a tombstone) and a row for a
    database that does not exist."""
    plan = [
        ("x", row("o1", 200)),
        ("x", row("o2", 201, size=7)),
        ("y", row("o1", 202)),
        ("x", row("o1", 150)),  # older than the row above in the same batch: ignored
        ("x", ObjectRow.tombstone("o2", Timestamp.from_float(210))),
        ("missing", row("o9", 300)),
        ("x", row("o3", 220, size=5)),
        ("x", row("o3", 220, size=5)),  # the same row again: no change
    ]
    hashes = {"x": "1" * 32, "y": "2" * 32, "missing": "3" * 32}
    results, states = [], []
    for name, batched in (("one", False), ("batch", True)):
        e = acquire_env(tmp_path / name / "containers.lmdb", EnvOptions(1 << 26))
        try:
            brokers = {k: broker(e, h, create=k != "missing") for k, h in hashes.items()}
            items = [(brokers[k], r) for k, r in plan]
            if batched:
                results.append(put_rows_batch(e, items))
            else:
                results.append([b.put_row(r) for b, r in items])
            states.append([state(brokers[k]) for k in ("x", "y")])
        finally:
            release_env(e)
    assert results[0] == results[1] == [True, True, True, False, True, None, True, False]
    assert states[0] == states[1]
    stats_x = states[1][0][0]
    assert stats_x == {"object_count": 2, "bytes_used": 6}


def test_concurrent_updates_share_commits(env: ListingEnv) -> None:
    b = broker(env, "4" * 32)
    batcher = RowBatcher(env, lambda: None)

    async def main() -> list[bool | None]:
        return await asyncio.gather(*(batcher.put_row(b, row(f"o{i}", 200 + i)) for i in range(40)))

    assert asyncio.run(main()) == [True] * 40
    assert batcher.stats.rows == 40
    assert 1 <= batcher.stats.commits < 40
    info = b.get_info()
    assert info is not None and object_count(info) == 40


def test_batch_size_is_capped(env: ListingEnv) -> None:
    b = broker(env, "5" * 32)
    batcher = RowBatcher(env, lambda: None, batch_rows_max=3)

    async def main() -> list[bool | None]:
        return await asyncio.gather(*(batcher.put_row(b, row(f"o{i}", 200 + i)) for i in range(10)))

    assert asyncio.run(main()) == [True] * 10
    assert batcher.stats.commits >= 4  # 10 rows, at most 3 per transaction


def test_a_bad_row_fails_only_its_own_update(env: ListingEnv) -> None:
    b = broker(env, "6" * 32)
    batcher = RowBatcher(env, lambda: None)
    bad = ObjectRow("bad", "not-a-timestamp", 1, "text/plain", "e")

    async def main() -> list[bool | BaseException | None]:
        rows = [row("a", 200), bad, row("b", 201)]
        return await asyncio.gather(*(batcher.put_row(b, r) for r in rows), return_exceptions=True)

    first, second, third = asyncio.run(main())
    assert first is True and third is True
    assert isinstance(second, ValueError)
    assert batcher.stats.split_retries == 1
    assert b.get_row("a") is not None and b.get_row("b") is not None
    assert b.get_row("bad") is None


def test_device_check_failure_fails_the_batch(env: ListingEnv) -> None:
    b = broker(env, "7" * 32)

    def gone() -> None:
        raise OSError("device gone")

    batcher = RowBatcher(env, gone)

    async def main() -> list[bool | BaseException | None]:
        return await asyncio.gather(
            *(batcher.put_row(b, row(f"o{i}", 200 + i)) for i in range(3)), return_exceptions=True
        )

    assert all(isinstance(r, OSError) for r in asyncio.run(main()))
    assert b.get_row("o0") is None


def test_too_many_waiting_updates_are_refused(env: ListingEnv) -> None:
    b = broker(env, "8" * 32)
    batcher = RowBatcher(env, lambda: None, pending_rows_max=2)

    async def main() -> list[bool | BaseException | None]:
        return await asyncio.gather(
            *(batcher.put_row(b, row(f"o{i}", 200 + i)) for i in range(3)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert results[:2] == [True, True]
    assert isinstance(results[2], RowsBusy)


def test_concurrent_object_puts_over_http(tmp_path: Path) -> None:
    """Many object-server updates at once through the container server: every one answered
    201 and listed."""

    async def scenario(s: aiohttp.ClientSession, url: str) -> None:
        st, _ = await client.direct_put_container(s, url, "sda", 1, "a", "c", ts(1))
        assert st == 201

        async def one(i: int) -> int:
            st, _ = await client.direct_put_container_object(
                s, url, "sda", 1, "a", "c", f"obj{i:03d}", obj_headers(10 + i, i)
            )
            return st

        assert await asyncio.gather(*(one(i) for i in range(30))) == [201] * 30
        st, _h, rows = await client.direct_get_container(s, url, "sda", 1, "a", "c")
        assert st == 200 and rows is not None
        assert [o["name"] for o in rows] == [f"obj{i:03d}" for i in range(30)]
        async with s.get(url + "/metrics") as r:
            metrics = await r.text()
        assert "cairn_container_row_batch_rows_sum 30.0" in metrics
        batches = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("cairn_container_row_batch_rows_count")
        )
        assert 1 <= batches <= 30

    run(make_conf(tmp_path), scenario)


def test_window_gathers_updates_from_later_turns(env: ListingEnv) -> None:
    """With a window, an update arriving a few loop turns after the first (not in the same
    turn) still joins its transaction."""
    b = broker(env, "9" * 32)
    batcher = RowBatcher(env, lambda: None, window_s=0.5)

    async def main() -> list[bool | None]:
        first = asyncio.ensure_future(batcher.put_row(b, row("a", 200)))
        for _ in range(3):
            await asyncio.sleep(0)
        second = asyncio.ensure_future(batcher.put_row(b, row("b", 201)))
        return list(await asyncio.gather(first, second))

    assert asyncio.run(main()) == [True, True]
    assert (batcher.stats.commits, batcher.stats.rows) == (1, 2)
