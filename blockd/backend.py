"""The block backend interface the iSCSI target serves, with a memory twin and a file backend.

A backend is a fixed-size array of logical blocks. The SCSI layer validates LBA ranges before it
calls a backend, so backends may assume ``0 <= lba`` and ``lba + count <= num_blocks``; they still
check and raise :class:`BackendRangeError` (a bug guard, never user-triggered).

Semantics every implementation keeps (the contract test in tests/unit/scsi/test_backend.py runs
against all of them):

- ``read`` returns exactly ``count * block_size`` bytes; unmapped or never-written blocks read as
  zeros.
- ``write`` takes a whole number of blocks. It may be acknowledged from a volatile cache unless
  ``fua`` is set, in which case the data is durable when the call returns.
- ``flush`` (SYNCHRONIZE CACHE) returns once every earlier acknowledged write is durable.
- ``unmap`` discards a range; it reads back as zeros afterwards.
- ``is_mapped(lba)`` returns ``(mapped, run_blocks)``: whether ``lba`` is mapped and how many
  blocks from ``lba`` on share that state (at least 1), for GET LBA STATUS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar, runtime_checkable

from common.fsutil import fsync_dir

__all__ = [
    "BackendRangeError",
    "BlockBackend",
    "FileBackend",
    "MemoryBackend",
]

BLOCK_SIZES = (512, 4096)
T = TypeVar("T")


class BackendRangeError(ValueError):
    """An access outside the backend's blocks or not a whole number of blocks (a caller bug)."""


@runtime_checkable
class BlockBackend(Protocol):
    """What the SCSI layer needs from a volume."""

    @property
    def block_size(self) -> int: ...  # 512 or 4096

    @property
    def num_blocks(self) -> int: ...

    @property
    def serial(self) -> str: ...  # unit serial (VPD 80h) and source of the NAA id in 83h

    async def read(self, lba: int, count: int) -> bytes: ...

    async def write(self, lba: int, data: bytes, fua: bool = False) -> None: ...

    async def flush(self) -> None: ...  # SYNCHRONIZE CACHE: durable on return

    async def unmap(self, lba: int, count: int) -> None: ...  # reads back as zeros

    async def is_mapped(self, lba: int) -> tuple[bool, int]: ...  # (mapped?, run length)


def check_range(lba: int, count: int, num_blocks: int) -> None:
    """Raise BackendRangeError unless [lba, lba+count) lies inside the backend."""
    if lba < 0 or count < 0 or lba + count > num_blocks:
        raise BackendRangeError(f"blocks [{lba}, {lba + count}) outside 0..{num_blocks}")


def _check_geometry(block_size: int, num_blocks: int, serial: str) -> None:
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {block_size}")
    if num_blocks <= 0:
        raise ValueError(f"num_blocks must be positive, got {num_blocks}")
    if not serial or not serial.isascii() or not serial.isprintable() or len(serial) > 64:
        raise ValueError("serial must be 1..64 printable ASCII characters")


class MemoryBackend:
    """A sparse in-memory backend: a dict of written blocks. For tests and benchmarks."""

    def __init__(self, num_blocks: int, block_size: int = 512, serial: str = "mem0") -> None:
        _check_geometry(block_size, num_blocks, serial)
        self._block_size = block_size
        self._num_blocks = num_blocks
        self._serial = serial
        self._blocks: dict[int, bytes] = {}
        self._zero = bytes(block_size)

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def serial(self) -> str:
        return self._serial

    async def read(self, lba: int, count: int) -> bytes:
        check_range(lba, count, self._num_blocks)
        get = self._blocks.get
        zero = self._zero
        return b"".join(get(i, zero) for i in range(lba, lba + count))

    async def write(self, lba: int, data: bytes, fua: bool = False) -> None:
        bs = self._block_size
        if len(data) % bs:
            raise BackendRangeError(f"write of {len(data)} bytes is not whole {bs}-byte blocks")
        count = len(data) // bs
        check_range(lba, count, self._num_blocks)
        view = memoryview(data)
        for i in range(count):
            self._blocks[lba + i] = bytes(view[i * bs : (i + 1) * bs])

    async def flush(self) -> None:
        return None

    async def unmap(self, lba: int, count: int) -> None:
        check_range(lba, count, self._num_blocks)
        if count > len(self._blocks):
            for key in [k for k in self._blocks if lba <= k < lba + count]:
                del self._blocks[key]
        else:
            for i in range(lba, lba + count):
                self._blocks.pop(i, None)

    async def is_mapped(self, lba: int) -> tuple[bool, int]:
        check_range(lba, 1, self._num_blocks)
        state = lba in self._blocks
        end = lba + 1
        while end < self._num_blocks and (end in self._blocks) == state:
            end += 1
        return state, end - lba


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc fallocate(2) for hole punching, or None where it is not available."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        func = libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    result: Callable[[int, int, int, int], int] = func
    return result


_FALLOCATE = _load_fallocate()


def _on_tmpfs(fd: int) -> bool:
    """Whether ``fd``'s file lives on tmpfs (from /proc/self/mountinfo; False if unknown)."""
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                fields, _, rest = line.partition(" - ")
                parts = fields.split()
                if len(parts) > 2 and parts[2] == dev and rest.split()[:1] == ["tmpfs"]:
                    return True
    except OSError:
        pass
    return False


class FileBackend:
    """A backend on a regular file: pread/pwrite/fsync in a thread, hole punching for unmap.

    The file is created (sparse) if missing and must be exactly ``num_blocks * block_size`` bytes
    if it exists. Writes go to the page cache (the disk's volatile write cache); FUA writes and
    flush call fdatasync.

    Handing an I/O to a thread costs more CPU than a small page-cache copy, so I/O of at most
    ``inline_bytes_max`` bytes runs on the event loop when it cannot wait for a disk: reads that
    ``preadv(RWF_NOWAIT)`` can serve from the page cache, and reads and non-FUA writes of a file
    on tmpfs (memory). Non-FUA writes to tmpfs of up to ``inline_write_bytes_max`` bytes run
    there too: they only copy into memory pages, and a thread round trip costs more than that
    copy (~0.5 ms of CPU less per 1 MiB write in measurement). Larger reads stay on the pool,
    where the result buffers come from the pool threads' own malloc arenas and are reused
    rather than faulted in afresh. Everything else goes to the thread pool.
    """

    def __init__(
        self,
        path: str,
        num_blocks: int,
        block_size: int = 512,
        serial: str = "file0",
        io_threads: int = 4,
        inline_bytes_max: int = 64 * 1024,
        inline_write_bytes_max: int = 1024 * 1024,
    ) -> None:
        _check_geometry(block_size, num_blocks, serial)
        self._block_size = block_size
        self._num_blocks = num_blocks
        self._serial = serial
        self._path = path
        size_bytes = num_blocks * block_size
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            current = os.fstat(fd).st_size
            if current == 0:
                os.ftruncate(fd, size_bytes)
                os.fsync(fd)
                fsync_dir(os.path.dirname(os.path.abspath(path)))
            elif current != size_bytes:
                raise ValueError(f"{path} is {current} bytes, expected {size_bytes}")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._can_punch = _FALLOCATE is not None
        self._inline_bytes_max = inline_bytes_max
        self._inline_write_bytes_max = max(inline_bytes_max, inline_write_bytes_max)
        self._in_memory = _on_tmpfs(fd)
        self._nowait_reads = hasattr(os, "RWF_NOWAIT") and not self._in_memory
        # Blocking file I/O never runs on the event loop: a small pool of our own, bounded.
        self._executor = ThreadPoolExecutor(io_threads, thread_name_prefix="file-backend")

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def serial(self) -> str:
        return self._serial

    def close(self) -> None:
        """Stop the I/O threads and close the file descriptor (idempotent)."""
        self._executor.shutdown(wait=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def read(self, lba: int, count: int) -> bytes:
        check_range(lba, count, self._num_blocks)
        if count * self._block_size <= self._inline_bytes_max:
            if self._in_memory:
                return self._pread(lba, count)
            if self._nowait_reads:
                data = self._pread_nowait(lba, count)
                if data is not None:
                    return data
        return await self._run(self._pread, lba, count)

    def _pread_nowait(self, lba: int, count: int) -> bytes | None:
        """The data if the page cache holds all of it, else None (without waiting for a disk)."""
        buf = bytearray(count * self._block_size)
        try:
            done = os.preadv(self._fd, [buf], lba * self._block_size, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError:
            self._nowait_reads = False  # EOPNOTSUPP: this filesystem has no RWF_NOWAIT
            return None
        return bytes(buf) if done == len(buf) else None

    def _pread(self, lba: int, count: int) -> bytes:
        want = count * self._block_size
        data = os.pread(self._fd, want, lba * self._block_size)
        if len(data) != want:
            raise OSError(f"short read from {self._path}: {len(data)} of {want} bytes")
        return data

    async def write(self, lba: int, data: bytes, fua: bool = False) -> None:
        bs = self._block_size
        if len(data) % bs:
            raise BackendRangeError(f"write of {len(data)} bytes is not whole {bs}-byte blocks")
        check_range(lba, len(data) // bs, self._num_blocks)
        if self._in_memory and not fua and len(data) <= self._inline_write_bytes_max:
            done = os.pwrite(self._fd, data, lba * bs)
            if done != len(data):  # a short write: the rest, looping
                self._pwrite(lba * bs + done, memoryview(data)[done:], False)
            return
        await self._run(self._pwrite, lba * bs, data, fua)

    def _pwrite(self, offset: int, data: bytes | memoryview, fua: bool) -> None:
        view = memoryview(data)
        while view:
            done = os.pwrite(self._fd, view, offset)
            view = view[done:]
            offset += done
        if fua:
            os.fdatasync(self._fd)

    async def flush(self) -> None:
        await self._run(os.fdatasync, self._fd)

    async def unmap(self, lba: int, count: int) -> None:
        check_range(lba, count, self._num_blocks)
        if count:
            await self._run(self._discard, lba, count)

    def _discard(self, lba: int, count: int) -> None:
        offset = lba * self._block_size
        length = count * self._block_size
        if self._can_punch and _FALLOCATE is not None:
            mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
            if _FALLOCATE(self._fd, mode, offset, length) == 0:
                return
            self._can_punch = False  # filesystem without hole punching: write zeros instead
        chunk_bytes_max = 1 << 20
        zeros = bytes(min(length, chunk_bytes_max))
        while length:
            step = min(length, chunk_bytes_max)
            self._pwrite(offset, zeros[:step], False)
            offset += step
            length -= step

    async def is_mapped(self, lba: int) -> tuple[bool, int]:
        check_range(lba, 1, self._num_blocks)
        return await self._run(self._probe, lba)

    def _probe(self, lba: int) -> tuple[bool, int]:
        """Use SEEK_DATA/SEEK_HOLE to find the run of mapped or unmapped blocks at ``lba``."""
        bs = self._block_size
        size_bytes = self._num_blocks * bs
        offset = lba * bs
        try:
            data_at = os.lseek(self._fd, offset, os.SEEK_DATA)
        except OSError:
            data_at = size_bytes  # ENXIO: no data after offset
        if data_at > offset:
            end = min(data_at, size_bytes)
            return False, max(1, (end - offset) // bs)
        with contextlib.suppress(OSError):
            hole_at = os.lseek(self._fd, offset, os.SEEK_HOLE)
            end = min(hole_at, size_bytes)
            return True, max(1, -(-(end - offset) // bs))
        return True, self._num_blocks - lba
