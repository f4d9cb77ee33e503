"""FaultyDiskFile: the RealDiskFile twin that fails on purpose, for tests of failure paths.

It does real I/O through a RealDiskFile and injects what a `FaultPlan` asks for: a write
error part-way through a body, an error just before the rename, ENOSPC, a stalled disk, a
body byte flipped on its way to the writer.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.timestamps import Timestamp
from objectd.diskfile import (
    Deleted,
    DiskFull,
    Lookup,
    Missing,
    ObjectReader,
    ObjectWriter,
    RealDiskFile,
)
from objectd.fileformat import ObjectMetadata

__all__ = ["FaultPlan", "FaultyDiskFile"]


@dataclass
class FaultPlan:
    """Failures to inject: each is checked on the matching operation."""

    fail_write_after_bytes: int | None = None  # raise EIO once this many body bytes are in
    fail_commit: bool = False  # raise EIO just before the rename into place
    enospc_on_write: bool = False
    stall_write_s: float = 0.0  # sleep this long in each write (a slow or hung disk)
    # flip the low bit of the body byte at this offset before the real writer sees (and
    # hashes) it: bytes changed between the socket and the disk
    flip_byte_at: int | None = None
    calls: list[str] = field(default_factory=list)


class FaultyDiskFile:
    """A RealDiskFile twin that fails on purpose (tests only): see `FaultPlan`."""

    def __init__(self, real: RealDiskFile, plan: FaultPlan) -> None:
        self._real = real
        self._plan = plan
        self.layout = real.layout
        self.partition = real.partition
        self.hash_hex = real.hash_hex
        self.name = real.name

    def lookup(self) -> Lookup:
        return self._real.lookup()

    def open(self) -> ObjectReader | Deleted | Missing:
        return self._real.open()

    def writer(
        self, size_hint: int | None, reserve_bytes: int, *, md5: bool = True
    ) -> ObjectWriter:
        return _FaultyWriter(self._real.writer(size_hint, reserve_bytes, md5=md5), self._plan)

    def put_tombstone(self, ts: Timestamp) -> None:
        self._real.put_tombstone(ts)

    def put_meta(self, ts: Timestamp, headers: dict[str, str]) -> None:
        self._real.put_meta(ts, headers)

    def quarantine(self) -> Path | None:
        return self._real.quarantine()


class _FaultyWriter:
    def __init__(self, real: ObjectWriter, plan: FaultPlan) -> None:
        self._real = real
        self._plan = plan
        self.bytes_written = 0

    def write(self, chunk: bytes | bytearray) -> None:
        limit = self._plan.fail_write_after_bytes
        if self._plan.enospc_on_write:
            raise DiskFull("injected ENOSPC")
        if self._plan.stall_write_s:
            time.sleep(self._plan.stall_write_s)
        chunk = self._flipped(chunk)
        if limit is not None and self._real.bytes_written + len(chunk) > limit:
            self._real.write(chunk[: max(0, limit - self._real.bytes_written)])
            raise OSError(errno.EIO, "injected write failure")
        self._real.write(chunk)
        self.bytes_written = self._real.bytes_written

    def _flipped(self, chunk: bytes | bytearray) -> bytes | bytearray:
        at = self._plan.flip_byte_at
        start = self._real.bytes_written
        if at is None or not start <= at < start + len(chunk):
            return chunk
        out = bytearray(chunk)
        out[at - start] ^= 1
        return out

    def etag(self) -> str:
        return self._real.etag()

    def body_xxh3_128(self) -> str:
        return self._real.body_xxh3_128()

    def commit(self, md: ObjectMetadata, etag: str | None = None) -> None:
        if self._plan.fail_commit:
            self._real.abort()
            raise OSError(errno.EIO, "injected failure before rename")
        self._real.commit(md, etag)

    def abort(self) -> None:
        self._real.abort()
