"""What a written object body leaves in the page cache (Linux hints; elsewhere no-ops).

Two hints, neither of which makes anything durable (the writer's fsync before the rename does
that, exactly as before):

- `start_writeback`: ask the kernel to start writing a just-written range back
  (sync_file_range(SYNC_FILE_RANGE_WRITE)), so the final fsync finds little left to flush.
- `drop_written`: wait for a range's writeback and drop its pages from the page cache
  (sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER), then posix_fadvise(DONTNEED)).

Large bodies are dropped behind the write front (`DropBehind`), and every body over
`KEEP_CACHE_BYTES_MAX` (256 KiB) as a whole after the fsync, as Swift's object server drops
every body it writes. Smaller bodies stay cached: they are the ones read back soon and often,
and cost little memory. Why drop at all, since a page of a new body must come from somewhere:

- On a node whose memory is full of page cache (every node after a while), each page of a
  new body can only be had by reclaiming another one: a 256 MiB PUT cost the object servers
  ~1.15 s of system CPU with the cache full against ~0.45 s with memory free
  (docs/performance.md, "Session 5").
- On a virtual machine that reports free memory back to its host (virtio-balloon free page
  reporting, as on this project's build machines), a page the page cache takes from free
  memory costs a host fault: writing 1 MiB files that stay cached cost 1.0-2.7 ms of system
  CPU per file, 0.47 ms when each was dropped after its fsync (docs/performance.md,
  "Session 10"); a 1 MiB PUT's object servers 12.5-13.2 ms of system CPU against 5.9-7.1.

Dropping what was just written (its pages are clean after the fsync) hands the same pages to
the next body, and keeps memory for what is worth caching (inodes, directories, small
objects). A read soon after a large write then comes from the disk.

Reads follow the same rule (`ReadBehind`): a streamed read of a body over
`KEEP_CACHE_BYTES_MAX` drops what it has read `READ_DROP_LAG_BYTES` behind its front, and the
rest of what it read when the reader closes, as Swift's object server does for bodies over its
keep_cache_size. Otherwise a cold 256 MiB GET pulled 256 MiB of new pages from free memory:
on the VM above, after the machine had been idle for ~15 s (free memory reported back),
reading such a file cost 0.35-0.37 s of system CPU against 0.03-0.04 s when dropped 2 MiB
behind (docs/performance.md, "Session 17 run").
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable

__all__ = [
    "DROP_LAG_BYTES",
    "DROP_STEP_BYTES",
    "FOLIO_BYTES_MAX",
    "KEEP_CACHE_BYTES_MAX",
    "READ_DROP_LAG_BYTES",
    "READ_DROP_STEP_BYTES",
    "WRITEBACK_BYTES_MIN",
    "DropBehind",
    "ReadBehind",
    "drop_read",
    "drop_synced",
    "drop_written",
    "start_writeback",
]

# Bodies up to this size keep their pages; larger ones are dropped once fsynced (Swift's
# object server drops every body it writes). Was 5 MiB (Swift's keep_cache_size, which is a
# GET setting) until session 10: see the module docstring.
KEEP_CACHE_BYTES_MAX = 256 * 1024
# Pages are dropped this far behind the write front (their writeback has had time to finish,
# so waiting for it rarely waits), in steps of at least DROP_STEP_BYTES.
DROP_LAG_BYTES = 8 * 1024 * 1024
DROP_STEP_BYTES = 4 * 1024 * 1024
# The largest page-cache folio (x86-64: PMD order, 2 MiB); folios are aligned to their size.
FOLIO_BYTES_MAX = 2 * 1024 * 1024
# A streamed read drops the pages it has read this far behind its front (the readahead
# window, read_ahead_kb, is ahead of it and untouched), in steps of at least
# READ_DROP_STEP_BYTES. What was read is already copied out (or, for sendfile, queued on the
# socket: a page the socket still holds is simply not dropped).
READ_DROP_LAG_BYTES = 2 * 1024 * 1024
READ_DROP_STEP_BYTES = 2 * 1024 * 1024
# Writes of at least this many bytes start their writeback at once.
WRITEBACK_BYTES_MIN = 256 * 1024

_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4
_WAIT_WRITE_WAIT = (
    _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER
)


class DropBehind:
    """Sans-IO: which written range is far enough behind the write front to be dropped.

    `advance(end)` is told the file offset the writes have reached and answers the range
    (offset, nbytes) to drop now, or None; ranges never overlap, never come closer than
    `lag_bytes` to the front, and end on a multiple of `align_bytes`.

    The alignment matters: the page cache holds a file in folios of up to FOLIO_BYTES_MAX,
    each aligned to its size, and POSIX_FADV_DONTNEED drops only the folios wholly inside its
    range. Ranges cut at arbitrary offsets left every folio across a cut cached for good
    (with 1 MiB steps, 224 of a 256 MiB body read stayed in the page cache).
    """

    def __init__(
        self,
        lag_bytes: int = DROP_LAG_BYTES,
        step_bytes: int = DROP_STEP_BYTES,
        *,
        start: int = 0,
        align_bytes: int = FOLIO_BYTES_MAX,
    ) -> None:
        assert lag_bytes >= 0 and step_bytes > 0 and align_bytes > 0 and start >= 0
        self.lag_bytes = lag_bytes
        self.step_bytes = step_bytes
        self.align_bytes = align_bytes
        self.dropped_to = start - start % align_bytes

    def advance(self, end: int) -> tuple[int, int] | None:
        upto = end - self.lag_bytes
        upto -= upto % self.align_bytes
        if upto - self.dropped_to < self.step_bytes:
            return None
        start, self.dropped_to = self.dropped_to, upto
        return start, upto - start


class ReadBehind:
    """The pages a streamed read of a large body leaves behind it.

    `read(fd, start, end)` is told each range read; once the front is far enough past what
    was dropped (`DropBehind` with READ_DROP_LAG_BYTES, starting at the first read's folio),
    the range behind it is dropped. `close(fd, end)` drops the rest of what was read, from
    there to the front's folio boundary, never past `end` (the body's end: the metadata
    after the body, read at every open, stays). A ranged GET evicts neither the pages before
    its range nor those after it (another reader's, or the readahead's).
    """

    def __init__(
        self, lag_bytes: int = READ_DROP_LAG_BYTES, step_bytes: int = READ_DROP_STEP_BYTES
    ) -> None:
        self._behind: DropBehind | None = None
        self._lag_bytes = lag_bytes
        self._step_bytes = step_bytes
        self._front = 0

    @classmethod
    def for_body(cls, size: int) -> ReadBehind | None:
        """The tracker for reading a body of `size` bytes: None when it is small enough to
        keep its pages (at most KEEP_CACHE_BYTES_MAX)."""
        return cls() if size > KEEP_CACHE_BYTES_MAX else None

    def read(self, fd: int, start: int, end: int) -> tuple[int, int] | None:
        """Note [start, end) read; drops (and returns) the range now behind the front."""
        if self._behind is None:
            self._behind = DropBehind(self._lag_bytes, self._step_bytes, start=start)
        self._front = max(self._front, end)
        drop = self._behind.advance(end)
        if drop is not None:
            _dont_need(fd, *drop)
        return drop

    def close(self, fd: int, end: int) -> tuple[int, int] | None:
        """Drop from the last dropped offset to the front (rounded up to a folio boundary,
        at most `end`), if anything was read; returns that range."""
        if self._behind is None:
            return None
        align = self._behind.align_bytes
        upto = min(end, -(-self._front // align) * align)
        start = self._behind.dropped_to
        if upto <= start:
            return None
        _dont_need(fd, start, upto - start)
        return start, upto - start


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux/glibc: the hints are skipped
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", None)


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Start writing back `nbytes` at `offset` (a failure only loses the head start)."""
    if _sync_file_range is not None and nbytes >= WRITEBACK_BYTES_MIN:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def drop_read(fd: int, offset: int, nbytes: int) -> None:
    """A range just read whole in one step (at most 1 MiB: every blockd chunk) leaves the
    page cache when over KEEP_CACHE_BYTES_MAX; the object was dropped when written too.
    Without it, reading such objects back took fresh pages from free memory (a host fault
    each on a VM reporting free memory: blockd's 1 MiB read job fell from 541-587 to
    304-397 MB/s once chunk writes were dropped; with it 517-603, docs/performance.md
    "Session 10"). Streamed reads drop behind their front instead (`ReadBehind`)."""
    if nbytes > KEEP_CACHE_BYTES_MAX:
        _dont_need(fd, offset, nbytes)


def drop_synced(fd: int, size: int) -> None:
    """After a body's fsync: a body over KEEP_CACHE_BYTES_MAX leaves the page cache (its pages
    are clean, so nothing is waited for). The one place both writers (the streamed one and
    the lane's one-step one) take this decision."""
    if size > KEEP_CACHE_BYTES_MAX:
        _dont_need(fd, 0, 0)


def _dont_need(fd: int, offset: int, nbytes: int) -> None:
    """Drop the range's clean pages (`nbytes` 0: to the end of the file); errors only leave
    pages cached."""
    if _DONTNEED is not None:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, nbytes, _DONTNEED)


def drop_written(fd: int, offset: int, nbytes: int) -> None:
    """Write back the range (waiting for it) and drop its pages from the page cache;
    `nbytes` 0 means to the end of the file. Errors are ignored: the fsync before the commit
    reports any write error, and a page that stays cached is only memory."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, _WAIT_WRITE_WAIT)
    _dont_need(fd, offset, nbytes)
