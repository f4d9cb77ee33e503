"""A small object's data file written in one go, with as few system calls as it needs.

A PUT whose whole body is already in memory (at most `SMALL_WRITE_BYTES_MAX` bytes, see
objectd/writes.py `_put_small`) needs none of the streaming writer's machinery: its MD5 and
block checksums are computed before any file exists, and body and footer go to disk in one
write. Every system call in a pool step hands the GIL back and forth between the disk thread
and the event loop, so this path also drops the calls a body this small cannot need:

- no ``posix_fallocate`` (and so no ``lseek``/``ftruncate`` to trim it afterwards): the one
  write reports ENOSPC itself, and the free-space reserve is still checked first;
- no ``mkdir`` of the device's tmp directory per PUT: it is created (durably) only when
  opening the temp file finds it missing;
- no ``getrandom`` per temp name: a per-process random prefix and a counter, with
  ``O_EXCL`` refusing any clash;
- no listing of the hash directory after the rename when the lookup before it found no
  file there: nothing of ours can be obsolete (a racing writer's file is removed by the
  hasher, which recomputes the suffix this write invalidated).

The commit is `RealDiskFile._commit_file`, the same as every other write: fsync of the file,
hashes.invalid appended and fsynced, the hash directory created durably, rename, fsync of
the hash directory, all before the caller may acknowledge. Blocking: runs in the device's
thread pool.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
from collections.abc import Callable
from dataclasses import replace

import xxhash

from common.fsutil import makedirs_durable
from objectd.diskfile import DiskFull, RealDiskFile
from objectd.fileformat import BLOCK_BYTES, ObjectMetadata, encode_footer
from objectd.layout import hold_suffix_invalidated

__all__ = [
    "SMALL_WRITE_BYTES_MAX",
    "TMP_NAME_TRIES_MAX",
    "SmallCommit",
    "body_checksums",
    "check_space",
    "commit_tmp",
    "create_tmp",
    "open_small_tmp",
    "prepare_small_data",
    "write_small_data",
]

# Bodies this path takes (the object server's small-PUT limit, objectd/writes.py).
SMALL_WRITE_BYTES_MAX = 64 * 1024
# Temp names tried before giving up (a clash needs a leftover file from an earlier process
# that had the same pid and the same 64-bit random prefix).
TMP_NAME_TRIES_MAX = 8

_counter = itertools.count()
_prefix: tuple[int, str] | None = None  # (pid, random hex) of this process


def _tmp_token() -> str:
    global _prefix
    pid = os.getpid()
    if _prefix is None or _prefix[0] != pid:  # first use, or a forked child
        _prefix = (pid, os.urandom(8).hex())
    return f"{_prefix[1]}{next(_counter):x}"


def body_checksums(body: bytes, block_bytes: int = BLOCK_BYTES) -> tuple[str, bytes]:
    """The body's MD5 (hex, the ETag) and its per-block xxh3-64 digests, as a streaming
    writer would record them (`objectd.diskfile`)."""
    view = memoryview(body)
    digests = b"".join(
        xxhash.xxh3_64_digest(view[lo : lo + block_bytes])
        for lo in range(0, len(view), block_bytes)
    )
    return hashlib.md5(body).hexdigest(), digests


def check_space(df: RealDiskFile, need: int, reserve_bytes: int) -> None:
    """DiskFull unless `need` bytes leave the device's reserve free (blocking: statvfs)."""
    st = os.statvfs(df.layout.root)
    free = st.f_bavail * st.f_frsize
    if free - need < reserve_bytes:
        raise DiskFull(f"{free} bytes free, {need} needed, reserve {reserve_bytes}")


def create_tmp(df: RealDiskFile) -> tuple[str, int]:
    """A new temp file in the device's tmp directory: (path, open fd)."""
    tmp_dir = df.layout.tmp
    for _ in range(TMP_NAME_TRIES_MAX):
        path = f"{tmp_dir}/{df.hash_hex}.{_tmp_token()}.tmp"
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            makedirs_durable(tmp_dir)
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, f"no free temp name in {tmp_dir}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "write wrote nothing")
            view = view[n:]
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(str(e)) from None
        raise


def _rename_unsynced(df: RealDiskFile, tmp: str, final_name: str) -> int:
    """`RealDiskFile._commit_file` without its fsyncs and cleanup (the group's second syncfs
    makes the hashes.invalid entry, the new directories and the rename durable together).
    Returns the descriptor holding the shared lock on hashes.invalid: the caller closes it
    only after that second syncfs, so the hasher (which takes the exclusive lock) can never
    record a suffix hash that counts a rename a crash could still undo."""
    fd = hold_suffix_invalidated(df.layout, df.partition, df.hash_hex[-3:], sync=False)
    try:
        # Under the shared lock: the hasher removes empty dirs only under the exclusive one.
        hash_dir = os.fspath(df.hash_dir)
        try:
            os.rename(tmp, f"{hash_dir}/{final_name}")
        except FileNotFoundError:  # the hash dir (or its suffix dir) does not exist yet
            os.makedirs(hash_dir, exist_ok=True)
            os.rename(tmp, f"{hash_dir}/{final_name}")
    except BaseException:
        os.close(fd)
        raise
    return fd


class SmallCommit:
    """A small PUT's rename, run by the file system's `GroupSync` once the temp file is
    durable (objectd/groupsync.py). `run` returns False, renaming nothing, when the request
    gave up waiting in the meantime; after a rename it holds hashes.invalid's shared lock
    until `release` (called by the committer after its second syncfs)."""

    __slots__ = ("df", "final_name", "gave_up", "held", "tmp")

    def __init__(self, df: RealDiskFile, tmp: str, final_name: str, gave_up: Callable[[], bool]):
        self.df = df
        self.tmp = tmp
        self.final_name = final_name
        self.gave_up = gave_up
        self.held: int | None = None

    def run(self) -> bool:
        if self.gave_up():
            self.abort()
            return False
        try:
            self.held = _rename_unsynced(self.df, self.tmp, self.final_name)
        except BaseException:
            self.abort()
            raise
        return True

    def abort(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def release(self) -> None:
        fd, self.held = self.held, None
        if fd is not None:
            os.close(fd)  # closing drops the lock


def open_small_tmp(
    df: RealDiskFile,
    body: bytes,
    md: ObjectMetadata,
    reserve_bytes: int,
    expected_etag: str,
) -> tuple[str, ObjectMetadata, str, int] | None:
    """The temp file of `body` with its footer, written and still open, not fsynced: (etag,
    filled-in metadata, temp path, descriptor), or None when `expected_etag` is given and is
    not the body's MD5 (nothing written). The caller closes the descriptor."""
    assert len(body) <= SMALL_WRITE_BYTES_MAX
    check_space(df, len(body), reserve_bytes)
    etag, digests = body_checksums(body)
    if expected_etag and expected_etag != etag:
        return None
    md = replace(
        md,
        content_length=len(body),
        etag=etag,
        block_bytes=BLOCK_BYTES,
        block_xxh3=digests,
    )
    footer = encode_footer(md)
    tmp, fd = create_tmp(df)
    try:
        _write_all(fd, body + footer)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return etag, md, tmp, fd


def _write_tmp(
    df: RealDiskFile,
    body: bytes,
    md: ObjectMetadata,
    reserve_bytes: int,
    expected_etag: str,
    *,
    sync: bool,
) -> tuple[str, ObjectMetadata, str] | None:
    """`open_small_tmp`, fsynced (with `sync`) and closed: (etag, metadata, temp path)."""
    made = open_small_tmp(df, body, md, reserve_bytes, expected_etag)
    if made is None:
        return None
    etag, md, tmp, fd = made
    written = False
    try:
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        written = True
    finally:
        if not written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return etag, md, tmp


def prepare_small_data(
    df: RealDiskFile,
    body: bytes,
    md: ObjectMetadata,
    reserve_bytes: int,
    expected_etag: str,
    gave_up: Callable[[], bool],
) -> tuple[str, SmallCommit] | None:
    """The group-commit half of `write_small_data`: the temp file, written but not fsynced,
    and the job that renames it into place (give it to `GroupSync.commit`); None when
    `expected_etag` does not match (nothing written). Blocking."""
    made = _write_tmp(df, body, md, reserve_bytes, expected_etag, sync=False)
    if made is None:
        return None
    etag, md, tmp = made
    return etag, SmallCommit(df, tmp, f"{md.timestamp.internal}.data", gave_up)


def write_small_data(
    df: RealDiskFile,
    body: bytes,
    md: ObjectMetadata,
    reserve_bytes: int,
    expected_etag: str,
    gave_up: Callable[[], bool],
    *,
    cleanup: bool,
) -> str | None:
    """Store `body` as the .data file described by `md` (its length, ETag and checksums
    filled in here) and return its ETag once durable; None, with nothing written, when
    `expected_etag` is given and is not the body's MD5, or when `gave_up()` is true just
    before the commit. `cleanup=False` skips removing obsolete files after the rename
    (the caller's lookup found no file in the hash directory). Blocking."""
    made = _write_tmp(df, body, md, reserve_bytes, expected_etag, sync=True)
    if made is None:
        return None
    etag, md, tmp = made
    return etag if commit_tmp(df, tmp, md, gave_up, cleanup=cleanup) else None


def commit_tmp(
    df: RealDiskFile, tmp: str, md: ObjectMetadata, gave_up: Callable[[], bool], *, cleanup: bool
) -> bool:
    """Commit a complete, fsynced temp file as `md`'s .data (`RealDiskFile._commit_file`);
    False, with the temp file removed, when `gave_up()` is true first. The temp file is
    removed on any failure too. Blocking."""
    committed = False
    try:
        if gave_up():
            return False
        df._commit_file(tmp, f"{md.timestamp.internal}.data", cleanup=cleanup)
        committed = True
    finally:
        if not committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return True
