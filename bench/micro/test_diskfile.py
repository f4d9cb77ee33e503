"""Object write (with fsync of file and directory) and read on one device, via objectd.diskfile."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from common.timestamps import Timestamp
from objectd.diskfile import Deleted, Missing, RealDiskFile
from objectd.fileformat import ObjectMetadata
from objectd.layout import DeviceLayout

HASH = "0123456789abcdef0123456789abcdef"
NAME = "/AUTH_bench/c/o"


@pytest.fixture
def diskfile(tmp_path: Path) -> RealDiskFile:
    (tmp_path / "d1").mkdir()
    return RealDiskFile(DeviceLayout(tmp_path, "d1"), 7, HASH, NAME)


def _put(df: RealDiskFile, ts: int, body: bytes, chunk: int = 65536) -> None:
    w = df.writer(len(body), 0)
    for i in range(0, len(body), chunk):
        w.write(body[i : i + chunk])
    w.commit(ObjectMetadata(kind="data", name=NAME, timestamp=Timestamp(ts)))


@pytest.mark.parametrize("size", [4096, 1 << 20], ids=["4KiB", "1MiB"])
def test_write(benchmark, diskfile: RealDiskFile, size: int) -> None:
    body = os.urandom(size)
    stamps = itertools.count(1_700_000_000)  # each write is newer: old files are cleaned up
    benchmark(lambda: _put(diskfile, next(stamps), body))
    assert len(os.listdir(diskfile.hash_dir)) == 1


@pytest.mark.parametrize("size", [4096, 1 << 20], ids=["4KiB", "1MiB"])
def test_read(benchmark, diskfile: RealDiskFile, size: int) -> None:
    body = os.urandom(size)
    _put(diskfile, 1_700_000_000, body)

    def read() -> bytes:
        r = diskfile.open()
        assert not isinstance(r, Deleted | Missing)
        try:
            return r.read(0, size)
        finally:
            r.close()

    assert benchmark(read) == body
