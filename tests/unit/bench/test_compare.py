"""compare's start-up bookkeeping: what came up is stopped, what failed is reported."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from bench import compare as compare_mod
from bench.cairnref import paused_daemons
from bench.compare import _run_all, _start_all, hardware
from bench.procstat import tree_pids
from bench.stats import Result
from bench.swiftref import SwiftRefError
from bench.target import SwiftTarget
from bench.workloads import SystemUnderTest, quick_spec


class _Probe:
    def start(self) -> None:
        return None

    def stop(self) -> float:
        return 0.0


def _starter(name: str, log: list[str]):
    @contextlib.contextmanager
    def cm() -> Iterator[None]:
        log.append(f"start {name}")
        try:
            yield
        finally:
            log.append(f"stop {name}")

    def start():
        c = cm()
        c.__enter__()
        return SystemUnderTest(name, SwiftTarget("http://127.0.0.1:9/v1/A", "t"), _Probe()), c

    return start


def _failing() -> tuple[SystemUnderTest, contextlib.AbstractContextManager[object]]:
    raise SwiftRefError("no swift here")


def test_started_systems_are_stopped_and_failures_noted() -> None:
    log: list[str] = []
    with contextlib.ExitStack() as stack:
        suts, notes = _start_all(stack, {"cairn": _starter("cairn", log), "swift": _failing}, 0.0)
        assert set(suts) == {"cairn"}
        assert notes == {"swift": "SwiftRefError: no swift here"}
        assert log == ["start cairn"]
    assert log == ["start cairn", "stop cairn"]


def test_unexpected_start_errors_propagate_after_stopping_the_others() -> None:
    log: list[str] = []

    def broken() -> tuple[SystemUnderTest, contextlib.AbstractContextManager[object]]:
        raise ZeroDivisionError("bug")

    # The broken starter comes first: the good one must still be stopped.
    with pytest.raises(ZeroDivisionError), contextlib.ExitStack() as stack:
        _start_all(stack, {"b": broken, "a": _starter("a", log)}, 0.0)
    assert log == ["start a", "stop a"]


def test_hardware_reads_proc() -> None:
    hw = hardware()
    assert isinstance(hw["nproc"], int) and hw["nproc"] >= 1
    assert hw["mem_gib"] > 0 and hw["cpu_model"]


def test_cairn_state_splits_servers_from_daemons() -> None:
    from bench.cairnref import service_pids

    state = {
        "supervisor_pid": 1,
        "services": [
            {"name": "node1-object", "pid": 10},
            {"name": "proxy", "pid": 11},
            {"name": "node1-object-daemons", "pid": 12},
            {"name": "node2-container-daemons", "pid": 13},
            {"name": "held", "pid": None},
        ],
    }
    assert service_pids(state) == ((10, 11), (12, 13))
    assert service_pids({}) == ((), ())


def _state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _wait(pred: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_paused_daemons_stops_the_whole_tree_and_resumes_it() -> None:
    # A "daemon" with a child of its own, as a `<node>-<kind>-daemons` process has workers.
    child = "import time; time.sleep(60)"
    code = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {child!r}]); {child}"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        _wait(lambda: len(tree_pids([parent.pid])) == 2)
        pids = sorted(tree_pids([parent.pid]))
        assert len(pids) == 2
        with paused_daemons((parent.pid,)):
            _wait(lambda: all(_state_of(p) == "T" for p in pids))
            assert [_state_of(p) for p in pids] == ["T", "T"]
        _wait(lambda: all(_state_of(p) == "S" for p in pids))
        assert [_state_of(p) for p in pids] == ["S", "S"]
    finally:
        for p in tree_pids([parent.pid]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        parent.wait()


def test_run_all_repeats_each_workload_alternating_who_goes_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, str, int]] = []

    def fake_run(sut: SystemUnderTest, spec: object, workload: str, rep: int) -> Result:
        calls.append((sut.name, workload, rep))
        return Result(workload=workload, ops=1, errors=0, duration_s=1.0)

    monkeypatch.setattr(compare_mod, "run_workload", fake_run)
    monkeypatch.setattr(compare_mod, "_progress", lambda *a: None)
    suts = {
        n: SystemUnderTest(n, SwiftTarget("http://127.0.0.1:9/v1/A", "t"), _Probe())
        for n in ("swift", "cairn")
    }
    settles = iter(range(100))

    def settle() -> float:  # each timed run starts once the machine's writeback is done
        calls.append(("settle", "", -1))
        return next(settles) / 1000

    runs = _run_all(suts, quick_spec(), 0.0, ("put4k", "get4k"), 3, settle)
    assert calls[0] == ("settle", "", -1)
    assert [c[0] == "settle" for c in calls] == [True, False] * 12
    assert [r.extra["settle_s"] for r in runs["cairn"]] == [0.0, 0.003, 0.004, 0.006, 0.009, 0.01]
    calls[:] = [c for c in calls if c[0] != "settle"]
    first = [(n, r) for n, w, r in calls if w == "put4k"]
    assert first == [
        ("cairn", 0),
        ("swift", 0),
        ("swift", 1),
        ("cairn", 1),
        ("cairn", 2),
        ("swift", 2),
    ]
    assert [c[1] for c in calls] == ["put4k"] * 6 + ["get4k"] * 6
    assert [r.extra["rep"] for r in runs["cairn"]] == [0, 1, 2, 0, 1, 2]
