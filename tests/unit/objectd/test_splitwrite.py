"""A PUT's commit split between the event loop and the device's pool (objectd/splitwrite.py),
and `Devices.run_owned`, on real files."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from aiohttp import web

import objectd.splitwrite
from common import fsutil
from common.syncring import SyncRing
from common.timestamps import Timestamp
from objectd.devices import DeviceBusy, Devices
from objectd.diskfile import RealDiskFile
from objectd.hashes import get_hashes
from objectd.layout import (
    HASHES_INVALID,
    HASHES_INVALID_HEADER,
    DeviceLayout,
    read_invalid_suffixes,
)
from objectd.smallwrite import create_tmp
from objectd.splitwrite import (
    Commit,
    commit_split,
    create_partition_now,
    hold_invalidated_now,
    make_hash_dir_now,
)

T = TypeVar("T")
HASH = "0123456789abcdef0123456789abcdef"
PART = 3


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    (tmp_path / "sda").mkdir()
    return Devices(tmp_path, "pre", "suf", mount_check=False, threads_per_device=2)


@pytest.fixture
def df(tmp_path: Path) -> RealDiskFile:
    return RealDiskFile(DeviceLayout(tmp_path, "sda"), PART, HASH, "/a/c/o")


def _tmp_with(df: RealDiskFile, data: bytes) -> Commit:
    tmp, fd = create_tmp(df)
    os.write(fd, data)
    return Commit(tmp, fd)


def _make_partition(df: RealDiskFile) -> Path:
    pdir = df.layout.partition_dir(PART)
    pdir.mkdir(parents=True)
    (pdir / HASHES_INVALID).write_bytes(HASHES_INVALID_HEADER)
    return pdir


def _commit(
    devices: Devices, df: RealDiskFile, c: Commit, name: str, prepare: Callable[[], T]
) -> T | web.Response:
    return asyncio.run(commit_split(devices, "sda", df, c, name, 5, prepare, cleanup=False))


def _tmp_files(df: RealDiskFile) -> list[str]:
    return os.listdir(df.layout.tmp)


def _lock_free(df: RealDiskFile) -> bool:
    fd = os.open(df.layout.partition_dir(PART) / HASHES_INVALID, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _assert_all_released(df: RealDiskFile, c: Commit) -> None:
    """After a commit, whatever its outcome: no temp file, nothing held open, no lock."""
    assert _tmp_files(df) == []
    assert c.fd is None and c.held is None and c.dir_fd is None
    assert _lock_free(df)


def _assert_nothing_renamed_and_all_released(df: RealDiskFile, c: Commit) -> None:
    """After a failed commit: no object, and everything released."""
    assert not (df.hash_dir / "1.data").exists()
    _assert_all_released(df, c)


def test_commit_in_an_existing_partition(devices: Devices, df: RealDiskFile) -> None:
    _make_partition(df)
    c = _tmp_with(df, b"hello")
    assert _commit(devices, df, c, "1.data", lambda: ("etag",)) == ("etag",)
    assert (df.hash_dir / "1.data").read_bytes() == b"hello"
    assert _tmp_files(df) == []
    assert read_invalid_suffixes(df.layout, PART) == {HASH[-3:]}
    assert c.fd is None and c.held is None and c.dir_fd is None
    assert _lock_free(df)  # the shared lock went with the commit


def test_commit_on_a_device_without_objects_dir_creates_it_in_the_pool(
    devices: Devices, df: RealDiskFile
) -> None:
    assert not df.layout.objects.exists()
    c = _tmp_with(df, b"first")
    assert _commit(devices, df, c, "1.data", lambda: "etag") == "etag"
    assert (df.hash_dir / "1.data").read_bytes() == b"first"
    invalid = (df.layout.partition_dir(PART) / HASHES_INVALID).read_bytes()
    assert invalid.startswith(HASHES_INVALID_HEADER)
    assert read_invalid_suffixes(df.layout, PART) == {HASH[-3:]}
    assert _lock_free(df)


def _names_of_invalid(df: RealDiskFile) -> list[str]:
    """The partition directory's hashes.invalid temp names."""
    pdir = df.layout.partition_dir(PART)
    return [n for n in os.listdir(pdir) if n.startswith(f".{HASHES_INVALID}.")]


def test_commit_in_a_new_partition_creates_it_on_the_loop_and_fsyncs_its_parents(
    devices: Devices, df: RealDiskFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    df.layout.objects.mkdir(parents=True)
    synced: list[str] = []
    real_fsync_dir = fsutil.fsync_dir

    def recording_fsync_dir(path: str) -> None:
        # The object is not renamed into place before every directory is durable.
        assert not (df.hash_dir / "1.data").exists()
        synced.append(os.fspath(path))
        real_fsync_dir(path)

    monkeypatch.setattr(objectd.splitwrite, "fsync_dir", recording_fsync_dir)
    made: list[bool] = []
    real_create = objectd.splitwrite.create_partition_now

    def create(d: RealDiskFile) -> tuple[int, str, list[str]] | None:
        out = real_create(d)
        made.append(out is not None)
        return out

    monkeypatch.setattr(objectd.splitwrite, "create_partition_now", create)
    c = _tmp_with(df, b"first")
    assert _commit(devices, df, c, "1.data", lambda: "etag") == "etag"
    assert made == [True]  # made on the loop, not by the pool's makedirs_durable
    assert (df.hash_dir / "1.data").read_bytes() == b"first"
    pdir = os.fspath(df.layout.partition_dir(PART))
    suffix_dir = os.path.dirname(os.fspath(df.hash_dir))
    assert synced == [os.fspath(df.layout.objects), pdir, suffix_dir]
    invalid = df.layout.partition_dir(PART) / HASHES_INVALID
    assert invalid.read_bytes() == HASHES_INVALID_HEADER + HASH[-3:].encode() + b"\n"
    assert invalid.stat().st_nlink == 1 and _names_of_invalid(df) == []
    assert _lock_free(df)


def test_a_young_partition_makes_other_writers_fsync_its_directories(df: RealDiskFile) -> None:
    df.layout.objects.mkdir(parents=True)
    made = create_partition_now(df)
    assert made is not None
    fd, tmp, dirs = made
    pdir = os.fspath(df.layout.partition_dir(PART))
    assert dirs == [os.fspath(df.layout.objects), pdir]
    assert not _lock_free(df)  # shared-locked before it was linked: the hasher waits
    other = RealDiskFile(df.layout, PART, "f" * 29 + "abc", "/a/c/o2")
    young: list[str] = []
    held = hold_invalidated_now(other, young)
    assert held is not None
    assert young == [os.fspath(df.layout.objects), pdir]  # the creator's step is not done
    os.close(held)
    os.unlink(tmp)  # what the creator's step does once the directories are durable
    young.clear()
    held = hold_invalidated_now(other, young)
    assert held is not None and young == []
    os.close(held)
    os.close(fd)
    assert read_invalid_suffixes(df.layout, PART) == {HASH[-3:], "abc"}


def test_create_partition_now_leaves_a_list_another_writer_made(df: RealDiskFile) -> None:
    pdir = _make_partition(df)
    assert create_partition_now(df) is None
    assert _names_of_invalid(df) == []
    assert (pdir / HASHES_INVALID).read_bytes() == HASHES_INVALID_HEADER


def test_create_partition_now_without_objects_dir_is_left_to_the_pool(df: RealDiskFile) -> None:
    assert create_partition_now(df) is None
    assert not df.layout.objects.exists()


def test_a_refused_commit_in_a_new_partition_leaves_its_name_until_the_hasher(
    devices: Devices, df: RealDiskFile
) -> None:
    df.layout.objects.mkdir(parents=True)
    c = _tmp_with(df, b"body")
    refused = web.Response(status=422)
    assert _commit(devices, df, c, "1.data", lambda: refused) is refused
    assert not (df.hash_dir / "1.data").exists()
    # The directories were not fsynced: the name stays, so other writers fsync them.
    assert len(_names_of_invalid(df)) == 1
    young: list[str] = []
    other = RealDiskFile(df.layout, PART, "f" * 29 + "abc", "/a/c/o2")
    held = hold_invalidated_now(other, young)
    assert held is not None and young
    os.close(held)
    # The hasher, holding the list exclusively, removes the stale name.
    get_hashes(df.layout, PART, now_s=1e9, reclaim_age_s=1e9)
    assert _names_of_invalid(df) == []
    assert (df.layout.partition_dir(PART) / HASHES_INVALID).stat().st_nlink == 1


def test_a_refusal_renames_nothing_and_removes_the_temp_file(
    devices: Devices, df: RealDiskFile
) -> None:
    _make_partition(df)
    c = _tmp_with(df, b"body")
    refused = web.Response(status=422)
    assert _commit(devices, df, c, "1.data", lambda: refused) is refused
    assert not (df.hash_dir / "1.data").exists()
    assert _tmp_files(df) == []
    assert _lock_free(df)


def test_a_failing_step_renames_nothing_and_releases_everything(
    devices: Devices, df: RealDiskFile
) -> None:
    _make_partition(df)
    c = _tmp_with(df, b"body")

    def fail() -> str:
        raise OSError(5, "disk-failing fake: EIO on write")

    with pytest.raises(OSError):
        _commit(devices, df, c, "1.data", fail)
    _assert_nothing_renamed_and_all_released(df, c)


def test_hasher_holding_the_list_leaves_the_append_to_the_pool(df: RealDiskFile) -> None:
    pdir = _make_partition(df)
    fd = os.open(pdir / HASHES_INVALID, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert hold_invalidated_now(df) is None  # never waits for the lock on the loop
        assert read_invalid_suffixes(df.layout, PART) == set()
    finally:
        os.close(fd)
    held = hold_invalidated_now(df)
    assert held is not None
    os.close(held)
    assert read_invalid_suffixes(df.layout, PART) == {HASH[-3:]}


def test_no_list_yet_means_the_pool_appends(df: RealDiskFile) -> None:
    assert hold_invalidated_now(df) is None
    assert not df.layout.partition_dir(PART).exists()


def test_make_hash_dir_now_names_the_directories_to_fsync(df: RealDiskFile) -> None:
    hash_dir = os.fspath(df.hash_dir)
    suffix_dir = os.path.dirname(hash_dir)
    part_dir = os.path.dirname(suffix_dir)
    assert make_hash_dir_now(hash_dir) is None  # no partition: the pool makes them all
    os.makedirs(part_dir)
    assert make_hash_dir_now(hash_dir) == [part_dir, suffix_dir]
    assert make_hash_dir_now(hash_dir) == []
    os.rmdir(hash_dir)
    assert make_hash_dir_now(hash_dir) == [suffix_dir]


def test_remove_obsolete_keeps_the_newest(df: RealDiskFile) -> None:
    df.hash_dir.mkdir(parents=True)
    old, new = (f"{Timestamp(t).internal}.data" for t in (1, 2))
    for name in (old, new):
        (df.hash_dir / name).write_bytes(b"x")
    assert df.remove_obsolete()
    assert os.listdir(df.hash_dir) == [new]
    assert not df.remove_obsolete()


def test_run_owned_releases_after_an_abandoned_step_ends(tmp_path: Path) -> None:
    (tmp_path / "sda").mkdir()
    devices = Devices(
        tmp_path, "p", "s", mount_check=False, threads_per_device=1, disk_timeout_s=0.05
    )
    go_on = threading.Event()
    released: list[str] = []

    def step() -> None:
        go_on.wait(5)

    def release() -> None:
        released.append(threading.current_thread().name)

    async def run() -> None:
        assert devices.healthy("sda")
        with pytest.raises(DeviceBusy):
            await devices.run_owned("sda", release, step)
        assert released == []  # the step still runs: nothing may be closed under it
        assert not devices.healthy("sda")  # its work now stays in the pool
        go_on.set()
        for _ in range(100):
            if released:
                break
            await asyncio.sleep(0.01)

    asyncio.run(run())
    devices.close()
    assert len(released) == 1 and released[0].startswith("disk-sda")


def test_run_owned_does_not_release_after_success(devices: Devices) -> None:
    released: list[int] = []

    async def run() -> int:
        return await devices.run_owned("sda", lambda: released.append(1), lambda: 7)

    assert asyncio.run(run()) == 7
    assert released == []


def test_commit_with_cleanup_removes_what_it_made_obsolete(
    devices: Devices, df: RealDiskFile
) -> None:
    _make_partition(df)
    df.hash_dir.mkdir(parents=True)
    old, new = (f"{Timestamp(t).internal}.data" for t in (1, 2))
    (df.hash_dir / old).write_bytes(b"old")
    c = _tmp_with(df, b"new")
    done = commit_split(devices, "sda", df, c, new, 3, lambda: "etag", cleanup=True)
    assert asyncio.run(done) == "etag"
    assert os.listdir(df.hash_dir) == [new]


# --- the commit's fsyncs run by the kernel from the loop (common/syncring.py) ---


class FsyncFailingRingFake(SyncRing):
    """Fault injection: a real ring whose chains report EIO for the call at `fail_at` of the
    chain numbered `chain` (counted from 0), as a disk failing that fsync would."""

    chain = 0
    fail_at = 0

    def fsync(self, fds: Sequence[int]) -> asyncio.Future[list[int]]:
        done = super().fsync(fds)
        n = self.chains_run + self.in_flight - 1
        if n != self.chain:
            return done
        out: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

        def fail(f: asyncio.Future[list[int]]) -> None:
            results = list(f.result())
            results[self.fail_at] = -errno.EIO
            out.set_result(results)

        done.add_done_callback(fail)
        return out


def _commit_on_ring(
    devices: Devices,
    df: RealDiskFile,
    c: Commit,
    name: str,
    prepare: Callable[[], T],
    ring_class: type[SyncRing] = SyncRing,
) -> tuple[T | web.Response, int]:
    """commit_split with the devices' ring set: (its result, chains the ring ran)."""

    async def go() -> tuple[T | web.Response, int]:
        ring = ring_class.open(asyncio.get_running_loop())
        if ring is None:
            pytest.skip("io_uring refused here (kernel.io_uring_disabled or a seccomp profile)")
        devices.ring = ring
        try:
            done = commit_split(
                devices, "sda", df, c, name, 5, prepare, cleanup=False, prepare_on_loop=True
            )
            return await done, ring.chains_run
        finally:
            devices.ring = None
            ring.close()

    return asyncio.run(go())


def _fds_open() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_ring_commit_in_an_existing_partition(devices: Devices, df: RealDiskFile) -> None:
    _make_partition(df)
    c = _tmp_with(df, b"hello")
    before = _fds_open()
    assert _commit_on_ring(devices, df, c, "1.data", lambda: "etag") == ("etag", 2)
    assert (df.hash_dir / "1.data").read_bytes() == b"hello"
    assert _tmp_files(df) == []
    assert read_invalid_suffixes(df.layout, PART) == {HASH[-3:]}
    assert c.fd is None and c.held is None and c.dir_fd is None
    assert _fds_open() <= before  # the directories' descriptors were closed too
    assert _lock_free(df)


def test_ring_commit_in_a_new_partition_fsyncs_everything_before_the_rename(
    devices: Devices, df: RealDiskFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    df.layout.objects.mkdir(parents=True)
    chains: list[tuple[list[str], bool]] = []
    real_sync = Devices.sync_owned

    async def recording(
        self: Devices,
        device: str,
        release: Callable[[], None],
        fds: list[int],
        what: list[str],
    ) -> None:
        chains.append((list(what), (df.hash_dir / "1.data").exists()))
        return await real_sync(self, device, release, fds, what)

    monkeypatch.setattr(Devices, "sync_owned", recording)
    c = _tmp_with(df, b"first")
    assert _commit_on_ring(devices, df, c, "1.data", lambda: "etag") == ("etag", 2)
    pdir = os.fspath(df.layout.partition_dir(PART))
    suffix_dir = os.path.dirname(os.fspath(df.hash_dir))
    objects = os.fspath(df.layout.objects)
    assert chains == [
        (["temp file", HASHES_INVALID, objects, pdir, suffix_dir], False),  # not renamed yet
        (["hash directory"], True),  # renamed only after every one of those succeeded
    ]
    assert _names_of_invalid(df) == []  # the partition is durable: its temp name is gone
    assert (df.hash_dir / "1.data").read_bytes() == b"first"
    assert _lock_free(df)


@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_ring_commit_with_a_failed_fsync_renames_nothing(
    devices: Devices, df: RealDiskFile, fail_at: int
) -> None:
    df.layout.objects.mkdir(parents=True)  # a new partition: five fsyncs in the first chain
    c = _tmp_with(df, b"body")
    before = _fds_open()
    FsyncFailingRingFake.chain, FsyncFailingRingFake.fail_at = 0, fail_at
    with pytest.raises(OSError) as e:
        _commit_on_ring(devices, df, c, "1.data", lambda: "etag", FsyncFailingRingFake)
    assert e.value.errno == errno.EIO
    _assert_nothing_renamed_and_all_released(df, c)
    assert len(_names_of_invalid(df)) == 1  # still young: other writers keep fsyncing
    assert _fds_open() <= before


def test_ring_commit_with_a_failed_directory_fsync_after_the_rename(
    devices: Devices, df: RealDiskFile
) -> None:
    _make_partition(df)
    c = _tmp_with(df, b"body")
    FsyncFailingRingFake.chain, FsyncFailingRingFake.fail_at = 1, 0
    with pytest.raises(OSError):
        _commit_on_ring(devices, df, c, "1.data", lambda: "etag", FsyncFailingRingFake)
    # Renamed but not acknowledged (as when the pool's last fsync fails): nothing else left.
    assert (df.hash_dir / "1.data").read_bytes() == b"body"
    _assert_all_released(df, c)


def test_ring_commit_refusal_renames_nothing(devices: Devices, df: RealDiskFile) -> None:
    _make_partition(df)
    c = _tmp_with(df, b"body")
    refused = web.Response(status=422)
    assert _commit_on_ring(devices, df, c, "1.data", lambda: refused) == (refused, 0)
    assert not (df.hash_dir / "1.data").exists()
    assert _tmp_files(df) == []
    assert _lock_free(df)


class StuckRingFake:
    """Fault injection: a ring whose chains complete only when the test says so (a hung disk)."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[list[int]]] = []

    def fsync(self, fds: list[int]) -> asyncio.Future[list[int]]:
        f: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.pending.append(f)
        return f


def test_sync_owned_releases_only_when_an_abandoned_chain_ends(tmp_path: Path) -> None:
    (tmp_path / "sda").mkdir()
    devices = Devices(
        tmp_path, "p", "s", mount_check=False, threads_per_device=1, disk_timeout_s=0.05
    )
    stuck = StuckRingFake()
    devices.ring = stuck  # type: ignore[assignment]
    released: list[int] = []

    async def run() -> None:
        with pytest.raises(DeviceBusy):
            await devices.sync_owned("sda", lambda: released.append(1), [0], ["x"])
        assert released == []  # the kernel may still use the descriptors
        assert not devices.healthy("sda")
        stuck.pending[0].set_result([0])
        await asyncio.sleep(0)
        assert released == [1]

    asyncio.run(run())


def test_sync_owned_refuses_past_the_queue_bound(tmp_path: Path) -> None:
    (tmp_path / "sda").mkdir()
    devices = Devices(tmp_path, "p", "s", mount_check=False, threads_per_device=1, ops_queued_max=1)
    stuck = StuckRingFake()
    devices.ring = stuck  # type: ignore[assignment]
    released: list[int] = []

    async def run() -> None:
        first = asyncio.ensure_future(devices.sync_owned("sda", lambda: None, [0], ["x"]))
        await asyncio.sleep(0)
        with pytest.raises(DeviceBusy):
            await devices.sync_owned("sda", lambda: released.append(1), [0], ["x"])
        assert released == [1]
        stuck.pending[0].set_result([0])
        await first

    asyncio.run(run())
