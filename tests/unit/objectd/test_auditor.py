"""The object auditor on real files: quarantine, and the full pass's suffix-hash refresh.

A file lost behind the object server's back (deleted by hand, a whole directory removed,
lost by a failing disk) leaves no entry in hashes.invalid, so the cached suffix hash keeps
claiming it. A full auditor pass must refresh the hashes of every partition it walks, so the
next REPLICATE shows the loss to the peers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from common.clock import ManualClock
from common.timestamps import Timestamp
from objectd.auditor import AuditorConf, AuditorStats, ObjectAuditor
from objectd.diskfile import RealDiskFile
from objectd.fileformat import ObjectMetadata
from objectd.hashes import HASHES_CACHE, decode_cache, get_hashes
from objectd.layout import DeviceLayout, read_invalid_suffixes
from ring.hashing import hash_path

NOW = 1_700_000_000.0
DAY = 86400.0
PREFIX, SUFFIX = "pre", "suf"


@pytest.fixture
def layout(tmp_path: Path) -> DeviceLayout:
    (tmp_path / "sda").mkdir()
    return DeviceLayout(tmp_path, "sda")


def put(layout: DeviceLayout, part: int, obj: str, body: bytes = b"x" * 5000) -> RealDiskFile:
    hash_hex = hash_path(PREFIX, SUFFIX, "a", "c", obj)
    df = RealDiskFile(layout, part, hash_hex, f"/a/c/{obj}")
    w = df.writer(len(body), 0)
    w.write(body)
    md = ObjectMetadata(kind="data", name=f"/a/c/{obj}", timestamp=Timestamp.from_float(NOW - 60))
    w.commit(md)
    return df


def cached(layout: DeviceLayout, part: int) -> dict[str, str] | None:
    """What a REPLICATE would answer without recomputing anything: the cache as stored."""
    try:
        return decode_cache((layout.partition_dir(part) / HASHES_CACHE).read_bytes())
    except FileNotFoundError:
        return None


def hashes(layout: DeviceLayout, part: int, **kw: object) -> dict[str, str]:
    return get_hashes(layout, part, now_s=NOW, reclaim_age_s=7 * DAY, **kw)  # type: ignore[arg-type]


def audit(layout: DeviceLayout, zero_byte_only: bool = False) -> AuditorStats:
    conf = AuditorConf(
        devices_dir=layout.root.parent,
        hash_path_prefix=PREFIX,
        hash_path_suffix=SUFFIX,
        bytes_per_s=0,
        zero_byte_only=zero_byte_only,
    )
    return asyncio.run(ObjectAuditor(conf, ManualClock(NOW)).run_once())


def data_file(df: RealDiskFile) -> Path:
    return next(p for p in df.hash_dir.iterdir() if p.suffix == ".data")


def test_a_file_deleted_by_hand_shows_in_the_hashes_after_a_full_pass(
    layout: DeviceLayout,
) -> None:
    a, b = put(layout, 3, "a"), put(layout, 3, "b")
    before = hashes(layout, 3)
    os.unlink(data_file(a))
    # No writer recorded the loss: the cached answer still claims the file.
    assert hashes(layout, 3) == before
    st = audit(layout)
    assert st.partitions_rehashed == 1 and st.stale_suffixes == 1
    now = cached(layout, 3)
    assert now is not None and a.hash_hex[-3:] not in now
    assert now[b.hash_hex[-3:]] == before[b.hash_hex[-3:]]
    assert hashes(layout, 3) == now


def test_a_partition_emptied_by_hand_shows_in_the_hashes_after_a_full_pass(
    layout: DeviceLayout,
) -> None:
    # The only object of partition 7 goes with its whole suffix dir: nothing is left to
    # walk there, yet the cache still lists the suffix.
    gone = put(layout, 7, "only")
    keep = put(layout, 8, "other")
    assert hashes(layout, 7) and hashes(layout, 8)
    shutil.rmtree(gone.hash_dir.parent)
    assert cached(layout, 7) != {}
    st = audit(layout)
    assert cached(layout, 7) == {}
    assert st.stale_suffixes == 1 and st.files_checked == 1
    assert keep.hash_hex[-3:] in hashes(layout, 8)


def test_a_corrupt_file_is_quarantined_and_its_suffix_loses_it(layout: DeviceLayout) -> None:
    bad, good = put(layout, 4, "bad"), put(layout, 4, "good")
    before = hashes(layout, 4)
    with open(data_file(bad), "r+b") as f:
        f.seek(2000)
        f.write(b"\xff\x00\xff")
    st = audit(layout)
    assert st.quarantined == 1 and st.errors == 0
    assert not bad.hash_dir.exists()
    assert os.listdir(layout.quarantined) == [bad.hash_hex]
    # Recorded as an invalidation, not found stale: the auditor told the hasher itself.
    assert st.stale_suffixes == 0
    after = hashes(layout, 4)
    assert bad.hash_hex[-3:] not in after
    assert after[good.hash_hex[-3:]] == before[good.hash_hex[-3:]]
    assert read_invalid_suffixes(layout, 4) == set()


def test_the_zero_byte_pass_leaves_the_hashes_alone(layout: DeviceLayout) -> None:
    a = put(layout, 3, "a")
    before = hashes(layout, 3)
    os.unlink(data_file(a))
    st = audit(layout, zero_byte_only=True)
    assert st.partitions_rehashed == 0
    assert cached(layout, 3) == before


def test_a_clean_device_finds_nothing_stale(layout: DeviceLayout) -> None:
    for i in range(5):
        put(layout, i % 2, f"o{i}")
    first = {p: hashes(layout, p) for p in (0, 1)}
    mtimes = {p: (layout.partition_dir(p) / HASHES_CACHE).stat().st_mtime_ns for p in (0, 1)}
    st = audit(layout)
    assert st.partitions_rehashed == 2 and st.stale_suffixes == 0 and st.files_checked == 5
    assert {p: cached(layout, p) for p in (0, 1)} == first
    # Nothing changed, so nothing was rewritten.
    assert {p: (layout.partition_dir(p) / HASHES_CACHE).stat().st_mtime_ns for p in (0, 1)} == (
        mtimes
    )
