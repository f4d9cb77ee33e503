"""objectd.pagecache: which ranges are dropped behind the write front and behind a streamed
read, and that a large body written or read through a real DiskFile leaves the page cache
while a small one stays."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.timestamps import Timestamp
from objectd.diskfile import Deleted, Missing, RealDiskFile, verify_file
from objectd.fileformat import ObjectMetadata
from objectd.layout import DeviceLayout
from objectd.pagecache import (
    DROP_LAG_BYTES,
    DROP_STEP_BYTES,
    FOLIO_BYTES_MAX,
    KEEP_CACHE_BYTES_MAX,
    READ_DROP_LAG_BYTES,
    READ_DROP_STEP_BYTES,
    DropBehind,
    ReadBehind,
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
    assert d.advance(20 * MIB + 5) == (4 * MIB, 8 * MIB)  # ends on a folio boundary
    assert d.dropped_to == 12 * MIB
    assert d.advance(22 * MIB) is None  # 2 MiB more: below one step
    assert d.advance(24 * MIB + MIB // 2) == (12 * MIB, 4 * MIB)


def test_drop_behind_cuts_only_on_folio_boundaries() -> None:
    """POSIX_FADV_DONTNEED drops only folios wholly inside its range, and a page-cache folio
    is up to FOLIO_BYTES_MAX, aligned to its size: every cut sits on such a boundary, the
    first one at or before `start`."""
    d = DropBehind(lag_bytes=MIB, step_bytes=MIB, start=3 * MIB + 7)
    assert d.dropped_to == 2 * MIB
    assert d.advance(4 * MIB + MIB // 2) is None  # 3.5 MiB behind rounds down to 2 MiB
    assert d.advance(5 * MIB) == (2 * MIB, 2 * MIB)
    for end in range(5 * MIB, 64 * MIB, 300_001):
        got = d.advance(end)
        if got is not None:
            assert got[0] % FOLIO_BYTES_MAX == 0 and got[1] % FOLIO_BYTES_MAX == 0


def test_defaults_drop_nothing_of_a_kept_body() -> None:
    d = DropBehind()
    assert d.advance(KEEP_CACHE_BYTES_MAX) is None
    assert DROP_LAG_BYTES + DROP_STEP_BYTES > KEEP_CACHE_BYTES_MAX


def _resident_pages(path: Path) -> int:
    """Pages of `path` in the page cache."""
    return sum(_residency(path))


def _residency(path: Path) -> list[bool]:
    """Page by page, whether `path` is in the page cache: mincore(2) over a read-only shared
    mapping."""
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
    return [bool(v & 1) for v in vec]


def _reads_back(df: RealDiskFile, body: bytes) -> None:
    """The object reads back whole and intact."""
    r = df.open()
    assert not isinstance(r, Deleted | Missing)
    try:
        assert r.read(0, len(body)) == body
    finally:
        r.close()


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
    df, body, data = _large_written(tmp_path, size)  # a 256 KiB body is one short piece
    resident = _resident_pages(data)
    if kept:
        assert resident * mmap.PAGESIZE >= size  # the whole body is still cached
    else:
        assert resident == 0
    _reads_back(df, body)  # intact either way


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
    _reads_back(df, body)


def test_a_large_read_asked_to_drop_leaves_the_cache_others_keep_it(tmp_path: Path) -> None:
    """read(drop=True) of a range over KEEP_CACHE_BYTES_MAX drops it once read; a plain read
    (streamed ranges), verify (sendfile sends what it read from the page cache) and small
    ranges keep their pages while the reader is open (less than READ_DROP_LAG_BYTES behind
    the front), and the close drops them."""
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
    assert _resident_pages(data) * mmap.PAGESIZE < 64 * 1024  # the footer's page may stay


def test_read_behind_drops_behind_its_lag_from_the_first_read_on(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"\0" * (16 * MIB))
    fd = os.open(path, os.O_RDONLY)
    try:
        rb = ReadBehind(lag_bytes=2 * MIB, step_bytes=2 * MIB)
        assert rb.close(fd, 16 * MIB) is None  # nothing read, nothing dropped
        assert rb.read(fd, 4 * MIB, 5 * MIB) is None  # a ranged read starting at 4 MiB
        assert rb.read(fd, 5 * MIB, 7 * MIB) is None  # 1 MiB behind the lag
        assert rb.read(fd, 7 * MIB, 8 * MIB) == (4 * MIB, 2 * MIB)  # never before its start
        assert rb.read(fd, 8 * MIB, 9 * MIB + 5) is None  # under one step
        assert rb.read(fd, 9 * MIB + 5, 11 * MIB) == (6 * MIB, 2 * MIB)
        # the close drops what was read, to the front's folio boundary
        assert rb.close(fd, 16 * MIB - 3) == (8 * MIB, 4 * MIB)
        whole = ReadBehind(lag_bytes=2 * MIB, step_bytes=2 * MIB)
        assert whole.read(fd, 0, 15 * MIB) == (0, 12 * MIB)
        assert whole.read(fd, 15 * MIB, 16 * MIB - 3) is None
        assert whole.close(fd, 16 * MIB - 3) == (12 * MIB, 4 * MIB - 3)  # never past `end`
    finally:
        os.close(fd)
    assert READ_DROP_LAG_BYTES >= 0 and READ_DROP_STEP_BYTES >= FOLIO_BYTES_MAX


def _large_written(tmp_path: Path, size: int) -> tuple[RealDiskFile, bytes, Path]:
    (tmp_path / "sda").mkdir()
    df = RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, "/a/c/o")
    body = os.urandom(size)
    w = df.writer(size, 0)
    for i in range(0, size, MIB):
        w.write(body[i : i + MIB])
    w.commit(ObjectMetadata(kind="data", name="/a/c/o", timestamp=Timestamp(1)))
    (data,) = [p for p in df.hash_dir.iterdir() if p.suffix == ".data"]
    return df, body, data


def test_a_streamed_read_of_a_large_body_leaves_the_cache_behind_it(tmp_path: Path) -> None:
    """A GET streams a large body in steps (objectd/reads.py): the pages more than
    READ_DROP_LAG_BYTES behind the front leave as it goes, the rest at the close, so a cold
    read recycles a few MiB of pages instead of taking the whole body's from free memory.
    64 MiB, because readahead grows its folios as a sequential read goes on: by then they
    are large enough that cuts off folio boundaries left most pages cached."""
    size = 64 * MIB
    df, body, data = _large_written(tmp_path, size)
    pages = size // mmap.PAGESIZE
    r = df.open()
    assert not isinstance(r, Deleted | Missing)
    try:
        front = 48 * MIB
        got = b"".join(r.read(p, MIB) for p in range(0, front, MIB))
        assert got == body[:front]
        behind = front - READ_DROP_LAG_BYTES - READ_DROP_STEP_BYTES
        resident = _residency(data)
        assert not any(resident[: behind // mmap.PAGESIZE])  # dropped behind the front
        assert all(resident[(front - MIB) // mmap.PAGESIZE : front // mmap.PAGESIZE])
        r.verify(front, size - front)  # the sendfile path reads through verify
    finally:
        r.close()
    assert not any(_residency(data)[:pages])  # the body is gone; the footer's page may stay
    _reads_back(df, body)  # intact, from the disk


def test_a_large_body_leaves_the_cache_behind_the_write_front(tmp_path: Path) -> None:
    """The streamed writer drops DROP_LAG_BYTES behind its front while the body arrives in
    pieces of any size (as socket reads hand them over), not only at the commit."""
    (tmp_path / "sda").mkdir()
    df = RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, "/a/c/o")
    size, piece = 64 * MIB, 200_003
    body = os.urandom(size)
    w = df.writer(size, 0)
    try:
        for i in range(0, size, piece):
            w.write(body[i : i + piece])
        tmp = next(p for p in (tmp_path / "sda" / "tmp").iterdir())
        resident = _residency(tmp)
        behind = size - DROP_LAG_BYTES - DROP_STEP_BYTES - FOLIO_BYTES_MAX
        assert sum(resident[: behind // mmap.PAGESIZE]) == 0
    finally:
        w.abort()


def test_a_ranged_read_keeps_the_pages_before_its_range(tmp_path: Path) -> None:
    size = 8 * MIB
    _df, body, data = _large_written(tmp_path, size)
    df = RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, "/a/c/o")
    with open(data, "rb") as f:  # someone else's read brought the first 4 MiB in
        assert f.read(4 * MIB) == body[: 4 * MIB]
    assert all(_residency(data)[: 4 * MIB // mmap.PAGESIZE])
    r = df.open()
    assert not isinstance(r, Deleted | Missing)
    try:
        assert r.read(4 * MIB, 4 * MIB) == body[4 * MIB :]
    finally:
        r.close()
    resident = _residency(data)
    assert all(resident[: 4 * MIB // mmap.PAGESIZE])
    assert not any(resident[4 * MIB // mmap.PAGESIZE : size // mmap.PAGESIZE])


def test_a_ranged_read_keeps_the_pages_after_its_range(tmp_path: Path) -> None:
    size = 16 * MIB
    _df, body, data = _large_written(tmp_path, size)
    df = RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, "/a/c/o")
    with open(data, "rb") as f:  # someone else's read brought the body in
        assert f.read(size) == body
    r = df.open()
    assert not isinstance(r, Deleted | Missing)
    try:
        assert r.read(2 * MIB, MIB) == body[2 * MIB : 3 * MIB]
    finally:
        r.close()
    resident = _residency(data)
    page = mmap.PAGESIZE
    assert all(resident[: 2 * MIB // page])  # before the range
    assert not any(resident[2 * MIB // page : 4 * MIB // page])  # the range's folios
    assert all(resident[4 * MIB // page : size // page])  # after it


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


def test_the_auditors_check_of_a_large_body_leaves_the_cache(tmp_path: Path) -> None:
    """verify_file (the auditor) reads every byte of every object: a large body leaves the
    page cache behind the check, as a GET's does."""
    size = 64 * MIB
    _df, _body, data = _large_written(tmp_path, size)
    checked = list(verify_file(data))
    assert checked[-1] == size
    assert not any(_residency(data)[: size // mmap.PAGESIZE])
