"""objectd.pagecache: which ranges are dropped behind the write front, and that a large body
written through a real DiskFile writer leaves the page cache while a small one stays."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import pytest

from common.timestamps import Timestamp
from objectd.diskfile import Deleted, Missing, RealDiskFile
from objectd.fileformat import ObjectMetadata
from objectd.layout import DeviceLayout
from objectd.pagecache import (
    DROP_LAG_BYTES,
    DROP_STEP_BYTES,
    KEEP_CACHE_BYTES_MAX,
    DropBehind,
    drop_written,
)

MIB = 1024 * 1024
HASH = "0123456789abcdef0123456789abcdef"


def test_drop_behind_keeps_its_lag_and_never_overlaps() -> None:
    d = DropBehind(lag_bytes=8 * MIB, step_bytes=4 * MIB)
    assert d.advance(8 * MIB) is None  # nothing behind the lag yet
    assert d.advance(11 * MIB) is None  # 3 MiB behind: below one step
    assert d.advance(12 * MIB) == (0, 4 * MIB)
    assert d.advance(13 * MIB) is None
    assert d.advance(20 * MIB + 5) == (4 * MIB, 8 * MIB + 5)
    assert d.dropped_to == 12 * MIB + 5


def test_defaults_drop_nothing_of_a_kept_body() -> None:
    d = DropBehind()
    assert d.advance(KEEP_CACHE_BYTES_MAX) is None
    assert DROP_LAG_BYTES + DROP_STEP_BYTES > KEEP_CACHE_BYTES_MAX


def _resident_pages(path: Path) -> int:
    """Pages of `path` in the page cache: mincore(2) over a read-only shared mapping."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = path.stat().st_size
    vec = (ctypes.c_ubyte * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec)


def test_drop_written_evicts_a_written_range(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with open(path, "wb") as f:
        f.write(os.urandom(4 * MIB))
        f.flush()
        assert _resident_pages(path) > 0
        drop_written(f.fileno(), 0, 0)
    assert _resident_pages(path) == 0


@pytest.mark.parametrize(("size", "kept"), [(1 * MIB, True), (24 * MIB, False)])
def test_a_large_body_leaves_the_cache_a_small_one_stays(
    tmp_path: Path, size: int, kept: bool
) -> None:
    (tmp_path / "sda").mkdir()
    df = RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, "/a/c/o")
    body = os.urandom(size)
    w = df.writer(size, 0)
    for i in range(0, size, MIB):
        w.write(body[i : i + MIB])
    w.commit(ObjectMetadata(kind="data", name="/a/c/o", timestamp=Timestamp(1)))
    (data,) = [p for p in df.hash_dir.iterdir() if p.suffix == ".data"]
    resident = _resident_pages(data)
    if kept:
        assert resident * mmap.PAGESIZE >= size  # the whole body is still cached
    else:
        assert resident == 0
    r = df.open()  # and the body reads back intact either way
    assert not isinstance(r, Deleted | Missing)
    try:
        assert r.read(0, size) == body
    finally:
        r.close()
