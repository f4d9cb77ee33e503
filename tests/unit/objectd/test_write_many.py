"""The writer's chunk-list path (write_many / write_chunks): chunks written by writev without
being joined, block digests computed across chunk boundaries. Real files, real fsync."""

from __future__ import annotations

import array
import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.fsutil import writev_all
from common.timestamps import Timestamp
from objectd.diskfile import (
    Deleted,
    Missing,
    RealDiskFile,
    load_metadata,
    verify_file,
    write_chunks,
)
from objectd.faulty import FaultPlan, FaultyDiskFile
from objectd.fileformat import BLOCK_BYTES, ObjectMetadata
from objectd.layout import DeviceLayout

NAME = "/a/c/o"
POOL = os.urandom(4 * BLOCK_BYTES + 4099)


def _df(root: Path) -> RealDiskFile:
    (root / "sda").mkdir(parents=True, exist_ok=True)
    return RealDiskFile(DeviceLayout(root, "sda"), 1, os.urandom(16).hex(), NAME)


def _md(ts: int = 1) -> ObjectMetadata:
    return ObjectMetadata(kind="data", name=NAME, timestamp=Timestamp(ts), content_type="x")


def _block_digests(body: bytes) -> bytes:
    blocks = range(0, len(body), BLOCK_BYTES)
    return b"".join(xxhash.xxh3_64_digest(body[i : i + BLOCK_BYTES]) for i in blocks)


def _cut(body: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for n in sizes:
        out.append(body[at : at + n])
        at += n
    out.append(body[at:])
    return out


# Chunk sizes around the block size, odd ones and empty ones, as the HTTP parser may make.
SIZES = st.lists(
    st.sampled_from([0, 1, 7, 4097, BLOCK_BYTES - 1, BLOCK_BYTES, BLOCK_BYTES + 1, 100_003]),
    max_size=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=SIZES, group=st.integers(min_value=1, max_value=4), md5=st.booleans())
def test_chunk_lists_store_the_same_file_as_one_write(
    tmp_path: Path, sizes: list[int], group: int, md5: bool
) -> None:
    body = POOL[: min(len(POOL), sum(sizes))]
    chunks = _cut(body, sizes)
    df = _df(tmp_path / os.urandom(4).hex())
    w = df.writer(len(body), 0, md5=md5)
    for i in range(0, len(chunks), group):  # several writev calls, each of a few chunks
        write_chunks(w, chunks[i : i + group])
    assert w.bytes_written == len(body)
    if md5:
        w.commit(_md())
    else:
        assert w.body_xxh3_128() == xxhash.xxh3_128_hexdigest(body)
        w.commit(_md(), "e" * 32)
    found = df.lookup()
    assert not isinstance(found, Deleted | Missing)
    md = load_metadata(found.path)
    assert md.block_xxh3 == _block_digests(body)  # blocks spanning chunks hashed right
    assert md.etag == (hashlib.md5(body).hexdigest() if md5 else "e" * 32)
    assert found.path.read_bytes()[: len(body)] == body
    if md5:
        assert list(verify_file(found.path))[-1:] == ([len(body)] if body else [])


def test_single_writes_and_chunk_lists_mix(tmp_path: Path) -> None:
    body = POOL[: 3 * BLOCK_BYTES + 5]
    df = _df(tmp_path)
    w = df.writer(None, 0)
    w.write(body[:10])  # leaves a block open
    write_chunks(
        w, [memoryview(body)[10 : BLOCK_BYTES + 3], b"", body[BLOCK_BYTES + 3 : 2 * BLOCK_BYTES]]
    )
    w.write(bytearray(body[2 * BLOCK_BYTES :]))
    w.commit(_md())
    reader = df.open()
    assert not isinstance(reader, Deleted | Missing)
    assert reader.read(0, len(body)) == body  # every block checked against its digest
    reader.close()


def test_a_memoryview_of_wider_items_is_written_as_its_bytes(tmp_path: Path) -> None:
    words = array.array("H", range(5000))
    df = _df(tmp_path)
    w = df.writer(None, 0)
    write_chunks(w, [memoryview(words), b"!"])
    w.commit(_md())
    found = df.lookup()
    assert not isinstance(found, Deleted | Missing)
    assert found.path.read_bytes()[: len(words) * 2 + 1] == words.tobytes() + b"!"


def _written(
    path: Path, chunks: list[bytes], writev: Callable[[int, list[memoryview]], int]
) -> bytes:
    """What writev_all leaves in a new file at `path` for `chunks`, through `writev`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        writev_all(fd, [memoryview(c) for c in chunks], writev)
    finally:
        os.close(fd)
    return path.read_bytes()


def test_writev_resumes_after_short_writes(tmp_path: Path) -> None:
    """A writev that takes at most 5 bytes a call (a fault-injecting stand-in for a short
    write, which a regular file rarely does) still leaves every byte in order."""
    calls = []

    def short_writev(fd: int, views: list[memoryview]) -> int:
        calls.append(len(views))
        budget, take = 5, []
        for v in views:
            take.append(v[:budget])
            budget -= len(take[-1])
            if not budget:
                break
        return os.writev(fd, take)

    chunks = [b"abc", b"", b"defghijklm", b"n", b"opqrstuvwxyz" * 3]
    assert _written(tmp_path / "f", chunks, short_writev) == b"".join(chunks)
    assert len(calls) == -(-len(b"".join(chunks)) // 5)


def test_a_writev_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as e:
            writev_all(fd, [memoryview(b"x")], lambda _fd, _v: 0)
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)


def test_a_fault_injecting_writer_sees_each_chunk(tmp_path: Path) -> None:
    """write_chunks falls back to one write per chunk, so faults land where the plan says."""
    df = FaultyDiskFile(_df(tmp_path), FaultPlan(fail_write_after_bytes=6))
    w = df.writer(None, 0)
    with pytest.raises(OSError, match="injected"):
        write_chunks(w, [b"abcd", memoryview(b"efgh"), b"ijkl"])
    assert w.bytes_written == 4  # the first chunk went through whole
    w.abort()


def test_a_write_after_abort_is_refused(tmp_path: Path) -> None:
    w = _df(tmp_path).writer(None, 0)
    w.abort()
    with pytest.raises(OSError):
        write_chunks(w, [b"x"])


def test_writev_all_hands_the_kernel_at_most_512_buffers_per_call(tmp_path: Path) -> None:
    sizes: list[int] = []

    def counting_writev(fd: int, views: list[memoryview]) -> int:
        sizes.append(len(views))
        return os.writev(fd, views)

    chunks = [bytes([i % 256]) * 3 for i in range(1300)]
    assert _written(tmp_path / "f", chunks, counting_writev) == b"".join(chunks)
    assert sizes == [512, 512, 276]
