"""A PUT's commit with the calls that only touch memory on the event loop and the rest in one
pool step with no other Python between its system calls.

The one-step writers (objectd/smallwrite.py, objectd/wholewrite.py) run a whole PUT in a
pool thread: some twenty system calls (statvfs, listdir, open, write, fsync, close, open of
hashes.invalid, flock, fstat, stat, write, fsync, mkdir, open, fsync, close, rename, ...).
Each one hands the GIL to the event loop and takes it back, and uvloop takes the GIL again
for every I/O callback, so while the loop is busy every call of the step can cost thread
switches, and on this project's VM a switch between threads is dear (a bare pool round trip
costs 45-115 us of CPU; docs/performance.md, "Session 11").

So the loop does what only touches memory (page cache, directory entries): the device check,
the lookup, the free-space check, the temp file's creation (and a small body's write), the
hashes.invalid append (under its shared lock, taken without waiting) and the mkdir of the
hash directory. One pool step then does, in order: a large body's checks and writev; fsync
of the temp file, of hashes.invalid and of every directory the mkdirs changed; the rename;
fsync of the hash directory. The caller acknowledges only after that step, so what becomes
durable, and in which order, is what `RealDiskFile._commit_file` guarantees: data and
invalidation first, then the rename, then the directory.

The fsyncs themselves stay off the loop: on this machine a small PUT's commit took 1.5-56 ms
of waiting for the disk (measured with the step run on the loop), time the loop must spend on
other requests. Left to the pool as before:

- a list the hasher holds locked, or a device without its objects directory: the step
  appends and creates the directories itself (`hold_suffix_invalidated`,
  `makedirs_durable`);
- a device that timed out in the last few minutes (`Devices.healthy` is false): the whole
  one-step writer, so a hung disk stalls its own requests, not the loop.

A new partition is made on the loop too (`create_partition_now`: its directory and
hashes.invalid, no fsync); the step fsyncs the device's objects directory and the partition
directory with the others. Until it has, the file stays linked under its temp name as well,
and every other writer that finds it so fsyncs those two directories itself
(docs/object-format.md, "hashes.invalid").

Where the kernel allows io_uring (`Devices.ring`, common/syncring.py; `[[nodes]] io_uring`)
and what is left to write is short (a small PUT's nothing, a medium PUT's body of at most
1 MiB, hashed and written on the loop: objectd/midput.py), there is no pool step at all:
the kernel's io-wq workers run the fsyncs before the rename as one chain, the loop then
renames, and a second chain fsyncs the hash directory (`_make_durable_on_ring`). The same
calls in the same order, with no GIL hand-off between them.

Obsolete files found by the lookup are unlinked after the step without another fsync (as
Swift does): if a crash undoes the unlink, the older file is still obsolete (the newest file
wins) and the hasher removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from common.fsutil import fsync_dir, makedirs_durable
from objectd.devices import Devices
from objectd.diskfile import RealDiskFile
from objectd.layout import HASHES_INVALID, hold_suffix_invalidated, link_new_invalid
from objectd.pagecache import drop_synced

__all__ = [
    "Commit",
    "commit_split",
    "create_partition_now",
    "hold_invalidated_now",
    "make_hash_dir_now",
]

T = TypeVar("T")


class Commit:
    """What one PUT's commit holds open: the temp file (`fd`), the shared lock on
    hashes.invalid (`held`) and the hash directory (`dir_fd`). `abort` closes them all and
    removes the temp file unless it was renamed (on any failure, or by the pool thread that
    ends a step its request gave up on: `Devices.run_owned`)."""

    __slots__ = ("dir_fd", "fd", "held", "linked_tmp", "renamed", "tmp")

    def __init__(self, tmp: str, fd: int) -> None:
        self.tmp = tmp
        self.fd: int | None = fd
        self.held: int | None = None
        self.dir_fd: int | None = None
        self.renamed = False
        # A new partition's hashes.invalid made on the loop keeps its temp name linked until
        # the step has fsynced the directories (`create_partition_now`); an aborted commit
        # leaves it linked, so later writers keep fsyncing those directories themselves.
        self.linked_tmp: str | None = None

    def close(self) -> None:
        for fd in (self.fd, self.held, self.dir_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self.held = self.dir_fd = None

    def abort(self) -> None:
        self.close()
        if not self.renamed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


def hold_invalidated_now(df: RealDiskFile, young: list[str] | None = None) -> int | None:
    """Append the object's suffix to its partition's hashes.invalid (not fsynced) and return
    the descriptor holding the shared lock; None, with nothing appended, when the file does
    not exist yet or the hasher holds it (the pool then does it: `hold_suffix_invalidated`).
    Never blocks on the lock.

    A file still linked under its creator's temp name too (`create_partition_now`: the
    creator's step has not yet made the partition's directory entries durable) adds the
    device's objects directory and the partition directory to `young`: this writer's step
    fsyncs them as well, so it never acknowledges before the partition is durable."""
    return _hold(df, young)[0]


def _hold(df: RealDiskFile, young: list[str] | None) -> tuple[int | None, bool]:
    """`hold_invalidated_now`, and whether the file was missing."""
    part_dir = os.fspath(df.layout.partition_dir(df.partition))
    path = f"{part_dir}/{HASHES_INVALID}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except FileNotFoundError:
        return None, True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        # The hasher replaces the file under its exclusive lock: a replaced inode is stale.
        st = os.fstat(fd)
        if st.st_ino != os.stat(path).st_ino:
            os.close(fd)
            return None, False
        os.write(fd, df.hash_hex[-3:].encode("ascii") + b"\n")  # one O_APPEND write: atomic
    except (BlockingIOError, FileNotFoundError):  # locked, or replaced and not yet relinked
        os.close(fd)
        return None, False
    except BaseException:
        os.close(fd)
        raise
    if st.st_nlink > 1 and young is not None:
        young.extend((os.path.dirname(part_dir), part_dir))
    return fd, False


def create_partition_now(df: RealDiskFile) -> tuple[int, str, list[str]] | None:
    """A new partition: its directory and its hashes.invalid (the header and this object's
    suffix, shared-locked before it is linked in), made without fsyncs. Returns the locked
    descriptor, the temp name still linked to the file, and the directories the step must
    fsync (the device's objects directory and the partition directory: always both, as the
    partition directory may be another writer's, not yet durable). None when the objects
    directory is missing or another writer linked the file first."""
    part_dir = os.fspath(df.layout.partition_dir(df.partition))
    try:
        os.mkdir(part_dir)
    except FileExistsError:
        pass
    except FileNotFoundError:
        return None
    line = df.hash_hex[-3:].encode("ascii") + b"\n"
    made = link_new_invalid(f"{part_dir}/{HASHES_INVALID}", line, fcntl.LOCK_SH, sync=False)
    if made is None:
        return None
    fd, tmp = made
    return fd, tmp, [os.path.dirname(part_dir), part_dir]


def make_hash_dir_now(hash_dir: str) -> list[str] | None:
    """Create the hash directory (and its suffix directory) without fsyncs: the directories
    whose entries changed, to fsync before the rename; None when the partition directory is
    missing too (the pool's `makedirs_durable` then does it all)."""
    try:
        os.mkdir(hash_dir)
        return [os.path.dirname(hash_dir)]
    except FileExistsError:
        return []
    except FileNotFoundError:
        pass
    suffix_dir = os.path.dirname(hash_dir)
    changed = []
    try:
        os.mkdir(suffix_dir)
        changed.append(os.path.dirname(suffix_dir))
    except FileExistsError:
        pass
    except FileNotFoundError:
        return None
    with contextlib.suppress(FileExistsError):
        os.mkdir(hash_dir)
    changed.append(suffix_dir)
    return changed


def _make_durable(
    c: Commit,
    df: RealDiskFile,
    final_path: str,
    prepare: Callable[[], T | web.Response],
    size: int,
    dirs: list[str] | None,
) -> T | web.Response:
    """The pool's step: `prepare` (a large body's checks and write; its result is returned,
    and a refusal stops the step), the fsyncs that must come before the rename, the rename
    and the fsync of the hash directory. Without `c.held`, the hashes.invalid append and the
    directories too. The only Python between the system calls is this function's."""
    result = prepare()
    if isinstance(result, web.Response):
        return result
    assert c.fd is not None
    os.fsync(c.fd)
    drop_synced(c.fd, size)
    if c.held is None:
        c.held = hold_suffix_invalidated(df.layout, df.partition, df.hash_hex[-3:], sync=True)
    else:
        os.fsync(c.held)
    if dirs is None:
        makedirs_durable(df.hash_dir)
        c.dir_fd = os.open(df.hash_dir, os.O_RDONLY | os.O_DIRECTORY)
    else:
        for d in dirs:
            fsync_dir(d)
    if c.linked_tmp is not None:  # the partition's entries are durable: others may rely on it
        os.unlink(c.linked_tmp)
        c.linked_tmp = None
    os.rename(c.tmp, final_path)
    c.renamed = True
    assert c.dir_fd is not None
    os.fsync(c.dir_fd)
    return result


async def _make_durable_on_ring(
    devices: Devices,
    device: str,
    c: Commit,
    final_path: str,
    prepare: Callable[[], T | web.Response],
    size: int,
    dirs: list[str],
) -> T | web.Response:
    """`_make_durable` with its fsyncs run by the kernel (`Devices.sync_owned`) and the rest on
    the loop, in the same order: `prepare`; fsync of the temp file, of hashes.invalid and of
    every directory the mkdirs changed (one chain); then, only once every one of them has
    succeeded, the temp name of a new partition's hashes.invalid unlinked and the rename (on
    the loop: directory entries in memory); then the fsync of the hash directory. A failed
    fsync in the kernel does not stop the calls linked after it (common/syncring.py), which
    is why the rename is never in a chain with them."""
    result = prepare()
    if isinstance(result, web.Response):
        return result
    assert c.fd is not None and c.held is not None and c.dir_fd is not None
    dir_fds: list[int] = []

    def release() -> None:  # once the chain is over: the kernel may still use them until then
        for fd in dir_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        dir_fds.clear()
        c.abort()

    try:
        for d in dirs:
            dir_fds.append(os.open(d, os.O_RDONLY | os.O_DIRECTORY))
    except BaseException:
        release()
        raise
    what = ["temp file", HASHES_INVALID, *dirs]
    await devices.sync_owned(device, release, [c.fd, c.held, *dir_fds], what)
    for fd in dir_fds:
        os.close(fd)
    dir_fds.clear()
    try:
        drop_synced(c.fd, size)
        if c.linked_tmp is not None:  # the partition's entries are durable now
            os.unlink(c.linked_tmp)
            c.linked_tmp = None
        os.rename(c.tmp, final_path)
        c.renamed = True
    except BaseException:
        c.abort()
        raise
    await devices.sync_owned(device, c.abort, [c.dir_fd], ["hash directory"])
    return result


async def commit_split(
    devices: Devices,
    device: str,
    df: RealDiskFile,
    c: Commit,
    final_name: str,
    size: int,
    prepare: Callable[[], T | web.Response],
    *,
    cleanup: bool,
    prepare_on_loop: bool = False,
) -> T | web.Response:
    """Commit the temp file `c` as `final_name` in `df`'s hash directory (see the module's
    docstring). `prepare` runs first in the pool's step: it writes what is not written yet
    and returns what to go on with, or a refusal to stop at (the temp file removed). Returns
    what `prepare` returned once durable. On any failure the temp file is removed and nothing
    is renamed, unless the failure came after the rename (the fsync of the directory).

    `prepare_on_loop`: `prepare` is short enough for the loop (it touches memory and the
    page cache only: a small PUT's nothing, a medium PUT's hashing and write of at most
    1 MiB). Then, when the devices have a ring (common/syncring.py) and the loop made the
    directories, `prepare` runs on the loop, the fsyncs in the kernel, and no pool step is
    taken (`_make_durable_on_ring`)."""
    hash_dir = os.fspath(df.hash_dir)
    try:
        young: list[str] = []
        c.held, missing = _hold(df, young)
        if missing:
            made = create_partition_now(df)
            if made is None:  # no objects dir (the pool makes it), or another writer won
                c.held = _hold(df, young)[0]
            else:
                c.held, c.linked_tmp, young = made
        dirs = make_hash_dir_now(hash_dir) if c.held is not None else None
        if dirs is not None:
            if young:
                dirs = list(dict.fromkeys(young + dirs))  # a new partition's dir comes twice
            c.dir_fd = os.open(hash_dir, os.O_RDONLY | os.O_DIRECTORY)
    except BaseException:
        c.abort()
        raise
    final_path = f"{hash_dir}/{final_name}"
    if devices.ring is not None and prepare_on_loop and dirs is not None:
        result = await _make_durable_on_ring(devices, device, c, final_path, prepare, size, dirs)
    else:
        step = functools.partial(_make_durable, c, df, final_path, prepare, size, dirs)
        result = await devices.run_owned(device, c.abort, step)
    c.close()  # drops the lock on hashes.invalid: the rename is durable
    if isinstance(result, web.Response):
        c.abort()
    elif cleanup:  # the lookup found files: older ones may be obsolete now
        df.remove_obsolete()
    return result
