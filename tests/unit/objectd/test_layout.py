"""Choosing current files in a hash dir, suffix invalidation and quarantine paths."""

from __future__ import annotations

import pytest

from objectd.layout import (
    HASHES_INVALID_HEADER,
    DeviceLayout,
    invalidate_suffix,
    read_invalid_suffixes,
    select_files,
)

T1, T2, T3 = "1700000001.00000", "1700000002.00000", "1700000003.00000"


def test_newest_data_wins_and_older_are_obsolete():
    f = select_files([f"{T1}.data", f"{T2}.data"])
    assert f.file_name() == f"{T2}.data" and f.obsolete == (f"{T1}.data",)


def test_tombstone_newer_than_data_wins():
    f = select_files([f"{T1}.data", f"{T2}.ts", f"{T3}.meta"])
    assert f.file_name() == f"{T2}.ts"
    assert f.meta is None
    assert set(f.obsolete) == {f"{T1}.data", f"{T3}.meta"}


def test_data_newer_than_tombstone_wins():
    f = select_files([f"{T1}.ts", f"{T2}.data"])
    assert f.file_name() == f"{T2}.data" and f.obsolete == (f"{T1}.ts",)


def test_meta_applies_only_above_data():
    f = select_files([f"{T1}.data", f"{T3}.meta", f"{T2}.meta"])
    assert f.meta_name() == f"{T3}.meta"
    assert f.obsolete == (f"{T2}.meta",)
    old_meta = select_files([f"{T1}.meta", f"{T2}.data"])
    assert old_meta.meta is None and old_meta.obsolete == (f"{T1}.meta",)


def test_offsets_order_within_the_same_time():
    f = select_files([f"{T1}.data", f"{T1}_0000000000000001.ts"])
    assert f.file_name() == f"{T1}_0000000000000001.ts"


@pytest.mark.parametrize(
    "name", ["junk", "1.data", "1700000001.00000.data.tmp", ".x.tmp", "1700000001.00000.DATA"]
)
def test_foreign_names_are_ignored(name):
    f = select_files([name])
    assert f.base is None and f.obsolete == ()


def test_invalidate_suffix_appends_after_a_version_header(tmp_path):
    layout = DeviceLayout(tmp_path, "sda")
    invalidate_suffix(layout, 5, "abc")
    invalidate_suffix(layout, 5, "abc")
    invalidate_suffix(layout, 5, "f00")
    raw = (layout.partition_dir(5) / "hashes.invalid").read_bytes()
    assert raw == HASHES_INVALID_HEADER + b"abc\nabc\nf00\n"
    assert read_invalid_suffixes(layout, 5) == {"abc", "f00"}
    assert read_invalid_suffixes(layout, 6) == set()


@pytest.mark.parametrize("device", ["..", ".", "a/b", "", "x" * 65])
def test_bad_device_names_are_refused(tmp_path, device):
    with pytest.raises(AssertionError):
        DeviceLayout(tmp_path, device)
