"""Small PUTs under group commit (objectd/groupsync.py, `group_sync`) on a real object server:
the same answers as with per-file fsyncs, the 201 only after the rename was synced, a
failed sync (injected) answered 503 with nothing left behind, and a sync stalled past the
disk timeout answered 503 with nothing renamed when it finally returns."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from common.clock import ManualClock
from common.server import running_app
from objectd.conf import STATE
from objectd.server import ObjectServerConf, make_object_app
from objectd.smallput import SYNCFS_OK, group_syncs
from tests.integration.objectd.conftest import object_server, run, ts

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SYNCFS_OK, reason="syncfs does not report errors before Linux 5.8"),
]

OBJ = "sda/0/AUTH_a/c/o"


def data_files(devices_dir: Path) -> list[Path]:
    return sorted((devices_dir / "sda").glob("objects/**/*.data"))


def tmp_files(devices_dir: Path) -> list[Path]:
    return sorted((devices_dir / "sda").glob("tmp/*"))


async def _puts(conf: ObjectServerConf, clock: ManualClock) -> list[tuple[int, str, bytes]]:
    body = b"x" * 4096
    good = {"X-Timestamp": ts(clock), "Content-Type": "text/plain"}
    cases = [
        (body, {**good, "ETag": hashlib.md5(body).hexdigest()}),  # 201
        (body, good),  # same timestamp: 409
        (b"new", {**good, "X-Timestamp": ts(clock, 1), "ETag": "0" * 32}),  # 422
        (b"", {**good, "X-Timestamp": ts(clock, 2), "If-None-Match": "*"}),  # 412
        (b"newer", {**good, "X-Timestamp": ts(clock, 3)}),  # 201, the older file removed
    ]
    out = []
    async with object_server(conf, clock) as (url, session):
        for body_, headers in cases:
            async with session.put(f"{url}/{OBJ}", data=body_, headers=headers) as r:
                out.append((r.status, r.headers.get("ETag", ""), await r.read()))
        async with session.get(f"{url}/{OBJ}") as r:
            out.append((r.status, r.headers.get("ETag", ""), await r.read()))
    return out


def test_same_answers_as_per_file_fsyncs(
    tmp_path: Path, conf: ObjectServerConf, clock: ManualClock
) -> None:
    answers = {}
    for group in (False, True):
        devices = tmp_path / f"group-{group}"
        (devices / "sda").mkdir(parents=True)
        conf = dataclasses.replace(conf, devices_dir=devices, group_sync=group)
        answers[group] = run(_puts(conf, clock))
        assert [p.name for p in data_files(devices)] == [f"{ts(clock, 3)}.data"]
        assert tmp_files(devices) == []
    assert [s for s, _e, _b in answers[True]] == [201, 409, 422, 412, 201, 200]
    assert answers[True] == answers[False]
    assert answers[True][-1][2] == b"newer"


def _recording(
    devices_dir: Path, events: list[str], sync: Callable[[], None]
) -> Callable[[], None]:
    def recorded() -> None:
        events.append("sync: renamed" if data_files(devices_dir) else "sync: not renamed")
        sync()

    return recorded


def test_acknowledged_only_after_the_rename_is_synced(
    conf: ObjectServerConf, devices_dir: Path, clock: ManualClock
) -> None:
    events: list[str] = []

    async def go() -> None:
        app = await make_object_app(dataclasses.replace(conf, group_sync=True), clock)
        syncs = group_syncs(app[STATE])
        assert syncs is not None
        gs = syncs.for_path(devices_dir / "sda")
        gs._sync = _recording(devices_dir, events, gs._sync)
        async with running_app(app) as url, aiohttp.ClientSession() as session:
            h = {"X-Timestamp": ts(clock), "Content-Type": "a/b"}
            async with session.put(f"{url}/{OBJ}", data=b"abc", headers=h) as r:
                events.append(f"answer {r.status}")
            async with session.get(f"{url}/metrics") as r:
                metrics = await r.text()
        assert "cairn_object_group_syncs_total 2.0" in metrics
        assert "cairn_object_group_sync_waits_total 1.0" in metrics

    run(go())
    # the temp file is synced before the rename, the rename before the answer
    assert events == ["sync: not renamed", "sync: renamed", "answer 201"]


class FailingSync:
    """Fault injection: the file system's sync fails with EIO on call `fail_on` (1-based)."""

    def __init__(self, sync: Callable[[], None], fail_on: int) -> None:
        self.sync = sync
        self.fail_on = fail_on
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise OSError(errno.EIO, "injected I/O error")
        self.sync()


@pytest.mark.parametrize("fail_on", [1, 2])
def test_a_failed_sync_is_answered_503(
    conf: ObjectServerConf, devices_dir: Path, clock: ManualClock, fail_on: int
) -> None:
    async def go() -> list[int]:
        app = await make_object_app(dataclasses.replace(conf, group_sync=True), clock)
        syncs = group_syncs(app[STATE])
        assert syncs is not None
        gs = syncs.for_path(devices_dir / "sda")
        gs._sync = FailingSync(gs._sync, fail_on)
        statuses = []
        async with running_app(app) as url, aiohttp.ClientSession() as session:
            for i in range(2):
                h = {"X-Timestamp": ts(clock, i), "Content-Type": "a/b"}
                async with session.put(f"{url}/{OBJ}", data=b"abc", headers=h) as r:
                    statuses.append(r.status)
        return statuses

    # nothing is committed after a failed sync: the error may have lost writes a later
    # syncfs would not report again
    assert run(go()) == [503, 503]
    assert tmp_files(devices_dir) == []
    names = [p.name for p in data_files(devices_dir)]
    if fail_on == 1:  # the data sync failed: nothing was renamed
        assert names == []
    else:  # renamed, but not known durable: not acknowledged
        assert names == [f"{ts(clock)}.data"]


class HeldSync:
    """Fault injection: the file system's first sync hangs until the test lets it go (a
    device stalled longer than the disk timeout), bounded so a broken test cannot hang."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1 and not self.gate.wait(HELD_SYNC_MAX_S):
            raise OSError(errno.ETIMEDOUT, "the test never let the sync go")
        self.sync()


HELD_SYNC_MAX_S = 10.0


def test_a_sync_slower_than_the_disk_timeout_is_a_503_and_renames_nothing(
    conf: ObjectServerConf, devices_dir: Path, clock: ManualClock
) -> None:
    async def go() -> list[int]:
        slow = dataclasses.replace(conf, group_sync=True, disk_timeout_s=0.3)
        app = await make_object_app(slow, clock)
        syncs = group_syncs(app[STATE])
        assert syncs is not None
        gs = syncs.for_path(devices_dir / "sda")
        held = HeldSync(gs._sync)
        gs._sync = held
        statuses = []
        async with running_app(app) as url, aiohttp.ClientSession() as session:
            h = {"X-Timestamp": ts(clock), "Content-Type": "a/b"}
            async with session.put(f"{url}/{OBJ}", data=b"abc", headers=h) as r:
                statuses.append(r.status)  # gave up waiting: not acknowledged
            held.gate.set()  # the stalled batch goes on: its job must rename nothing
            for _ in range(int(HELD_SYNC_MAX_S / 0.05)):
                if not tmp_files(devices_dir) and gs.jobs == 1 and not gs._running:
                    break
                await asyncio.sleep(0.05)
            assert data_files(devices_dir) == [] and tmp_files(devices_dir) == []
            h = {"X-Timestamp": ts(clock, 1), "Content-Type": "a/b"}
            async with session.put(f"{url}/{OBJ}", data=b"def", headers=h) as r:
                statuses.append(r.status)  # the file system's committer still works
        return statuses

    assert run(go()) == [503, 201]
    assert [p.name for p in data_files(devices_dir)] == [f"{ts(clock, 1)}.data"]
