"""Crash-safe file writes: temp file, write, fsync, rename, fsync of the directory; and
`writev_all`, every byte of a list of buffers written to a descriptor."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write_bytes", "atomic_writer", "fsync_dir", "makedirs_durable", "writev_all"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry change (create, rename, unlink) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: str | os.PathLike[str]) -> None:
    """Create `path` and any missing parents, fsyncing each parent whose entries changed.

    The usual cases cost one system call besides the fsync: `path` already there, or only
    `path` itself missing (a new hash directory under an existing suffix directory).
    """
    p = Path(path)
    try:
        os.mkdir(p)
    except FileExistsError:
        return
    except FileNotFoundError:
        pass  # a parent is missing too: the walk below
    else:
        fsync_dir(p.parent)
        return
    missing: list[Path] = []
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        fsync_dir(d.parent)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a file object; on clean exit its bytes replace `path` atomically and durably.

    On an exception the temp file is removed and `path` is untouched, so a reader never
    sees a half-written file, and after a crash either the old or the new content exists.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    f = os.fdopen(fd, "wb")
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically and durably."""
    with atomic_writer(path, mode) as f:
        f.write(data)


# Buffers per writev call (the kernel refuses more than IOV_MAX, 1024 on Linux).
_IOV_BATCH = 512


def writev_all(
    fd: int, views: list[memoryview], writev: Callable[[int, list[memoryview]], int] = os.writev
) -> None:
    """Write every byte of `views` in order, at most _IOV_BATCH buffers per writev (the
    kernel's IOV_MAX), resuming after a short write. Blocking."""
    pending = [v for v in views if len(v)]
    i = 0
    while i < len(pending):
        n = writev(fd, pending[i : i + _IOV_BATCH])
        if n <= 0:
            raise OSError(errno.EIO, "writev wrote nothing")
        while n:
            first = pending[i]
            if n >= len(first):
                n -= len(first)
                i += 1
            else:
                pending[i] = first[n:]
                n = 0
