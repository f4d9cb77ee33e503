"""A new partition's hashes.invalid is created holding the first writer's suffix line, locked
before it is linked into place (objectd/layout.py `open_locked_appending`): real files, real
flocks, real threads."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

from objectd.layout import (
    HASHES_INVALID,
    HASHES_INVALID_HEADER,
    DeviceLayout,
    open_locked,
    open_locked_appending,
    read_invalid_suffixes,
    suffix_invalidated,
)


@pytest.fixture
def layout(tmp_path: Path) -> DeviceLayout:
    (tmp_path / "sda").mkdir()
    return DeviceLayout(tmp_path, "sda")


def _exclusive_now(path: Path) -> bool:
    """Whether the hasher's exclusive lock could be taken on `path` right now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_a_new_partition_file_holds_the_line_and_is_locked_until_the_block_ends(
    layout: DeviceLayout,
) -> None:
    path = layout.partition_dir(7) / HASHES_INVALID
    with suffix_invalidated(layout, 7, "abc"):
        assert path.read_bytes() == HASHES_INVALID_HEADER + b"abc\n"
        assert not _exclusive_now(path)  # the hasher waits until the rename is done
    assert _exclusive_now(path)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with suffix_invalidated(layout, 7, "def"):  # an existing file: appended
        pass
    assert path.read_bytes() == HASHES_INVALID_HEADER + b"abc\ndef\n"


def test_racing_writers_on_a_new_partition_agree_on_one_file(layout: DeviceLayout) -> None:
    suffixes = [f"{i:03x}" for i in range(16)]
    start = threading.Barrier(len(suffixes))

    def write(suffix: str) -> None:
        start.wait()
        with suffix_invalidated(layout, 3, suffix):
            pass

    threads = [threading.Thread(target=write, args=(s,)) for s in suffixes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = (layout.partition_dir(3) / HASHES_INVALID).read_bytes()
    assert data.startswith(HASHES_INVALID_HEADER) and data.count(HASHES_INVALID_HEADER) == 1
    assert sorted(data[len(HASHES_INVALID_HEADER) :].split()) == [s.encode() for s in suffixes]
    assert read_invalid_suffixes(layout, 3) == set(suffixes)


def test_the_hasher_still_creates_a_header_only_file(layout: DeviceLayout) -> None:
    path = layout.partition_dir(9) / HASHES_INVALID
    fd = open_locked(path, fcntl.LOCK_EX)
    os.close(fd)
    assert path.read_bytes() == HASHES_INVALID_HEADER


def test_open_locked_appending_says_whether_the_line_went_in(layout: DeviceLayout) -> None:
    path = layout.partition_dir(5) / HASHES_INVALID
    fd, appended = open_locked_appending(path, fcntl.LOCK_SH, b"abc\n")
    os.close(fd)
    assert appended and path.read_bytes() == HASHES_INVALID_HEADER + b"abc\n"
    fd, appended = open_locked_appending(path, fcntl.LOCK_SH, b"def\n")
    os.close(fd)
    assert not appended and path.read_bytes() == HASHES_INVALID_HEADER + b"abc\n"


def test_a_pool_writer_in_a_young_partition_fsyncs_its_directories(
    layout: DeviceLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A list made on an event loop is still linked under its creator's temp name until the
    # creator's step has fsynced the partition's directories: a writer on the pool path
    # (which may acknowledge first) fsyncs them itself.
    import objectd.layout

    pdir = layout.partition_dir(7)
    pdir.mkdir(parents=True)
    (pdir / HASHES_INVALID).write_bytes(HASHES_INVALID_HEADER)
    synced: list[Path] = []
    monkeypatch.setattr(objectd.layout, "fsync_dir", lambda p: synced.append(Path(p)))
    with suffix_invalidated(layout, 7, "abc"):
        pass
    assert synced == []  # an ordinary list: nothing more to sync
    os.link(pdir / HASHES_INVALID, pdir / f".{HASHES_INVALID}.1.ab.tmp")
    with suffix_invalidated(layout, 7, "def"):
        pass
    assert synced == [pdir.parent, pdir]
