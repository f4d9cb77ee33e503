"""makedirs_durable for hash directories: made in one mkdir, or with its parents when missing;
and the device layout's paths."""

from __future__ import annotations

from pathlib import Path

from common.fsutil import makedirs_durable
from objectd.layout import DeviceLayout


def test_makes_the_leaf_its_parents_or_nothing(tmp_path: Path) -> None:
    layout = DeviceLayout(tmp_path, "sda")
    deep = layout.hash_dir(7, "ab" * 16)
    makedirs_durable(deep)  # every parent missing
    assert deep.is_dir()
    sibling = layout.hash_dir(7, "cd" * 15 + "ab")  # same partition, new suffix dir
    makedirs_durable(sibling)
    assert sibling.is_dir()
    (deep / "keep").write_bytes(b"x")
    makedirs_durable(deep)  # already there: left alone
    assert (deep / "keep").read_bytes() == b"x"


def test_device_paths_are_the_same_objects_each_time(tmp_path: Path) -> None:
    a, b = DeviceLayout(tmp_path, "sda"), DeviceLayout(tmp_path, "sda")
    assert a.root is b.root and a.tmp is b.tmp and a.objects is b.objects
    assert a.root == tmp_path / "sda" and a.tmp == tmp_path / "sda" / "tmp"
    assert a.quarantined == tmp_path / "sda" / "quarantined" / "objects"
    assert a.async_pending == tmp_path / "sda" / "async_pending"
    assert DeviceLayout(tmp_path, "sdb").root == tmp_path / "sdb"
    assert a.hash_dir(3, "0" * 29 + "abc") == tmp_path / "sda/objects/3/abc" / ("0" * 29 + "abc")


def test_str_paths_relative_and_with_a_trailing_slash(tmp_path: Path, monkeypatch) -> None:
    makedirs_durable(f"{tmp_path}/a/")  # the parent fsynced is tmp_path, not .../a
    makedirs_durable(str(tmp_path / "a" / "b" / "c"))  # a parent missing: the walk
    assert (tmp_path / "a" / "b" / "c").is_dir()
    monkeypatch.chdir(tmp_path)
    makedirs_durable("leaf")  # its parent is "."
    assert (tmp_path / "leaf").is_dir()
