"""The one-step small object write (objectd/smallwrite.py) on real files."""

from __future__ import annotations

import hashlib
import os

import pytest
import xxhash

from common.timestamps import Timestamp
from objectd import smallwrite
from objectd.diskfile import DiskFull, ObjectInfo, RealDiskFile, verify_file
from objectd.fileformat import ObjectMetadata
from objectd.layout import DeviceLayout, read_invalid_suffixes
from objectd.smallwrite import SMALL_WRITE_BYTES_MAX, body_checksums, write_small_data

HASH = "0123456789abcdef0123456789abcdef"
NAME = "/a/c/o"


@pytest.fixture
def df(tmp_path):
    (tmp_path / "sda").mkdir()
    return RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, NAME)


def md(ts: int, headers: dict[str, str] | None = None) -> ObjectMetadata:
    return ObjectMetadata(
        kind="data", name=NAME, timestamp=Timestamp(ts), content_type="a/b", headers=headers or {}
    )


def small(df, ts: int, body: bytes, etag: str = "", cleanup: bool = True) -> str | None:
    return write_small_data(df, body, md(ts), 0, etag, lambda: False, cleanup=cleanup)


def streamed(df: RealDiskFile, ts: int, body: bytes) -> bytes:
    w = df.writer(len(body), 0)
    if body:
        w.write(body)
    w.commit(md(ts))
    return (df.hash_dir / f"{Timestamp(ts).internal}.data").read_bytes()


@pytest.mark.parametrize("size", [0, 1, 4096, SMALL_WRITE_BYTES_MAX])
def test_same_file_as_the_streaming_writer(tmp_path, size):
    body = os.urandom(size)
    (tmp_path / "one" / "sda").mkdir(parents=True)
    (tmp_path / "two" / "sda").mkdir(parents=True)
    one = RealDiskFile(DeviceLayout(tmp_path / "one", "sda"), 3, HASH, NAME)
    two = RealDiskFile(DeviceLayout(tmp_path / "two", "sda"), 3, HASH, NAME)
    assert small(one, 5, body) == hashlib.md5(body).hexdigest()
    written = (one.hash_dir / f"{Timestamp(5).internal}.data").read_bytes()
    assert written == streamed(two, 5, body)
    assert list(verify_file(one.hash_dir / f"{Timestamp(5).internal}.data")) in ([], [size])


def test_readable_with_metadata_and_suffix_invalidated(df):
    assert write_small_data(
        df, b"hello", md(7, {"X-Object-Meta-A": "b"}), 0, "", lambda: False, cleanup=False
    )
    found = df.lookup()
    assert isinstance(found, ObjectInfo)
    assert found.data.etag == hashlib.md5(b"hello").hexdigest()
    assert found.data.content_length == 5
    assert found.headers["X-Object-Meta-A"] == "b"
    assert read_invalid_suffixes(df.layout, 3) == {HASH[-3:]}
    assert os.listdir(df.layout.tmp) == []


def test_block_checksums_match_per_block(df):
    body = os.urandom(3 * 1000 + 7)
    etag, digests = body_checksums(body, block_bytes=1000)
    assert etag == hashlib.md5(body).hexdigest()
    assert len(digests) == 4 * 8
    assert digests[-8:] == xxhash.xxh3_64_digest(body[3000:])


def test_wrong_etag_writes_nothing(df):
    assert small(df, 5, b"body", etag="0" * 32) is None
    assert not df.hash_dir.exists()
    assert not df.layout.tmp.exists() or os.listdir(df.layout.tmp) == []


def test_gave_up_commits_nothing_and_leaves_no_temp_file(df):
    got = write_small_data(df, b"body", md(5), 0, "", lambda: True, cleanup=True)
    assert got is None
    assert not df.hash_dir.exists()
    assert os.listdir(df.layout.tmp) == []


def test_reserve_refuses_before_any_file(df):
    with pytest.raises(DiskFull):
        write_small_data(df, b"body", md(5), 1 << 62, "", lambda: False, cleanup=True)
    assert not df.layout.tmp.exists()
    assert not df.hash_dir.exists()


def test_missing_tmp_dir_is_created(df):
    small(df, 5, b"one")
    os.rmdir(df.layout.tmp)
    assert small(df, 6, b"two") == hashlib.md5(b"two").hexdigest()
    assert isinstance(df.lookup(), ObjectInfo)


def test_cleanup_flag_decides_whether_the_old_file_goes(df):
    small(df, 5, b"one")
    small(df, 6, b"two", cleanup=False)
    assert len(os.listdir(df.hash_dir)) == 2  # the hasher removes the older one later
    small(df, 7, b"three", cleanup=True)
    assert os.listdir(df.hash_dir) == [f"{Timestamp(7).internal}.data"]
    found = df.lookup()
    assert isinstance(found, ObjectInfo) and found.data.timestamp == Timestamp(7)


def test_a_taken_temp_name_is_skipped_not_overwritten(df):
    small(df, 5, b"one")  # makes tmp/
    token = smallwrite._tmp_token()  # this process's prefix + counter, as the writer uses
    prefix, count = token[:16], int(token[16:], 16)
    taken = df.layout.tmp / f"{df.hash_hex}.{prefix}{count + 1:x}.tmp"
    taken.write_bytes(b"someone else's")
    assert small(df, 6, b"two") == hashlib.md5(b"two").hexdigest()
    assert taken.read_bytes() == b"someone else's"
    assert os.listdir(df.layout.tmp) == [taken.name]
