"""Group commit for small writes: one syncfs(2) makes a whole batch of writes durable.

A small PUT used to make itself durable alone: fsync of its data file, of hashes.invalid, of
each directory it created and of its hash directory (four to six fsyncs per replica, each a
journal commit of its own). With `[[nodes]] group_sync` on, a small PUT writes its temp file
without any fsync and hands a *commit job* (the rename into its hash directory) to the file
system's `GroupSync`. Its thread takes every job queued at that moment as one batch and

1. calls syncfs(2): every temp file of the batch is now on stable storage;
2. runs the jobs one after the other (hashes.invalid appended, directories made, rename);
3. calls syncfs(2) again: the renames, new directories and hashes.invalid entries are now
   on stable storage too; only then does each job release the shared lock it took on its
   partition's hashes.invalid (so the hasher never reads an entry, nor hashes a suffix, whose
   rename a crash could still undo), and each PUT learn its outcome and get acknowledged.

The order of a single write is kept (data durable, then rename, then the rename durable,
then the acknowledgement), so a crash never leaves a renamed file whose data is missing;
only the fsyncs are shared. Jobs that arrive while a batch runs form the next batch, so
under load two calls cover tens of writes, and an idle server pays two calls per write.

syncfs reports a write-back error of the file system only since Linux 5.8 (errseq on the
superblock); on an older kernel, or where syncfs(2) is missing, `syncfs_reports_errors` is
False and the object server keeps the per-file fsyncs. A failed first call aborts every job
of the batch (their temp files are removed, nothing was renamed); a failed second call fails
every job that ran. Either way those PUTs get 503 and are not acknowledged.

`GroupSync` is the per-file-system committer (asyncio side; the batch runs in a thread of its
own, so a busy device pool never delays it); `GroupSyncs` keeps one per file system
(st_dev), so devices sharing a file system share their calls. After a failed sync a
`GroupSync` commits nothing more (every PUT on that file system gets 503 until the server is
restarted): the error may have lost writes that a later syncfs would not report again.
Docs: docs/group-commit.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import platform
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

__all__ = [
    "BATCH_JOBS_MAX",
    "CommitJob",
    "GroupSync",
    "GroupSyncs",
    "syncfs",
    "syncfs_reports_errors",
]

# Jobs in one batch at most: each holds a descriptor (its hashes.invalid lock) until the
# batch's second sync, so an unbounded batch could run the process out of descriptors.
BATCH_JOBS_MAX = 256
# Linux reports write-back errors through syncfs(2) from this release on.
_SYNCFS_ERRORS_SINCE = (5, 8)

_libc: ctypes.CDLL | None = None


def _syncfs_fn() -> Callable[[int], int] | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if name is None:
            return None
        _libc = ctypes.CDLL(name, use_errno=True)  # CDLL calls release the GIL
    fn = getattr(_libc, "syncfs", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def syncfs(fd: int) -> None:
    """syncfs(2) on the file system holding `fd`; OSError on failure (blocking)."""
    fn = _syncfs_fn()
    if fn is None:
        raise OSError(errno.ENOSYS, "syncfs is not available")
    if fn(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


def _kernel_release(text: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string ("5.10.0-26-amd64" -> (5, 10)); (0, 0) if
    it does not start with them."""
    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def syncfs_reports_errors(release: str | None = None) -> bool:
    """True on Linux >= 5.8 with syncfs(2) in the C library: group commit may be used."""
    if platform.system() != "Linux" or _syncfs_fn() is None:
        return False
    return _kernel_release(release if release is not None else platform.release()) >= (
        _SYNCFS_ERRORS_SINCE
    )


class CommitJob(Protocol):
    """What a writer hands to `GroupSync.commit`: `run` after its data is durable (blocking,
    in the sync thread; its result is returned to the writer), `abort` when it will not run
    (the first sync failed, or the writer gave up before it ran), `release` once the second
    sync has been made (or has failed) after a `run` that returned: it drops what `run` had
    to hold until its changes were durable (a small PUT's lock on hashes.invalid)."""

    def run(self) -> object: ...

    def abort(self) -> None: ...

    def release(self) -> None: ...


class GroupSync:
    """The committer of one file system. `await commit(job)` returns `job.run()`'s result
    once the data written before the call and the job's own changes are durable, or raises
    (the sync's OSError, or the job's own exception). `sync` is the blocking call (syncfs
    through one of the file system's roots by default)."""

    def __init__(
        self, sync: Callable[[], None], name: str, on_call: Callable[[], None] | None = None
    ) -> None:
        self._sync = sync
        self._on_call = on_call
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"syncfs-{name}")
        self._running = False
        self._queue: list[tuple[CommitJob, asyncio.Future[object]]] = []
        # The first failed sync, kept: a later syncfs need not report the same lost
        # write-back again (errseq), so nothing is committed here after one.
        self.failed: OSError | None = None
        self.calls = 0  # syncs made
        self.jobs = 0  # jobs committed or failed

    async def commit(self, job: CommitJob) -> object:
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.append((job, fut))
        if not self._running:
            self._start()
        # shield: a writer that gives up (timeout, cancel) must not cancel its batch
        return await asyncio.shield(fut)

    def _start(self) -> None:
        batch, self._queue = self._queue[:BATCH_JOBS_MAX], self._queue[BATCH_JOBS_MAX:]
        self._running = True
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._pool, self._run_batch, [job for job, _ in batch])
        done.add_done_callback(lambda d: self._finished([f for _, f in batch], d))

    def _synced(self) -> None:
        self.calls += 1
        if self._on_call is not None:
            self._on_call()
        self._sync()

    def _run_batch(self, jobs: list[CommitJob]) -> list[tuple[object, BaseException | None]]:
        """sync, run each job, sync again (blocking; the sync thread)."""
        self.jobs += len(jobs)
        try:
            if self.failed is not None:
                raise self.failed
            self._synced()
        except OSError as e:
            self.failed = e
            for job in jobs:
                _abort(job)
            return [(None, e)] * len(jobs)
        out: list[tuple[object, BaseException | None]] = []
        ran: list[CommitJob] = []
        try:
            for job in jobs:
                try:
                    out.append((job.run(), None))
                    ran.append(job)
                except Exception as e:  # the job's own failure is its writer's alone
                    out.append((None, e))
            if ran:
                try:
                    self._synced()
                except OSError as e:
                    self.failed = e
                    out = [(None, e) if err is None else (r, err) for r, err in out]
        finally:
            for job in ran:  # after the second sync: the renames are durable (or failed)
                _release(job)
        return out

    def _finished(
        self,
        futs: list[asyncio.Future[object]],
        done: asyncio.Future[list[tuple[object, BaseException | None]]],
    ) -> None:
        self._running = False
        if done.cancelled() or done.exception() is not None:
            exc: BaseException = (
                OSError("group sync cancelled") if done.cancelled() else done.exception()  # type: ignore[assignment]
            )
            results: list[tuple[object, BaseException | None]] = [(None, exc)] * len(futs)
        else:
            results = done.result()
        for fut, (value, err) in zip(futs, results, strict=True):
            if fut.done():
                continue
            if err is None:
                fut.set_result(value)
            else:
                fut.set_exception(err)
                fut.exception()  # retrieved: its writer may have stopped waiting
        if self._queue:  # jobs that came during the batch: the next one
            self._start()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _abort(job: CommitJob) -> None:
    with contextlib.suppress(OSError):  # a temp file left behind: the replicator's tmp sweep
        job.abort()


def _release(job: CommitJob) -> None:
    with contextlib.suppress(OSError):  # closing a descriptor: nothing left to undo
        job.release()


class GroupSyncs:
    """One `GroupSync` per file system (st_dev), made on first use. `for_path` is blocking
    (a stat, and an open on first sight of a file system) and thread-safe: pool threads call
    it. Each file system's directory descriptor is opened once and kept until `close`:
    syncfs reports a write-back error only to descriptors opened before it happened, so a
    descriptor opened per call could miss one. While it is held the device cannot be
    unmounted (stop the object server first, or leave `group_sync` off)."""

    def __init__(self, on_call: Callable[[], None] | None = None) -> None:
        self._on_call = on_call
        self._lock = threading.Lock()
        self._by_root: dict[str, GroupSync] = {}
        self._by_dev: dict[int, tuple[GroupSync, int]] = {}

    def for_path(self, root: str | os.PathLike[str]) -> GroupSync:
        key = os.fspath(root)
        gs = self._by_root.get(key)
        if gs is not None:
            return gs
        dev = os.stat(key).st_dev
        with self._lock:
            found = self._by_dev.get(dev)
            if found is None:
                fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
                found = (GroupSync(functools.partial(syncfs, fd), f"dev{dev}", self._on_call), fd)
                self._by_dev[dev] = found
            self._by_root[key] = found[0]
        return found[0]

    def stats(self) -> tuple[int, int]:
        """(syncs made, jobs committed) over every file system."""
        with self._lock:
            syncs = [g for g, _ in self._by_dev.values()]
        return sum(g.calls for g in syncs), sum(g.jobs for g in syncs)

    def close(self) -> None:
        with self._lock:
            for gs, fd in self._by_dev.values():
                gs.close()
                os.close(fd)
            self._by_dev.clear()
            self._by_root.clear()
