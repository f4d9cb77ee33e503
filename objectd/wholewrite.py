"""A data file written from a body that is already whole in memory, in one go.

The fast lane's medium PUTs (objectd/midput.py: bodies up to `MID_BODY_BYTES_MAX`, such as
the chunk objects (1 MiB by default) and the journal records blockd writes through
objectd/cluster_client.py) arrive whole, so they need none of the streaming writer's
machinery (objectd/diskfile.py `_RealWriter`): the block checksums are computed from the
buffer, and body and footer go to disk in one writev. The system calls a body of this size
cannot need are left out, as for small PUTs (objectd/smallwrite.py):

- no ``posix_fallocate`` (and no ``lseek``/``ftruncate`` to trim it): the one writev
  reports ENOSPC itself, and the free-space reserve is still checked first;
- no ``sync_file_range`` hints: the fsync follows at once;
- no ``mkdir`` of the device's tmp directory per PUT (created, durably, only when the temp
  file's open finds it missing) and no ``getrandom`` per temp name (a per-process random
  prefix and a counter; ``O_EXCL`` refuses any clash);
- no listing of the hash directory after the rename when the caller's lookup found it
  empty (`cleanup=False`).

The commit is `RealDiskFile._commit_file`, the same as every other write: fsync of the file,
hashes.invalid appended and fsynced, the hash directory created durably, rename, fsync of
the hash directory, all before the caller may acknowledge. Blocking: runs in the device's
thread pool.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import replace

import xxhash

from common.fsutil import writev_all
from objectd.diskfile import Buffer, DiskFull, RealDiskFile
from objectd.fileformat import BLOCK_BYTES, ObjectMetadata, encode_footer
from objectd.pagecache import drop_synced
from objectd.smallwrite import TMP_NAME_TRIES_MAX, check_space, commit_tmp, create_tmp

__all__ = [
    "MID_BODY_BYTES_MAX",
    "TMP_NAME_TRIES_MAX",
    "block_digests",
    "whole_metadata",
    "write_parts",
    "write_whole_data",
]

# The largest body stored whole from memory (the fast lane buffers each body this large).
# Measured (docs/performance.md, "Object server: large PUT cost (session 7)"): up to ~1 MiB
# the one-step path saves ~1 ms of CPU per PUT; from 2 MiB on, the lane's whole-body
# buffering (growing the buffer, copying the body out, page faults on fresh memory) costs
# more than the streamed path's per-request steps.
MID_BODY_BYTES_MAX = 1024 * 1024


def block_digests(body: Buffer | Sequence[Buffer], block_bytes: int = BLOCK_BYTES) -> bytes:
    """The per-block xxh3-64 digests of `body` (one buffer, or the parts it arrived in), as
    the streaming writer records them (hashed in place: no block is copied; a block that
    spans two parts is hashed by a streaming hasher, which gives the one-shot digest)."""
    digest = xxhash.xxh3_64_digest
    out: list[bytes] = []
    spanning = xxhash.xxh3_64()
    fill = 0  # bytes of the current block already given to `spanning`
    for part in _parts(body):
        pos = 0
        if fill:
            pos = min(block_bytes - fill, len(part))
            spanning.update(part[:pos])
            fill += pos
            if fill < block_bytes:
                continue
            out.append(spanning.digest())
            spanning.reset()
            fill = 0
        whole_end = pos + (len(part) - pos) // block_bytes * block_bytes
        out.extend(digest(part[lo : lo + block_bytes]) for lo in range(pos, whole_end, block_bytes))
        if whole_end < len(part):
            spanning.update(part[whole_end:])
            fill = len(part) - whole_end
    if fill:
        out.append(spanning.digest())
    return b"".join(out)


def _parts(body: Buffer | Sequence[Buffer]) -> list[memoryview]:
    """`body` as a list of byte-format views (one buffer is one part)."""
    if isinstance(body, bytes | bytearray | memoryview):
        body = [body]
    views = (memoryview(p) for p in body)
    return [v if v.format == "B" else v.cast("B") for v in views]


def write_parts(fd: int, parts: list[memoryview]) -> None:
    """Every byte of `parts` (never joined: common/fsutil.py's writev_all batches them within the
    kernel's IOV_MAX), with a full disk raised as DiskFull."""
    try:
        writev_all(fd, parts)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(str(e)) from None
        raise


def whole_metadata(md: ObjectMetadata, body: Buffer | Sequence[Buffer]) -> ObjectMetadata:
    """`md` (whose `etag` the caller has checked) with the body's length and block checksums."""
    parts = _parts(body)
    return replace(
        md,
        content_length=sum(len(p) for p in parts),
        block_bytes=BLOCK_BYTES,
        block_xxh3=block_digests(parts),
    )


def write_whole_data(
    df: RealDiskFile,
    body: Buffer | Sequence[Buffer],
    md: ObjectMetadata,
    reserve_bytes: int,
    gave_up: Callable[[], bool],
    *,
    cleanup: bool,
) -> bool:
    """Store `body` (one buffer, or the parts it arrived in: written by writev, never
    joined) as the .data file described by `md` (whose `etag` the caller has checked; its
    length and block checksums are filled in here). True once durable; False,
    with nothing left behind, when `gave_up()` is true just before the commit.
    `cleanup=False` skips removing obsolete files after the rename (the caller's lookup
    found no file in the hash directory). Raises DiskFull for the reserve or ENOSPC."""
    parts = _parts(body)
    size = sum(len(p) for p in parts)
    assert size <= MID_BODY_BYTES_MAX
    check_space(df, size, reserve_bytes)
    md = whole_metadata(md, parts)
    footer = encode_footer(md)
    tmp, fd = create_tmp(df)
    try:
        try:
            write_parts(fd, [*parts, memoryview(footer)])
            os.fsync(fd)
            drop_synced(fd, size)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return commit_tmp(df, tmp, md, gave_up, cleanup=cleanup)
