"""iscsi_bench's cluster bookkeeping: which processes are which, and the background daemons
stopped for a job's run only (real `sleep` processes, their state read from /proc)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import pytest

from bench.iscsi_bench import ClusterPids, Target, job_window, split_services
from tests.unit.bench.test_compare import _state_of, _wait


@contextlib.contextmanager
def _sleepers(n: int) -> Iterator[list[int]]:
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_status_document_splits_blockd_object_servers_and_daemons() -> None:
    status = {
        "services": [
            {"name": "node1-object", "pid": 10},
            {"name": "node2-object", "pid": 11},
            {"name": "node1-container", "pid": 12},
            {"name": "proxy", "pid": 13},
            {"name": "blockd", "pid": 14},
            {"name": "node1-object-daemons", "pid": 20},
            {"name": "node2-account-daemons", "pid": 21},
            {"name": "node2-container-daemons", "pid": None},  # not started yet
            {"name": "node3-object", "pid": None},  # held
        ]
    }
    found = split_services(status)
    assert found.blockd == [14]
    assert found.objects == [10, 11]
    assert found.daemons == (20, 21)
    empty = split_services({})
    assert (empty.blockd, empty.objects, empty.daemons) == ([], [], ())


def test_job_window_stops_only_the_daemons_and_resumes_them() -> None:
    with _sleepers(3) as (serving, store, daemon):
        target = Target("volume", "iscsi://unused", [serving], [store], (daemon,))
        with job_window(target) as cpu:
            _wait(lambda: _state_of(daemon) == "T")
            assert _state_of(daemon) == "T"
            assert _state_of(serving) != "T" and _state_of(store) != "T"
        _wait(lambda: _state_of(daemon) != "T")
        assert _state_of(daemon) in ("R", "S")  # resumed: running, or back in its sleep
        assert cpu.serving_s is not None and cpu.serving_s >= 0
        assert cpu.store_s is not None and cpu.store_s >= 0


def test_job_window_resumes_the_daemons_when_the_job_fails() -> None:
    with _sleepers(1) as (daemon,):
        target = Target("volume", "iscsi://unused", paused_pids=(daemon,))
        with pytest.raises(KeyboardInterrupt), job_window(target):
            _wait(lambda: _state_of(daemon) == "T")
            assert _state_of(daemon) == "T"
            raise KeyboardInterrupt
        _wait(lambda: _state_of(daemon) != "T")
        assert _state_of(daemon) in ("R", "S")  # resumed: running, or back in its sleep


def test_keep_daemons_window_stops_nothing() -> None:
    with _sleepers(1) as (daemon,):
        target = Target("volume", "iscsi://unused", paused_pids=())
        with job_window(target) as cpu:
            time.sleep(0.05)
            assert _state_of(daemon) != "T"
        assert cpu.serving_s is None and cpu.store_s is None


def test_each_window_looks_the_processes_up_again() -> None:
    """A daemon the supervisor restarted has a new pid: the next job stops that one (and
    leaves the old pid alone), and counts the new processes' CPU."""
    with _sleepers(4) as (serving, store, old_daemon, new_daemon):
        found = [ClusterPids([serving], [store], (old_daemon,))]
        target = Target("volume", "iscsi://unused", lookup=lambda: found[0])
        with job_window(target):
            _wait(lambda: _state_of(old_daemon) == "T")
            assert _state_of(new_daemon) != "T"
        found[0] = ClusterPids([serving], [store], (new_daemon,))
        with job_window(target) as cpu:
            _wait(lambda: _state_of(new_daemon) == "T")
            assert _state_of(new_daemon) == "T"
            assert _state_of(old_daemon) != "T"
        assert target.paused_pids == (new_daemon,) and target.daemon_pids == (new_daemon,)
        assert target.pids == [serving] and target.store_pids == [store]
        assert cpu.serving_s is not None and cpu.store_s is not None


def test_daemon_cpu_is_summed_over_the_windows_when_they_keep_running() -> None:
    busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        target = Target(
            "volume",
            "iscsi://unused",
            pause_daemons=False,
            lookup=lambda: ClusterPids([], [], (busy.pid,)),
        )
        seen = [target.daemon_cpu_s]
        for _ in range(2):
            with job_window(target):
                assert _state_of(busy.pid) != "T"
                time.sleep(0.3)
            seen.append(target.daemon_cpu_s)
        assert target.paused_pids == ()
        assert seen[0] < seen[1] < seen[2]  # a spinning shell: each window adds its share
    finally:
        busy.kill()
        busy.wait()


def test_a_failed_lookup_keeps_the_processes_found_before() -> None:
    with _sleepers(1) as (daemon,):
        answers: list[ClusterPids | None] = [ClusterPids([], [], (daemon,)), None]

        def lookup() -> ClusterPids:
            found = answers.pop(0)
            if found is None:
                raise subprocess.CalledProcessError(1, ["cairn", "status"])
            return found

        target = Target("volume", "iscsi://unused", lookup=lookup)
        with job_window(target):
            pass
        with job_window(target):  # `cairn status` failed: the daemon found before is stopped
            _wait(lambda: _state_of(daemon) == "T")
            assert _state_of(daemon) == "T"
        assert target.paused_pids == (daemon,)
