"""Suffix hashes on real files: caching, invalidation consumption, reclaim, cleanup."""

from __future__ import annotations

import os
import shutil

import pytest

from common.timestamps import Timestamp
from objectd import hashes as H
from objectd.diskfile import RealDiskFile
from objectd.fileformat import ObjectMetadata
from objectd.hashes import HASHES_CACHE, HashStats, decode_cache, encode_cache, get_hashes
from objectd.layout import (
    HASHES_INVALID,
    HASHES_INVALID_HEADER,
    DeviceLayout,
    invalidate_suffix,
    read_invalid_suffixes,
)

NOW = 1_700_000_000.0
DAY = 86400.0
PART = 5


@pytest.fixture
def layout(tmp_path):
    (tmp_path / "sda").mkdir()
    return DeviceLayout(tmp_path, "sda")


def _hash(n: int, suffix: str = "abc") -> str:
    return f"{n:029x}{suffix}"


def put(layout, hash_hex: str, ts: float, body: bytes = b"data") -> RealDiskFile:
    df = RealDiskFile(layout, PART, hash_hex, "/a/c/o")
    w = df.writer(len(body), 0)
    w.write(body)
    w.commit(ObjectMetadata(kind="data", name="/a/c/o", timestamp=Timestamp.from_float(ts)))
    return df


def hashes(layout, now=NOW, reclaim=7 * DAY, **kw):
    return get_hashes(layout, PART, now_s=now, reclaim_age_s=reclaim, **kw)


def test_an_empty_or_missing_partition_has_no_hashes(layout):
    assert hashes(layout) == {}
    layout.partition_dir(PART).mkdir(parents=True)
    assert hashes(layout) == {}


def test_hashes_change_with_writes_and_are_stable_otherwise(layout):
    df = put(layout, _hash(1), NOW - 10)
    first = hashes(layout)
    assert set(first) == {"abc"} and len(first["abc"]) == 32
    assert hashes(layout) == first
    df.put_meta(Timestamp.from_float(NOW - 5), {"X-Object-Meta-A": "1"})
    second = hashes(layout)
    assert second["abc"] != first["abc"]
    df.put_tombstone(Timestamp.from_float(NOW - 1))
    third = hashes(layout)
    assert third["abc"] not in (first["abc"], second["abc"])


def test_same_files_on_two_devices_give_the_same_hash(tmp_path):
    a, b = (DeviceLayout(tmp_path, d) for d in ("sda", "sdb"))
    for lay in (a, b):
        (tmp_path / lay.device).mkdir()
        put(lay, _hash(1), NOW - 10, b"one")
        put(lay, _hash(2, "def"), NOW - 9, b"two")
    assert hashes(a) == hashes(b)
    put(b, _hash(2, "def"), NOW - 8, b"newer")
    ha, hb = hashes(a), hashes(b)
    assert ha["abc"] == hb["abc"] and ha["def"] != hb["def"]


def test_invalid_list_is_consumed_and_the_cache_is_used(layout):
    put(layout, _hash(1), NOW - 10)
    assert read_invalid_suffixes(layout, PART) == {"abc"}
    hashes(layout)
    part_dir = layout.partition_dir(PART)
    assert (part_dir / HASHES_INVALID).read_bytes() == HASHES_INVALID_HEADER
    assert decode_cache((part_dir / HASHES_CACHE).read_bytes()) == hashes(layout)
    # A change made behind the hasher's back (no invalidation) is not seen: the cache is
    # trusted until the suffix is invalidated or recalculated on request.
    os.unlink(next((part_dir / "abc" / _hash(1)).iterdir()))
    assert "abc" in hashes(layout)
    assert "abc" not in hashes(layout, recalculate=["abc"])


def test_entries_appended_while_hashing_are_kept(layout):
    put(layout, _hash(1), NOW - 10)
    path = layout.partition_dir(PART) / HASHES_INVALID
    # The hasher's two locked steps, with a writer invalidating another suffix in between.
    consumed, listed = H._read_invalid(path)
    assert listed == {"abc"}
    invalidate_suffix(layout, PART, "fff")
    H._consume_invalid(path, consumed, [])
    assert read_invalid_suffixes(layout, PART) == {"fff"}
    assert path.read_bytes() == HASHES_INVALID_HEADER + b"fff\n"


def test_a_damaged_cache_means_a_full_rehash(layout):
    put(layout, _hash(1), NOW - 10)
    good = hashes(layout)
    (layout.partition_dir(PART) / HASHES_CACHE).write_bytes(b"\x93garbage")
    assert hashes(layout) == good


def test_a_damaged_invalid_file_means_a_full_rehash(layout):
    put(layout, _hash(1), NOW - 10)
    good = hashes(layout)
    os.unlink(next((layout.partition_dir(PART) / "abc" / _hash(1)).iterdir()))
    (layout.partition_dir(PART) / HASHES_INVALID).write_bytes(b"not a header\n")
    assert hashes(layout) == {} != good


def test_old_tombstones_are_reclaimed_and_empty_dirs_removed(layout):
    df = put(layout, _hash(1), NOW - 30 * DAY)
    df.put_tombstone(Timestamp.from_float(NOW - 8 * DAY))
    st = HashStats()
    assert hashes(layout, stats=st) == {}
    assert st.tombstones_reclaimed == 1
    assert not (layout.partition_dir(PART) / "abc").exists()


def test_young_tombstones_stay(layout):
    df = put(layout, _hash(1), NOW - 30 * DAY)
    df.put_tombstone(Timestamp.from_float(NOW - DAY))
    assert "abc" in hashes(layout)
    names = os.listdir(layout.partition_dir(PART) / "abc" / _hash(1))
    assert names == [Timestamp.from_float(NOW - DAY).internal + ".ts"]


def test_obsolete_files_are_removed_while_hashing(layout):
    hd = layout.partition_dir(PART) / "abc" / _hash(1)
    put(layout, _hash(1), NOW - 10)
    newer = put(layout, _hash(1), NOW - 5)
    # Plant an obsolete file the way a crash between rename and cleanup would leave it.
    older = Timestamp.from_float(NOW - 20).internal + ".data"
    os.link(next(hd.iterdir()), hd / older)
    invalidate_suffix(layout, PART, "abc")
    st = HashStats()
    hashes(layout, stats=st)
    assert st.files_removed == 1
    assert sorted(os.listdir(hd)) == [Timestamp.from_float(NOW - 5).internal + ".data"]
    assert newer.lookup()


def test_cache_codec_round_trip_and_refusals():
    m = {"abc": "0" * 32, "fff": "f" * 32}
    assert decode_cache(encode_cache(m)) == m
    assert decode_cache(b"") is None
    assert decode_cache(encode_cache({"abcd": "0" * 32})) is None
    assert decode_cache(b"\x82\xa1v\x02\xa6hashes\x80") is None  # version 2


def test_concurrent_writers_never_leave_a_stale_cache(layout):
    """Writers in threads race a hasher; the final cached map equals a from-scratch one."""
    import threading

    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(6):
                put(layout, _hash(k * 100 + i, f"{(k * 7 + i) % 5:03x}"), NOW - 50 + i)
        except BaseException as e:  # surfaced below
            errors.append(e)

    def hasher() -> None:
        while not stop.wait(0.005):
            hashes(layout)

    h = threading.Thread(target=hasher)
    h.start()
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    h.join()
    assert not errors
    cached = hashes(layout)
    (layout.partition_dir(PART) / HASHES_CACHE).unlink()
    assert cached == hashes(layout)
    assert len(cached) == 5


def test_a_handoff_partition_is_kept_if_a_write_arrived_after_the_push(layout):
    from objectd.partition import local_partitions, remove_partition

    put(layout, _hash(1), NOW - 10)
    pushed = hashes(layout)
    put(layout, _hash(2), NOW - 5)  # lands after the push started
    assert remove_partition(layout, PART, pushed) is False
    assert local_partitions(layout) == [PART]
    now = hashes(layout)
    assert remove_partition(layout, PART, pushed) is False  # cache differs from the push
    assert remove_partition(layout, PART, now) is True
    assert local_partitions(layout) == []
    assert os.listdir(layout.tmp) == []  # renamed aside, then deleted


def test_the_cache_is_rewritten_only_when_its_content_changes(layout):
    # A REPLICATE that asks for a recalculation (or meets an invalidation) whose result is
    # what the cache already says must not replace the file (a temp write and two fsyncs).
    put(layout, _hash(1), NOW - 10)
    first = hashes(layout)
    cache = layout.partition_dir(PART) / HASHES_CACHE
    inode = cache.stat().st_ino
    assert hashes(layout, recalculate=["abc", "fff"]) == first
    assert cache.stat().st_ino == inode
    invalidate_suffix(layout, PART, "abc")
    assert hashes(layout) == first
    assert cache.stat().st_ino == inode
    assert hashes(layout, full=True) == first
    assert cache.stat().st_ino == inode
    assert read_invalid_suffixes(layout, PART) == set()
    put(layout, _hash(2), NOW - 5)
    assert hashes(layout) != first
    assert cache.stat().st_ino != inode


def test_a_full_rehash_sees_what_no_writer_recorded(layout):
    put(layout, _hash(1), NOW - 10)
    put(layout, _hash(2, "def"), NOW - 10)
    put(layout, _hash(3, "fed"), NOW - 10)
    hashes(layout)
    part_dir = layout.partition_dir(PART)
    os.unlink(next((part_dir / "abc" / _hash(1)).iterdir()))  # behind the server's back
    put(layout, _hash(2, "def"), NOW - 5)  # a recorded change: not stale
    shutil.rmtree(part_dir / "fed")  # a whole suffix dir gone by hand
    st = HashStats()
    got = hashes(layout, full=True, stats=st)
    assert set(got) == {"def"}
    assert st.stale_suffixes == 2
    assert not (part_dir / "abc").exists()  # the emptied dirs are cleaned up
    assert got == hashes(layout)


def test_a_tombstone_reclaimed_by_a_full_rehash_is_not_counted_stale(layout):
    df = put(layout, _hash(1), NOW - 30 * DAY)
    df.put_tombstone(Timestamp.from_float(NOW - 8 * DAY))
    assert "abc" in hashes(layout, reclaim=9 * DAY)
    st = HashStats()
    assert hashes(layout, full=True, stats=st) == {}
    assert st.tombstones_reclaimed == 1 and st.stale_suffixes == 0
