"""fsyncs run by the kernel, driven from an asyncio event loop through io_uring: no Python
thread, so no GIL hand-off per system call (objectd/splitwrite.py, docs/performance.md
"Session 15 run").

`SyncRing.fsync(fds)` queues one fsync per descriptor, linked so that the kernel's io-wq
workers run them in the given order, and returns a future that the loop resolves with every
call's result (0, or minus the errno) once the last one has completed. The ring tells the
loop through an eventfd it watches; all of this runs on the loop's thread.

What shapes it, measured on this project's kernel (Linux 6.18) and kept in the tests
(tests/unit/common/test_syncring.py):

- A failed fsync (or unlink, or renameat) does **not** break its link: the calls linked
  after it still run. And ``IOSQE_CQE_SKIP_SUCCESS`` hides such a failure's completion as
  well. So a chain holds only calls that may all run whatever happens to the others, every
  call posts its completion, and what must not follow a failure (a rename after the
  fsyncs) is left to the caller, after it has checked every result.
- A linked call looks up its descriptor when the kernel issues it, not when it is queued:
  the caller keeps every descriptor open until the future is done (also when it stops
  waiting for it: `Devices.sync_owned` then closes them from a done-callback).

`SyncRing.open` answers None where io_uring cannot be used (no Linux, the kernel's
``io_uring_disabled`` sysctl, a seccomp profile that refuses ``io_uring_setup``, the
``liburing`` package missing): the caller then keeps its thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
from collections.abc import Sequence
from typing import Any

from common.log import get_logger

_lu: Any
try:  # the PyPI package `liburing` (bindings of the C library of the same name)
    import liburing as _lu  # type: ignore[import-untyped,no-redef]
except ImportError:  # pragma: no cover - a platform without wheels
    _lu = None

__all__ = ["RING_ENTRIES", "SyncRing", "raise_first_error"]

log = get_logger("cairn.syncring")

# Submission queue entries; the completion queue gets twice as many. A chain is submitted as
# soon as it is queued, so the submission queue holds one chain at a time; completions are
# reaped whenever the eventfd fires (the kernel keeps any overflow: IORING_FEAT_NODROP).
RING_ENTRIES = 1024
# Calls in one chain, at most (the op index lives in user_data's low byte).
CHAIN_OPS_MAX = 64


class _Chain:
    __slots__ = ("future", "left", "results")

    def __init__(self, future: asyncio.Future[list[int]], n: int) -> None:
        self.future = future
        self.left = n
        self.results = [0] * n


class SyncRing:
    """One io_uring and its eventfd, owned by one event loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ring: Any, efd: int) -> None:
        self._loop = loop
        self._ring = ring
        self._efd = efd
        self._cqe: Any = _lu.Cqe()
        self._ids = itertools.count(1)
        self._chains: dict[int, _Chain] = {}
        self._closed = False
        self.chains_run = 0  # chains completed, for tests and metrics
        loop.add_reader(efd, self._reap)

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop, entries: int = RING_ENTRIES) -> SyncRing | None:
        """A ring for `loop`, or None where io_uring cannot be used here."""
        if _lu is None:
            return None
        ring = _lu.Ring()
        try:
            # SUBMIT_ALL: a call refused at submission does not leave the rest of its chain
            # queued for a later submit (they are consumed and fail with it).
            _lu.io_uring_queue_init(entries, ring, _lu.IORING_SETUP_SUBMIT_ALL)
        except OSError as e:
            log.info("io_uring unavailable", extra={"fields": {"error": str(e)}})
            return None
        efd = -1
        try:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            _lu.io_uring_register_eventfd(ring, efd)
            return cls(loop, ring, efd)
        except BaseException:
            if efd >= 0:
                os.close(efd)
            _lu.io_uring_queue_exit(ring)
            raise

    @property
    def in_flight(self) -> int:
        return len(self._chains)

    def fsync(self, fds: Sequence[int]) -> asyncio.Future[list[int]]:
        """fsync each of `fds`, in this order; the future's result has each call's result
        (0 or -errno), in the same order. The descriptors must stay open until it is done."""
        assert _lu is not None and self._ring is not None
        if self._closed:
            raise RuntimeError("SyncRing is closed")
        n = len(fds)
        if not 1 <= n <= CHAIN_OPS_MAX:
            raise ValueError(f"a chain has 1..{CHAIN_OPS_MAX} calls, not {n}")
        future: asyncio.Future[list[int]] = self._loop.create_future()
        cid = next(self._ids)
        ring = self._ring
        for i, fd in enumerate(fds):
            sqe = _lu.io_uring_get_sqe(ring)
            if sqe is None:  # cannot happen with one chain queued at a time; never half-queue
                raise RuntimeError("io_uring submission queue full")
            _lu.io_uring_prep_fsync(sqe, fd)
            if i < n - 1:
                sqe.flags = _lu.IOSQE_IO_LINK
            sqe.user_data = (cid << 8) | i
        self._chains[cid] = _Chain(future, n)
        _lu.io_uring_submit(ring)
        return future

    def _reap(self) -> None:
        """The eventfd fired: take every completion there is and finish the chains done."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        assert _lu is not None
        ring, cqe = self._ring, self._cqe
        while _lu.io_uring_cq_ready(ring):
            _lu.io_uring_peek_cqe(ring, cqe)
            entry = cqe[0]
            data = entry.user_data
            try:
                res = entry.res
            except OSError as e:  # the bindings raise for a negative result
                res = -(e.errno or errno.EIO)
            _lu.io_uring_cqe_seen(ring, entry)
            chain = self._chains.get(data >> 8)
            if chain is None:
                continue
            chain.results[data & 0xFF] = res
            chain.left -= 1
            if chain.left == 0:
                del self._chains[data >> 8]
                self.chains_run += 1
                if not chain.future.done():
                    chain.future.set_result(chain.results)

    def close(self) -> None:
        """Stop watching the eventfd and tear the ring down (the kernel finishes or cancels
        what is still queued). Waiters still pending get CancelledError."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._efd)
        assert _lu is not None
        _lu.io_uring_queue_exit(self._ring)
        os.close(self._efd)
        for chain in self._chains.values():
            if not chain.future.done():
                chain.future.cancel()
        self._chains.clear()


def raise_first_error(results: Sequence[int], what: Sequence[str]) -> None:
    """OSError for the first failed call of a chain (`what` names each call), else nothing."""
    for res, name in zip(results, what, strict=True):
        if res < 0:
            raise OSError(-res, f"{os.strerror(-res)} ({name})")
