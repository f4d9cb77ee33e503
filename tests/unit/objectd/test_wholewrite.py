"""The one-step write of a body already whole in memory (objectd/wholewrite.py) on real files."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from common.fsutil import writev_all
from common.timestamps import Timestamp
from objectd import wholewrite
from objectd.diskfile import DiskFull, RealDiskFile, verify_file
from objectd.fileformat import ObjectMetadata
from objectd.layout import DeviceLayout, read_invalid_suffixes
from objectd.wholewrite import (
    MID_BODY_BYTES_MAX,
    block_digests,
    write_whole_data,
)

HASH = "0123456789abcdef0123456789abcdef"
NAME = "/a/c/o"


@pytest.fixture
def df(tmp_path: Path) -> RealDiskFile:
    (tmp_path / "sda").mkdir()
    return RealDiskFile(DeviceLayout(tmp_path, "sda"), 3, HASH, NAME)


def md(ts: int, body: bytes) -> ObjectMetadata:
    return ObjectMetadata(
        kind="data",
        name=NAME,
        timestamp=Timestamp(ts),
        content_type="a/b",
        etag=hashlib.md5(body).hexdigest(),
    )


def streamed(df: RealDiskFile, ts: int, body: bytes) -> bytes:
    w = df.writer(len(body), 0)
    if body:
        w.write(body)
    w.commit(md(ts, body))
    return (df.hash_dir / f"{Timestamp(ts).internal}.data").read_bytes()


@pytest.mark.parametrize("size", [0, 65537, 512 * 1024 + 5, MID_BODY_BYTES_MAX])
def test_same_file_as_the_streaming_writer(tmp_path: Path, size: int) -> None:
    body = os.urandom(size)
    (tmp_path / "one" / "sda").mkdir(parents=True)
    (tmp_path / "two" / "sda").mkdir(parents=True)
    one = RealDiskFile(DeviceLayout(tmp_path / "one", "sda"), 3, HASH, NAME)
    two = RealDiskFile(DeviceLayout(tmp_path / "two", "sda"), 3, HASH, NAME)
    view = memoryview(bytearray(body + b"trailer"))[:size]  # a view, as the route passes it
    assert write_whole_data(one, view, md(5, body), 0, lambda: False, cleanup=False)
    path = one.hash_dir / f"{Timestamp(5).internal}.data"
    assert path.read_bytes() == streamed(two, 5, body)
    assert list(verify_file(path))[-1:] == ([size] if size else [])
    assert read_invalid_suffixes(one.layout, 3) == {HASH[-3:]}
    assert not list(one.layout.tmp.iterdir())


def test_gave_up_commits_nothing_and_leaves_no_temp_file(df: RealDiskFile) -> None:
    body = os.urandom(70000)
    assert not write_whole_data(df, body, md(5, body), 0, lambda: True, cleanup=False)
    assert df.lookup().__class__.__name__ == "Missing"
    assert not list(df.layout.tmp.iterdir())


def test_reserve_refuses_before_any_file(df: RealDiskFile) -> None:
    body = b"x" * 70000
    with pytest.raises(DiskFull):
        write_whole_data(df, body, md(5, body), 1 << 62, lambda: False, cleanup=False)
    assert not df.layout.tmp.exists() or not list(df.layout.tmp.iterdir())


def test_cleanup_flag_decides_whether_the_old_file_goes(df: RealDiskFile) -> None:
    old, new = b"o" * 70000, b"n" * 70000
    assert write_whole_data(df, old, md(5, old), 0, lambda: False, cleanup=False)
    assert write_whole_data(df, new, md(6, new), 0, lambda: False, cleanup=False)
    assert len(list(df.hash_dir.iterdir())) == 2  # the hasher removes the older one
    newer = b"m" * 70000
    assert write_whole_data(df, newer, md(7, newer), 0, lambda: False, cleanup=True)
    assert [p.name for p in df.hash_dir.iterdir()] == [f"{Timestamp(7).internal}.data"]


@pytest.mark.parametrize("seed", range(8))
def test_a_body_in_parts_is_the_same_file(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    body = rnd.randbytes(rnd.choice([65536 * 3, 1000, MID_BODY_BYTES_MAX, 300_001]))
    cuts = sorted(rnd.sample(range(1, len(body)), rnd.randint(1, 9)))
    bounds = zip([0, *cuts], [*cuts, len(body)], strict=True)
    parts = [memoryview(body)[lo:hi] for lo, hi in bounds]
    assert block_digests(parts) == block_digests(body)  # blocks spanning parts hashed right
    (tmp_path / "one" / "sda").mkdir(parents=True)
    (tmp_path / "two" / "sda").mkdir(parents=True)
    one = RealDiskFile(DeviceLayout(tmp_path / "one", "sda"), 3, HASH, NAME)
    two = RealDiskFile(DeviceLayout(tmp_path / "two", "sda"), 3, HASH, NAME)
    assert write_whole_data(one, parts, md(5, body), 0, lambda: False, cleanup=False)
    path = one.hash_dir / f"{Timestamp(5).internal}.data"
    assert path.read_bytes() == streamed(two, 5, body)


def test_a_body_in_very_many_parts_is_written_in_batches_never_joined(
    df: RealDiskFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = os.urandom(2051)
    parts = [memoryview(body)[i : i + 2] for i in range(0, len(body), 2)]
    assert len(parts) > 1024  # more than one writev takes
    handed: list[list[memoryview]] = []

    def recording(fd: int, views: list[memoryview]) -> None:
        handed.append(views)
        writev_all(fd, views)  # diskfile's: batches of at most 512 buffers per writev

    monkeypatch.setattr(wholewrite, "writev_all", recording)
    assert write_whole_data(df, parts, md(5, body), 0, lambda: False, cleanup=False)
    [views] = handed
    assert len(views) == len(parts) + 1  # every part as it came, then the footer
    path = df.hash_dir / f"{Timestamp(5).internal}.data"
    assert path.read_bytes()[: len(body)] == body and list(verify_file(path))[-1] == len(body)
