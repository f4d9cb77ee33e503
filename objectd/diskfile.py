"""Objects on a device: look up, read with per-block verification, write crash-safely, quarantine.

The `DiskFile` protocol is the seam: `RealDiskFile` does real file I/O (temp file, fsync,
rename, fsync of the directory); `objectd.faulty.FaultyDiskFile` wraps it to inject failures
in tests. All
methods block; the server runs them in the device's thread pool (see `devices.py`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import xxhash

from common.fsutil import fsync_dir, makedirs_durable, writev_all
from common.timestamps import Timestamp
from objectd.fileformat import (
    BLOCK_BYTES,
    TRAILER,
    FileFormatError,
    ObjectMetadata,
    decode_trailer,
    encode_footer,
    parse_footer,
)
from objectd.headers import merge_post_headers
from objectd.layout import (
    DeviceLayout,
    invalidate_suffix,
    quarantine_hash_dir,
    select_files,
    suffix_invalidated,
)
from objectd.pagecache import (
    WRITEBACK_BYTES_MIN,
    DropBehind,
    ReadBehind,
    drop_read,
    drop_synced,
    drop_written,
    start_writeback,
)

__all__ = [
    "WRITEBACK_BYTES_MIN",
    "ChecksumMismatch",
    "Deleted",
    "DiskFile",
    "DiskFileError",
    "DiskFull",
    "Lookup",
    "Missing",
    "ObjectInfo",
    "ObjectReader",
    "ObjectWriter",
    "RealDiskFile",
    "load_metadata",
    "verify_file",
    "write_chunks",
]


# The bytes a writer takes (a memoryview must be castable to bytes, format "B").
Buffer = bytes | bytearray | memoryview


class DiskFileError(Exception):
    """Base of the disk failures the server turns into status codes."""


class DiskFull(DiskFileError):
    """Writing would leave the device below its reserve, or it is out of space (507)."""


class ChecksumMismatch(DiskFileError):
    """A block did not match its checksum; the hash directory has been quarantined."""


@dataclass(frozen=True)
class ObjectInfo:
    """The merged view of a live object: its .data metadata with a newer .meta applied."""

    data: ObjectMetadata
    meta: ObjectMetadata | None
    path: Path

    @property
    def timestamp(self) -> Timestamp:
        return self.meta.timestamp if self.meta else self.data.timestamp

    @property
    def headers(self) -> dict[str, str]:
        if self.meta is None:
            return dict(self.data.headers)
        return merge_post_headers(self.data.headers, self.meta.headers)

    @property
    def delete_at(self) -> int | None:
        raw = self.headers.get("X-Delete-At")
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Missing:
    """Nothing here (or only a .meta waiting for its data)."""


@dataclass(frozen=True)
class Deleted:
    timestamp: Timestamp


Lookup = ObjectInfo | Deleted | Missing


class ObjectReader(Protocol):
    info: ObjectInfo

    def fileno(self) -> int: ...
    def verify(self, offset: int, count: int) -> None: ...
    def read(self, offset: int, count: int, *, drop: bool = False) -> bytes: ...
    def close(self) -> None: ...


class ObjectWriter(Protocol):
    bytes_written: int

    def write(self, chunk: bytes | bytearray) -> None: ...
    def etag(self) -> str: ...
    def body_xxh3_128(self) -> str: ...
    def commit(self, md: ObjectMetadata, etag: str | None = None) -> None: ...
    def abort(self) -> None: ...


class DiskFile(Protocol):
    layout: DeviceLayout
    partition: int
    hash_hex: str
    name: str

    def lookup(self) -> Lookup: ...
    def open(self) -> ObjectReader | Deleted | Missing: ...
    def writer(
        self, size_hint: int | None, reserve_bytes: int, *, md5: bool = True
    ) -> ObjectWriter: ...
    def put_tombstone(self, ts: Timestamp) -> None: ...
    def put_meta(self, ts: Timestamp, headers: dict[str, str]) -> None: ...
    def quarantine(self) -> Path | None: ...


def _read_footer(fd: int) -> ObjectMetadata:
    size = os.fstat(fd).st_size
    trailer = os.pread(fd, TRAILER.size, max(0, size - TRAILER.size))
    meta_len, _body_len, _ = decode_trailer(trailer, size)
    meta = os.pread(fd, meta_len, size - TRAILER.size - meta_len)
    return parse_footer(meta, trailer, size)


def _load(path: Path) -> ObjectMetadata:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_footer(fd)
    finally:
        os.close(fd)


def load_metadata(path: Path) -> ObjectMetadata:
    """The checked footer of one object file (FileFormatError if damaged). Blocking."""
    return _load(path)


def verify_file(path: Path, step_bytes: int = 1 << 20) -> Iterator[int]:
    """Check a whole object file: footer, every block digest and the ETag, an MD5 or the
    xxh3-128 its `etag_alg` names (the auditor's job). A body over KEEP_CACHE_BYTES_MAX
    leaves the page cache behind the check (objectd/pagecache.py ReadBehind).

    Yields the number of body bytes checked after each step, so a caller can rate-limit
    between steps; raises FileFormatError or ChecksumMismatch on damage. Blocking.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        md = _read_footer(fd)
        behind = ReadBehind.for_body(md.content_length)  # leaves the cache as it is checked
        whole = hashlib.md5() if md.etag_alg == "md5" else xxhash.xxh3_128()
        step = max(1, step_bytes // md.block_bytes) * md.block_bytes
        for start in range(0, md.content_length, step):
            buf = os.pread(fd, min(step, md.content_length - start), start)
            if behind is not None:
                behind.read(fd, start, start + len(buf))
            for lo in range(0, len(buf), md.block_bytes):
                index = (start + lo) // md.block_bytes
                block = memoryview(buf)[lo : lo + md.block_bytes]
                if xxhash.xxh3_64_digest(block) != md.block_digest(index):
                    raise ChecksumMismatch(f"{path}: block {index} does not match")
            whole.update(buf)
            yield start + len(buf)
        if md.kind == "data" and whole.hexdigest() != md.etag:
            raise ChecksumMismatch(f"{path}: body {md.etag_alg} differs from the ETag")
        if behind is not None:
            behind.close(fd, md.content_length)
    finally:
        os.close(fd)


class RealDiskFile:
    """One object name on one device: its hash directory and the files in it."""

    def __init__(
        self,
        layout: DeviceLayout,
        partition: int,
        hash_hex: str,
        name: str,
        on_quarantine: Callable[[Path], None] | None = None,
    ) -> None:
        self.layout = layout
        self.partition = partition
        self.hash_hex = hash_hex
        self.name = name
        self.hash_dir = layout.hash_dir(partition, hash_hex)
        self._on_quarantine = on_quarantine

    def _listdir(self) -> list[str]:
        try:
            return os.listdir(self.hash_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def stored_base(self) -> Timestamp | None:
        """The timestamp of the newest .data or .ts, from the file names alone (no footer
        read, nothing checked); None when there is neither."""
        base = select_files(self._listdir()).base
        return None if base is None else base[0]

    def lookup(self) -> Lookup:
        files = select_files(self._listdir())
        if files.base is None:
            return Missing()
        ts, kind = files.base
        if kind == "ts":
            return Deleted(ts)
        try:
            data = _load(self.hash_dir / f"{ts.internal}.data")
            meta_name = files.meta_name()
            meta = _load(self.hash_dir / meta_name) if meta_name else None
            self._check(data, meta, ts)
        except FileNotFoundError:
            return Missing()  # raced with a delete/cleanup: report what a reader would find
        except FileFormatError:
            self.quarantine()
            return Missing()
        return ObjectInfo(data, meta, self.hash_dir / f"{ts.internal}.data")

    def _check(self, data: ObjectMetadata, meta: ObjectMetadata | None, ts: Timestamp) -> None:
        if data.kind != "data" or data.timestamp != ts or data.name != self.name:
            raise FileFormatError("data file metadata does not match its name")
        if meta is not None and (meta.kind != "meta" or meta.name != self.name):
            raise FileFormatError("meta file metadata does not match its name")

    def open(self) -> ObjectReader | Deleted | Missing:
        found = self.lookup()
        if not isinstance(found, ObjectInfo):
            return found
        try:
            fd = os.open(found.path, os.O_RDONLY)
        except FileNotFoundError:
            return Missing()
        return _RealReader(self, found, fd)

    def writer(
        self, size_hint: int | None, reserve_bytes: int, *, md5: bool = True
    ) -> ObjectWriter:
        """A writer for a new data file. With `md5=False` it computes the body's xxh3-128
        instead of its MD5, and `commit` must be given the ETag (a large PUT whose MD5 the
        proxy computed once: objectd/putbody.py)."""
        return _RealWriter(self, size_hint, reserve_bytes, md5=md5)

    def _commit_file(self, tmp: str | Path, final_name: str, *, cleanup: bool = True) -> None:
        """Move a complete, fsynced temp file into the hash dir; then drop obsolete files
        (unless `cleanup` is False: the hasher does it when it rehashes the suffix)."""
        with suffix_invalidated(self.layout, self.partition, self.hash_hex[-3:]):
            # Under the shared lock: the hasher removes empty dirs only under the exclusive one.
            makedirs_durable(self.hash_dir)
            os.replace(tmp, self.hash_dir / final_name)
            fsync_dir(self.hash_dir)
        if cleanup:
            self._cleanup()

    def _cleanup(self) -> None:
        if self.remove_obsolete():
            fsync_dir(self.hash_dir)

    def remove_obsolete(self) -> bool:
        """Unlink the files a newer one made obsolete, without an fsync (the caller's choice:
        if a crash undoes the unlink, the older file is still obsolete and the hasher removes
        it). True if any file went."""
        removed = False
        for name in select_files(self._listdir()).obsolete:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.hash_dir / name)
                removed = True
        return removed

    def _write_small(self, md: ObjectMetadata) -> None:
        makedirs_durable(self.layout.tmp)
        tmp = self.layout.tmp / f"{self.hash_hex}.{os.urandom(8).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, encode_footer(md))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            self._commit_file(tmp, f"{md.timestamp.internal}.{md.kind}")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def put_tombstone(self, ts: Timestamp) -> None:
        self._write_small(ObjectMetadata(kind="ts", name=self.name, timestamp=ts))

    def put_meta(self, ts: Timestamp, headers: dict[str, str]) -> None:
        self._write_small(
            ObjectMetadata(kind="meta", name=self.name, timestamp=ts, headers=headers)
        )

    def quarantine(self) -> Path | None:
        dest = quarantine_hash_dir(self.layout, self.hash_dir)
        if dest is not None:
            # The replicator must notice this suffix lost a file and fetch a good copy.
            invalidate_suffix(self.layout, self.partition, self.hash_hex[-3:])
            if self._on_quarantine is not None:
                self._on_quarantine(dest)
        return dest


class _RealReader:
    def __init__(self, df: RealDiskFile, info: ObjectInfo, fd: int) -> None:
        self._df = df
        self.info = info
        self._fd = fd
        self._verified_upto = 0  # blocks [0, n) already verified in order
        # A large body's streamed reads leave the page cache behind them
        # (objectd/pagecache.py ReadBehind).
        self._read_behind = ReadBehind.for_body(info.data.content_length)
        # A GET reads the next range in one pool thread while it sends the last one, and
        # closes from another: reads and close take turns, so a close never pulls the fd
        # from under a read (nor lets a read use a number the fd table gave to a new file).
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self._fd

    def _blocks(self, offset: int, count: int) -> tuple[int, int]:
        md = self.info.data
        assert offset >= 0 and count > 0 and offset + count <= md.content_length
        return offset // md.block_bytes, (offset + count - 1) // md.block_bytes

    def _read_blocks(self, first: int, last: int, *, drop: bool = False) -> bytes:
        """The blocks' bytes, verified; `drop`: then let a large range leave the page cache
        (objectd/pagecache.py drop_read)."""
        md = self.info.data
        start = first * md.block_bytes
        end = min((last + 1) * md.block_bytes, md.content_length)
        with self._lock:
            if self._fd < 0:
                raise OSError(errno.EBADF, "reader already closed")
            buf = os.pread(self._fd, end - start, start)
            if drop:
                drop_read(self._fd, start, end - start)
            elif self._read_behind is not None:
                self._read_behind.read(self._fd, start, end)
        for i in range(first, last + 1):
            lo = (i - first) * md.block_bytes
            block = memoryview(buf)[lo : lo + md.block_bytes]
            good = len(buf) == end - start and (xxhash.xxh3_64_digest(block) == md.block_digest(i))
            if not good:
                self.close()
                self._df.quarantine()
                raise ChecksumMismatch(f"{self._df.name}: block {i} does not match its checksum")
        return buf

    def verify(self, offset: int, count: int) -> None:
        """Check the blocks covering the range (the caller then sends them by sendfile).

        Object files are never modified in place, so the verified bytes are the sent bytes.
        """
        first, last = self._blocks(offset, count)
        self._read_blocks(first, last)

    def read(self, offset: int, count: int, *, drop: bool = False) -> bytes:
        """The range's bytes, verified; `drop`: a range over KEEP_CACHE_BYTES_MAX then leaves
        the page cache (objectd/pagecache.py drop_read)."""
        first, last = self._blocks(offset, count)
        buf = self._read_blocks(first, last, drop=drop)
        lo = offset - first * self.info.data.block_bytes
        return buf[lo : lo + count]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                if self._read_behind is not None:
                    self._read_behind.close(self._fd, self.info.data.content_length)
                os.close(self._fd)
                self._fd = -1


class _RealWriter:
    def __init__(
        self, df: RealDiskFile, size_hint: int | None, reserve_bytes: int, *, md5: bool = True
    ) -> None:
        self._df = df
        self._reserve_bytes = reserve_bytes
        # write/commit/abort may be called from different pool threads (an abort after a
        # timed-out step): they take turns, so an abort never closes an fd in use.
        self._lock = threading.RLock()
        makedirs_durable(df.layout.tmp)
        self._check_space(size_hint or 0)
        self.tmp = df.layout.tmp / f"{df.hash_hex}.{os.urandom(8).hex()}.tmp"
        self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._md5 = hashlib.md5() if md5 else None
        self._xxh128 = None if md5 else xxhash.xxh3_128()
        self._block_bytes = BLOCK_BYTES
        self._block_hash = xxhash.xxh3_64()  # the open block, when a chunk ended inside it
        self._block_fill = 0
        self._digests = bytearray()
        self.bytes_written = 0
        self._drop_behind = DropBehind()
        if size_hint:
            try:
                os.posix_fallocate(self._fd, 0, size_hint)
            except OSError as e:
                self.abort()
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DiskFull(str(e)) from None
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise

    def _check_space(self, need: int) -> None:
        st = os.statvfs(self._df.layout.root)
        free = st.f_bavail * st.f_frsize
        if free - need < self._reserve_bytes:
            raise DiskFull(f"{free} bytes free, {need} needed, reserve {self._reserve_bytes}")

    def write(self, chunk: Buffer) -> None:
        self.write_many((chunk,))

    def write_many(self, chunks: Sequence[Buffer]) -> None:
        """Append `chunks` in order: hashed where they lie, then written by one writev (no
        joining copy; a block that spans two chunks is hashed by a streaming digest)."""
        with self._lock:
            if self._fd < 0:
                raise OSError(errno.EBADF, "writer already aborted")
            self._write(chunks)

    def _write(self, chunks: Sequence[Buffer]) -> None:
        views = [_byte_view(c) for c in chunks]
        for view in views:
            self._hash(view)
        total = sum(len(v) for v in views)
        try:
            writev_all(self._fd, views)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(str(e)) from None
            raise
        start_writeback(self._fd, self.bytes_written, total)
        self.bytes_written += total
        behind = self._drop_behind.advance(self.bytes_written)
        if behind is not None:
            drop_written(self._fd, *behind)

    def _hash(self, view: memoryview) -> None:
        if self._md5 is not None:
            self._md5.update(view)
        if self._xxh128 is not None:
            self._xxh128.update(view)
        block = self._block_bytes
        if self._block_fill:  # finish the block an earlier chunk left open
            take = min(block - self._block_fill, len(view))
            self._block_hash.update(view[:take])
            self._block_fill += take
            view = view[take:]
            if self._block_fill == block:
                self._end_block()
        whole = len(view) - len(view) % block
        digest = xxhash.xxh3_64_digest
        for lo in range(0, whole, block):  # whole blocks are hashed in place, not copied
            self._digests += digest(view[lo : lo + block])
        if whole < len(view):  # only reached with no block open: this starts one
            self._block_hash.update(view[whole:])
            self._block_fill = len(view) - whole

    def _end_block(self) -> None:
        # Streaming XXH3 gives the one-shot digest of the same bytes (the readers' check).
        self._digests += self._block_hash.digest()
        self._block_hash.reset()
        self._block_fill = 0

    def etag(self) -> str:
        if self._md5 is None:
            raise ValueError("this writer computes no MD5 (md5=False)")
        return self._md5.hexdigest()

    def body_xxh3_128(self) -> str:
        if self._xxh128 is None:
            raise ValueError("this writer computes no xxh3-128 (md5=True)")
        return self._xxh128.hexdigest()

    def commit(self, md: ObjectMetadata, etag: str | None = None) -> None:
        """Append the footer, fsync, rename into place; `md` gets this body's checksums and
        `etag` (by default this writer's MD5 of the body)."""
        with self._lock:
            if self._fd < 0:
                raise OSError(errno.EBADF, "writer already aborted")
            self._commit(md, self.etag() if etag is None else etag)

    def _commit(self, md: ObjectMetadata, etag: str) -> None:
        if self._block_fill:
            self._end_block()
        md = replace(
            md,
            content_length=self.bytes_written,
            etag=etag,
            block_bytes=self._block_bytes,
            block_xxh3=bytes(self._digests),
        )
        try:
            writev_all(self._fd, [memoryview(encode_footer(md))])
            os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_CUR))  # drop fallocate excess
            os.fsync(self._fd)
            drop_synced(self._fd, self.bytes_written)
            os.close(self._fd)
            self._fd = -1
            self._df._commit_file(self.tmp, f"{md.timestamp.internal}.data")
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with self._lock:
            self._abort()

    def _abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _byte_view(chunk: Buffer) -> memoryview:
    view = memoryview(chunk)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def write_chunks(writer: ObjectWriter, chunks: Sequence[Buffer]) -> None:
    """Append `chunks` to `writer` in order: one `write_many` for a real writer, one `write`
    per chunk for any other (a fault-injecting wrapper sees every chunk). Blocking."""
    if isinstance(writer, _RealWriter):
        writer.write_many(chunks)
        return
    for chunk in chunks:
        writer.write(bytes(chunk) if isinstance(chunk, memoryview) else chunk)
