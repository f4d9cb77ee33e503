"""objectd.pagecache: which ranges are dropped behind the write front, and that a large body
written through a real DiskFile writer leaves the page cache while a small one stays."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path
from types import SimpleNamespace

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
from objectd.reads import Loaded, check_and_open
from objectd.wholewrite import MID_BODY_BYTES_MAX, write_whole_data

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


@pytest.mark.parametrize(
    ("size", "kept"), [(KEEP_CACHE_BYTES_MAX, True), (1 * MIB, False), (24 * MIB, False)]
)
def test_a_large_body_leaves_the_cache_a_small_one_stays(
    tmp_path: Path, size: int, kept: bool
) -> None:
    (tmp_path / "sda").mkdir()
    df = RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, "/a/c/o")
    body = os.urandom(size)
    w = df.writer(size, 0)
    for i in range(0, size, MIB):  # a 256 KiB body is one short piece
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


def _whole_written(tmp_path: Path, size: int) -> tuple[RealDiskFile, bytes, Path]:
    """A random body of `size` bytes stored by the lane's one-step writer, and its .data."""
    (tmp_path / "sda").mkdir()
    df = RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, "/a/c/o")
    body = os.urandom(size)
    md = ObjectMetadata(kind="data", name="/a/c/o", timestamp=Timestamp(1))
    assert write_whole_data(df, body, md, 0, lambda: False, cleanup=False)
    (data,) = [p for p in df.hash_dir.iterdir() if p.suffix == ".data"]
    return df, body, data


@pytest.mark.parametrize(
    ("size", "kept"), [(64 * 1024, True), (KEEP_CACHE_BYTES_MAX, True), (MID_BODY_BYTES_MAX, False)]
)
def test_a_whole_body_write_drops_a_large_body_once_durable(
    tmp_path: Path, size: int, kept: bool
) -> None:
    """The lane's one-step writer (objectd/wholewrite.py: every blockd chunk) as the streamed
    one: a body over KEEP_CACHE_BYTES_MAX leaves the page cache after its fsync."""
    df, body, data = _whole_written(tmp_path, size)
    resident = _resident_pages(data)
    if kept:
        assert resident * mmap.PAGESIZE >= size
    else:
        assert resident == 0
    r = df.open()
    assert not isinstance(r, Deleted | Missing)
    try:
        assert r.read(0, size) == body
    finally:
        r.close()


def test_a_large_read_asked_to_drop_leaves_the_cache_others_keep_it(tmp_path: Path) -> None:
    """read(drop=True) of a range over KEEP_CACHE_BYTES_MAX drops it once read; a plain read
    (streamed ranges), verify (sendfile sends what it read from the page cache) and small
    ranges keep their pages."""
    df, body, data = _whole_written(tmp_path, MIB)
    assert _resident_pages(data) == 0  # dropped once written
    r = df.open()
    assert not isinstance(r, Deleted | Missing)
    try:
        assert r.read(0, 64 * 1024, drop=True) == body[: 64 * 1024]
        small = _resident_pages(data)
        assert small * mmap.PAGESIZE >= 64 * 1024  # a small range stays
        r.verify(0, MIB)
        assert _resident_pages(data) * mmap.PAGESIZE >= MIB  # verify keeps what it read
        assert r.read(0, MIB, drop=True) == body
        assert _resident_pages(data) * mmap.PAGESIZE < 64 * 1024  # the large read went
        assert r.read(0, MIB) == body
        assert _resident_pages(data) * mmap.PAGESIZE >= MIB  # a plain read keeps them
    finally:
        r.close()


def test_a_whole_object_read_in_one_step_leaves_the_cache(tmp_path: Path) -> None:
    """check_and_open reads an object of at most read_chunk_bytes whole (the lane's GET of a
    blockd chunk) and drops it; the object was dropped when written, so no read keeps it."""
    df, body, data = _whole_written(tmp_path, MIB)
    st = SimpleNamespace(
        devices=SimpleNamespace(check=lambda _device: None),
        conf=SimpleNamespace(read_chunk_bytes=MIB),
    )
    loaded = check_and_open(st, "sda", df, True, MIB)  # type: ignore[arg-type]
    assert isinstance(loaded, Loaded) and loaded.body == body
    assert _resident_pages(data) * mmap.PAGESIZE < 64 * 1024  # the footer's page may stay
