"""fsyncs run by the kernel through io_uring from the event loop (common/syncring.py), on real
files, with the kernel behaviour the module's design rests on."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import uvloop

import common.syncring
from common.syncring import SyncRing, raise_first_error

T = TypeVar("T")


def _with_ring(fn: Callable[[SyncRing], Awaitable[T]], loop: str = "asyncio") -> T:
    async def go() -> T:
        ring = SyncRing.open(asyncio.get_running_loop())
        if ring is None:
            pytest.skip("io_uring refused here (kernel.io_uring_disabled or a seccomp profile)")
        try:
            return await fn(ring)
        finally:
            ring.close()

    return (uvloop.run if loop == "uvloop" else asyncio.run)(go())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_fsyncs_a_file_and_its_directory(tmp_path: Path, loop: str) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.write(fd, b"data")

    async def go(ring: SyncRing) -> list[int]:
        results = await ring.fsync([fd, dfd])
        assert ring.chains_run == 1 and ring.in_flight == 0
        return results

    try:
        assert _with_ring(go, loop) == [0, 0]
    finally:
        os.close(fd)
        os.close(dfd)


def test_a_failed_fsync_is_reported_and_does_not_stop_the_calls_linked_after_it(
    tmp_path: Path,
) -> None:
    """Why the rename is never in a chain (the module's docstring): fsync of a pipe fails
    with EINVAL, and on the kernels measured the fsync linked after it still runs."""
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    r, w = os.pipe()

    async def go(ring: SyncRing) -> list[int]:
        return await ring.fsync([fd, w, fd])

    try:
        results = _with_ring(go)
    finally:
        for x in (fd, r, w):
            os.close(x)
    assert results[:2] == [0, -errno.EINVAL]
    assert results[2] in (0, -errno.ECANCELED)  # ran (6.18), or cancelled by a kernel that does
    with pytest.raises(OSError) as e:
        raise_first_error(results, ["file", "pipe", "file again"])
    assert e.value.errno == errno.EINVAL and "(pipe)" in str(e.value)


def test_a_closed_descriptor_fails_its_call(tmp_path: Path) -> None:
    async def go(ring: SyncRing) -> list[int]:
        fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)  # after the ring's own descriptors were made: the number is free
        return await ring.fsync([fd])

    assert _with_ring(go) == [-errno.EBADF]


def test_many_chains_at_once_each_get_their_own_results(tmp_path: Path) -> None:
    fds = [os.open(tmp_path / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644) for i in range(50)]
    r, w = os.pipe()

    async def go(ring: SyncRing) -> list[list[int]]:
        chains = [ring.fsync([fd, w] if i % 7 == 3 else [fd]) for i, fd in enumerate(fds)]
        out = await asyncio.gather(*chains)
        assert ring.chains_run == len(fds) and ring.in_flight == 0
        return out

    try:
        out = _with_ring(go)
    finally:
        for x in (*fds, r, w):
            os.close(x)
    assert out == [[0, -errno.EINVAL] if i % 7 == 3 else [0] for i in range(len(fds))]


def test_chain_length_is_bounded_and_a_closed_ring_refuses(tmp_path: Path) -> None:
    async def go(ring: SyncRing) -> None:
        with pytest.raises(ValueError):
            _ = ring.fsync([])
        with pytest.raises(ValueError):
            _ = ring.fsync([0] * (common.syncring.CHAIN_OPS_MAX + 1))
        ring.close()
        ring.close()  # idempotent
        with pytest.raises(RuntimeError):
            _ = ring.fsync([0])

    _with_ring(go)


def test_no_bindings_means_no_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.syncring, "_lu", None)

    async def go() -> SyncRing | None:
        return SyncRing.open(asyncio.get_running_loop())

    assert asyncio.run(go()) is None


def test_raise_first_error_passes_successes() -> None:
    raise_first_error([0, 0], ["a", "b"])
    with pytest.raises(OSError) as e:
        raise_first_error([0, -errno.EIO, -errno.ENOSPC], ["a", "b", "c"])
    assert e.value.errno == errno.EIO
