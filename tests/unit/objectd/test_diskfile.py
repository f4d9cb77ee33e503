"""DiskFile on real files: crash safety, tombstones, ordering, metadata, quarantine."""

from __future__ import annotations

import hashlib
import os

import pytest

from common.timestamps import Timestamp
from objectd.diskfile import (
    ChecksumMismatch,
    Deleted,
    Missing,
    ObjectInfo,
    RealDiskFile,
    load_metadata,
    verify_file,
)
from objectd.faulty import FaultPlan, FaultyDiskFile
from objectd.fileformat import BLOCK_BYTES, ObjectMetadata
from objectd.layout import DeviceLayout, read_invalid_suffixes, walk_hash_dirs

HASH = "0123456789abcdef0123456789abcdef"
NAME = "/a/c/o"


@pytest.fixture(params=["real", "faulty-without-faults"])
def df(request, tmp_path):
    """Every contract test runs against the real DiskFile and its fault-injecting twin."""
    (tmp_path / "sda").mkdir()
    quarantined = []
    d = RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, NAME, quarantined.append)
    if request.param == "faulty-without-faults":
        d = FaultyDiskFile(d, FaultPlan())
        d.hash_dir = d._real.hash_dir
    d.quarantined_to = quarantined
    return d


def put(df, ts: int, body: bytes, headers=None):
    w = df.writer(len(body), 0)
    for i in range(0, len(body), 10_000):
        w.write(body[i : i + 10_000])
    md = ObjectMetadata(
        kind="data",
        name=NAME,
        timestamp=Timestamp(ts),
        content_type="a/b",
        headers=headers or {},
    )
    w.commit(md)
    return w


def read_all(df) -> bytes:
    r = df.open()
    assert not isinstance(r, Deleted | Missing)
    try:
        n = r.info.data.content_length
        return r.read(0, n) if n else b""
    finally:
        r.close()


def test_write_then_read_round_trip(df):
    body = os.urandom(3 * BLOCK_BYTES + 123)
    w = put(df, 100, body, {"X-Object-Meta-K": "v"})
    assert w.etag() == hashlib.md5(body).hexdigest()
    info = df.lookup()
    assert isinstance(info, ObjectInfo)
    assert info.data.content_length == len(body)
    assert info.data.etag == hashlib.md5(body).hexdigest()
    assert info.headers == {"X-Object-Meta-K": "v"}
    assert len(info.data.block_xxh3) == 4 * 8
    assert read_all(df) == body
    assert read_invalid_suffixes(df.layout, 3) == {HASH[-3:]}
    assert os.listdir(df.layout.tmp) == []


def test_empty_object(df):
    put(df, 100, b"")
    assert read_all(df) == b""


def test_partial_reads_cross_blocks(df):
    body = os.urandom(2 * BLOCK_BYTES + 7)
    put(df, 100, body)
    r = df.open()
    for off, n in [(0, 1), (BLOCK_BYTES - 3, 6), (2 * BLOCK_BYTES, 7), (5, 2 * BLOCK_BYTES)]:
        assert r.read(off, n) == body[off : off + n]
    r.close()


def test_write_failure_midway_leaves_old_data_intact(df):
    put(df, 100, b"old data")
    faulty = FaultyDiskFile(df, FaultPlan(fail_write_after_bytes=15_000))
    with pytest.raises(OSError, match="injected"):
        put(faulty, 200, b"n" * 50_000)
    assert read_all(df) == b"old data"
    assert [n for n in os.listdir(df.hash_dir)] == [Timestamp(100).internal + ".data"]


def test_failure_before_rename_leaves_old_data_and_no_temp(df):
    put(df, 100, b"old data")
    faulty = FaultyDiskFile(df, FaultPlan(fail_commit=True))
    with pytest.raises(OSError):
        put(faulty, 200, b"new")
    assert read_all(df) == b"old data"
    assert os.listdir(df.layout.tmp) == []


def test_tombstone_wins_over_older_data_and_cleans_it(df):
    put(df, 100, b"x")
    df.put_tombstone(Timestamp(200))
    assert df.lookup() == Deleted(Timestamp(200))
    assert os.listdir(df.hash_dir) == [Timestamp(200).internal + ".ts"]


def test_newer_data_wins_over_tombstone(df):
    df.put_tombstone(Timestamp(200))
    put(df, 300, b"back")
    assert read_all(df) == b"back"


def test_meta_overlays_user_metadata_only(df):
    put(df, 100, b"x", {"X-Object-Meta-A": "1", "X-Object-Sysmeta-S": "s"})
    df.put_meta(Timestamp(150), {"X-Object-Meta-B": "2"})
    info = df.lookup()
    assert isinstance(info, ObjectInfo)
    assert info.headers == {"X-Object-Meta-B": "2", "X-Object-Sysmeta-S": "s"}
    assert info.timestamp == Timestamp(150) and info.data.timestamp == Timestamp(100)


def test_missing_when_nothing_written(df):
    assert df.lookup() == Missing()
    assert df.open() == Missing()


def test_corrupt_byte_is_detected_and_quarantined(df):
    body = os.urandom(2 * BLOCK_BYTES)
    put(df, 100, body)
    (path,) = [df.hash_dir / n for n in os.listdir(df.hash_dir)]
    with path.open("r+b") as f:
        f.seek(BLOCK_BYTES + 1)
        f.write(b"\x00" if body[BLOCK_BYTES + 1] else b"\x01")
    r = df.open()
    assert r.read(0, 10) == body[:10]  # the first block is still fine
    with pytest.raises(ChecksumMismatch):
        r.read(BLOCK_BYTES, 10)
    assert df.lookup() == Missing()
    dest = df.layout.quarantined / HASH
    assert (dest / path.name).exists()
    assert df.quarantined_to == [dest]


def test_name_mismatch_in_metadata_is_quarantined(df, tmp_path):
    put(df, 100, b"x")
    other = RealDiskFile(df.layout, 3, HASH, "/a/c/other")
    assert other.lookup() == Missing()
    assert (df.layout.quarantined / HASH).exists()


def test_quarantine_twice_keeps_both(df):
    put(df, 100, b"x")
    df.quarantine()
    put(df, 200, b"y")
    df.quarantine()
    assert sorted(os.listdir(df.layout.quarantined)) == [HASH, f"{HASH}-1"]


def test_verify_file_checks_every_block_and_the_md5(df):
    body = os.urandom(3 * BLOCK_BYTES + 5)
    put(df, 100, body)
    (path,) = [df.hash_dir / n for n in os.listdir(df.hash_dir)]
    assert list(verify_file(path, step_bytes=BLOCK_BYTES)) == [
        BLOCK_BYTES,
        2 * BLOCK_BYTES,
        3 * BLOCK_BYTES,
        len(body),
    ]
    assert load_metadata(path).etag == hashlib.md5(body).hexdigest()
    with path.open("r+b") as f:
        f.seek(len(body) - 1)
        f.write(bytes([body[-1] ^ 1]))
    with pytest.raises(ChecksumMismatch):
        list(verify_file(path))


def test_walk_hash_dirs_finds_what_was_written(df):
    put(df, 100, b"x")
    df.put_tombstone(Timestamp(50))  # older than the data: cleaned up at once
    assert list(walk_hash_dirs(df.layout)) == [(3, HASH[-3:], df.hash_dir)]
