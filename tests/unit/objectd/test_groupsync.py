"""Group commit of small writes (objectd/groupsync.py): batching, ordering and failures.

The committer's `sync` is the real syncfs in the tests that use `GroupSyncs`; the ordering
tests give `GroupSync` a sync function that waits on a gate, so that they decide when a
call returns (the only way to hold a real syncfs open), and that records what the file
system looked like when each call started.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import threading
from pathlib import Path

import pytest

from common.timestamps import Timestamp
from objectd import groupsync
from objectd.diskfile import RealDiskFile
from objectd.fileformat import ObjectMetadata
from objectd.groupsync import GroupSync, GroupSyncs, syncfs, syncfs_reports_errors
from objectd.layout import HASHES_INVALID, DeviceLayout
from objectd.smallwrite import prepare_small_data


class GatedSync:
    """A sync that blocks until the test opens its gate; counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)
        self.fail_next: OSError | None = None

    def __call__(self) -> None:
        self.calls += 1
        self.started.release()
        if not self.gate.acquire(timeout=STEP_TIMEOUT_S):
            raise OSError(errno.ETIMEDOUT, "the test never opened the gate")
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err


class Job:
    def __init__(self, log: list[str], name: str, fail: bool = False) -> None:
        self.log = log
        self.name = name
        self.fail = fail

    def run(self) -> str:
        self.log.append(f"run {self.name}")
        if self.fail:
            raise ValueError(self.name)
        return self.name

    def abort(self) -> None:
        self.log.append(f"abort {self.name}")

    def release(self) -> None:
        self.log.append(f"release {self.name}")


STEP_TIMEOUT_S = 10.0  # a broken committer fails the test instead of hanging it


async def _started(sync: GatedSync) -> None:
    assert await asyncio.to_thread(sync.started.acquire, timeout=STEP_TIMEOUT_S)


def test_jobs_arriving_during_a_batch_share_the_next_one():
    async def main() -> None:
        sync = GatedSync()
        gs = GroupSync(sync, "t")
        log: list[str] = []
        first = asyncio.ensure_future(gs.commit(Job(log, "a")))
        await _started(sync)  # batch 1: its first sync is running
        later = [asyncio.ensure_future(gs.commit(Job(log, n))) for n in "bcd"]
        await asyncio.sleep(0.01)
        assert log == []  # no job runs before the data sync returns
        sync.gate.release()  # batch 1, first sync
        await _started(sync)  # batch 1, second sync: "a" has run
        assert log == ["run a"]  # released only after the second sync
        assert not first.done()  # not acknowledged before the rename is durable
        sync.gate.release()
        assert await first == "a"
        for _ in range(2):  # batch 2: b, c and d together
            await _started(sync)
            sync.gate.release()
        assert [await f for f in later] == ["b", "c", "d"]
        assert log == [
            "run a",
            "release a",
            "run b",
            "run c",
            "run d",
            "release b",
            "release c",
            "release d",
        ]
        assert sync.calls == 4 and gs.calls == 4 and gs.jobs == 4
        gs.close()

    asyncio.run(asyncio.wait_for(main(), 4 * STEP_TIMEOUT_S))


def test_a_batch_takes_at_most_batch_jobs_max(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(groupsync, "BATCH_JOBS_MAX", 2)

    async def main() -> None:
        sync = GatedSync()
        gs = GroupSync(sync, "t")
        log: list[str] = []
        futs = await _batch_of(gs, sync, [Job(log, n) for n in "abcde"])
        for _ in range(5):  # the first batch's second sync, then two calls per batch
            sync.gate.release()
            await _started(sync)
        sync.gate.release()
        assert [await f for f in futs] == list("abcde")
        assert log == [
            "run a", "run b", "release a", "release b",
            "run c", "run d", "release c", "release d",
            "run e", "release e",
        ]  # fmt: skip
        assert sync.calls == 2 + 6  # the one-job batch "x", then three batches
        gs.close()

    asyncio.run(asyncio.wait_for(main(), 4 * STEP_TIMEOUT_S))


async def _batch_of(
    gs: GroupSync, sync: GatedSync, jobs: list[Job]
) -> list[asyncio.Future[object]]:
    """Queue `jobs` while a first batch (one job, "x") holds the committer, then let that
    batch finish: `jobs` form the next batch, whose first sync has started on return."""
    first = asyncio.ensure_future(gs.commit(Job([], "x")))
    await _started(sync)
    futs: list[asyncio.Future[object]] = [asyncio.ensure_future(gs.commit(job)) for job in jobs]
    await asyncio.sleep(0)
    sync.gate.release()
    await _started(sync)
    sync.gate.release()
    assert await first == "x"
    await _started(sync)  # the batch of `jobs`: its data sync is running
    return futs


def test_a_failed_data_sync_aborts_every_job_of_its_batch():
    async def main() -> None:
        sync = GatedSync()
        gs = GroupSync(sync, "t")
        log: list[str] = []
        futs = await _batch_of(gs, sync, [Job(log, "a"), Job(log, "b")])
        sync.fail_next = OSError(errno.EIO, "I/O error")
        sync.gate.release()
        for f in futs:
            with pytest.raises(OSError) as err:
                await f
            assert err.value.errno == errno.EIO
        assert log == ["abort a", "abort b"]  # nothing renamed: the temp files go
        assert sync.calls == 3  # batch "x": two; this batch: only the failed one
        # nothing is committed after a failed sync (a later one may not report it again)
        with pytest.raises(OSError) as err:
            await gs.commit(Job(log, "c"))
        assert err.value.errno == errno.EIO
        assert log[-1] == "abort c" and sync.calls == 3
        gs.close()

    asyncio.run(asyncio.wait_for(main(), 4 * STEP_TIMEOUT_S))


def test_a_failed_second_sync_fails_the_jobs_that_ran_and_a_job_failure_is_its_own():
    async def main() -> None:
        sync = GatedSync()
        gs = GroupSync(sync, "t")
        log: list[str] = []
        futs = await _batch_of(gs, sync, [Job(log, "a"), Job(log, "b", fail=True)])
        sync.gate.release()
        await _started(sync)
        sync.fail_next = OSError(errno.EIO, "I/O error")
        sync.gate.release()
        with pytest.raises(OSError):
            await futs[0]  # renamed, but the rename is not known to be durable
        with pytest.raises(ValueError):
            await futs[1]
        assert log == ["run a", "run b", "release a"]  # what ran and returned is released
        gs.close()

    asyncio.run(asyncio.wait_for(main(), 4 * STEP_TIMEOUT_S))


def test_a_batch_whose_jobs_all_fail_skips_the_second_sync():
    async def main() -> None:
        sync = GatedSync()
        gs = GroupSync(sync, "t")
        fut = asyncio.ensure_future(gs.commit(Job([], "a", fail=True)))
        await _started(sync)
        sync.gate.release()
        with pytest.raises(ValueError):
            await fut
        assert sync.calls == 1
        gs.close()

    asyncio.run(asyncio.wait_for(main(), 4 * STEP_TIMEOUT_S))


def test_a_writer_that_stops_waiting_does_not_cancel_the_batch():
    async def main() -> None:
        sync = GatedSync()
        gs = GroupSync(sync, "t")
        log: list[str] = []
        impatient, patient = await _batch_of(gs, sync, [Job(log, "a"), Job(log, "b")])
        impatient.cancel()
        sync.gate.release()
        await _started(sync)
        sync.gate.release()
        assert await patient == "b"
        # the job ran: the writer gave up, not the batch
        assert log == ["run a", "run b", "release a", "release b"]
        gs.close()

    asyncio.run(asyncio.wait_for(main(), 4 * STEP_TIMEOUT_S))


def test_real_syncfs_and_one_committer_per_file_system(tmp_path: Path):
    assert syncfs_reports_errors()  # CI's kernel is Linux >= 5.8: group commit is used there
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        syncfs(fd)
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        syncfs(-1)
    (tmp_path / "sda").mkdir()
    (tmp_path / "sdb").mkdir()
    syncs = GroupSyncs()
    one, two = syncs.for_path(tmp_path / "sda"), syncs.for_path(tmp_path / "sdb")
    assert one is two  # same st_dev

    async def main() -> object:
        return await one.commit(Job([], "x"))

    assert asyncio.run(asyncio.wait_for(main(), 4 * STEP_TIMEOUT_S)) == "x"
    assert syncs.stats() == (2, 1)
    syncs.close()


@pytest.mark.parametrize(
    ("release", "ok"),
    [
        ("5.7.19", False),
        ("5.8.0", True),
        ("5.10.0-26-amd64", True),
        ("6.18.44-fc", True),
        ("4.19.0", False),
        ("garbage", False),
        ("5.7-rc1", False),
    ],
)
def test_kernel_release_decides(release: str, ok: bool):
    assert syncfs_reports_errors(release) is ok


def test_a_small_commit_holds_hashes_invalid_until_its_rename_is_durable(tmp_path: Path):
    """The hasher takes hashes.invalid's exclusive lock to read it: if it could do so
    between a batch's renames and its second sync, it might record a suffix hash counting a
    rename that a crash then undoes (a replica claiming an object it lacks)."""
    (tmp_path / "sda").mkdir()
    df = RealDiskFile(
        DeviceLayout(tmp_path, "sda"), 3, "0123456789abcdef0123456789abcdef", "/a/c/o"
    )
    md = ObjectMetadata(kind="data", name="/a/c/o", timestamp=Timestamp(5), content_type="a/b")
    made = prepare_small_data(df, b"body", md, 0, "", lambda: False)
    assert made is not None
    _etag, job = made
    invalid = df.layout.partition_dir(3) / HASHES_INVALID

    def exclusive_free() -> bool:
        fd = os.open(invalid, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # drops the lock if it was taken
        return True

    async def main() -> None:
        sync = GatedSync()
        gs = GroupSync(sync, "t")
        fut = asyncio.ensure_future(gs.commit(job))
        await _started(sync)
        sync.gate.release()
        await _started(sync)  # second sync: renamed, not yet durable
        assert (df.hash_dir / f"{Timestamp(5).internal}.data").exists()
        assert not exclusive_free()
        sync.gate.release()
        assert await fut is True
        assert exclusive_free()
        gs.close()

    asyncio.run(asyncio.wait_for(main(), 4 * STEP_TIMEOUT_S))
