"""/proc/<pid>/stat parsing and process-tree CPU sums."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.procstat import ProcStat, TreeCPU, busy_ticks, parse_stat, tree_cpu_s, tree_pids

LINE = ("4242 (swift-proxy) server) S 17 4242 4242 0 -1 4194560 1000 0 0 0 "
        "150 50 7 3 20 0 1 0 100 1000000 500 18446744073709551615")  # fmt: skip


def test_parse_stat_with_spaces_and_parens_in_the_name() -> None:
    st = parse_stat(LINE)
    assert st == ProcStat(pid=4242, ppid=17, ticks=150 + 50 + 7 + 3)


@pytest.mark.parametrize("bad", ["", "4242 swift S 1", "4242 (x) S 1 2 3"])
def test_parse_stat_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_stat(bad)


def test_tree_pids_follows_children_not_siblings() -> None:
    stats = {p.pid: p for p in [ProcStat(1, 0, 0), ProcStat(10, 1, 0), ProcStat(11, 10, 0),
                                ProcStat(12, 11, 0), ProcStat(20, 1, 0)]}  # fmt: skip
    assert tree_pids([10], stats) == {10, 11, 12}
    assert tree_pids([10, 20], stats) == {10, 11, 12, 20}
    assert tree_pids([99], stats) == set()


def test_real_tree_counts_a_busy_child() -> None:
    me = os.getpid()
    assert me in tree_pids([me])
    probe = TreeCPU([me])
    probe.start()
    child = subprocess.Popen([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"])
    child.wait(timeout=60)
    # The reaped child's CPU now sits in our cutime/cstime, so the tree still counts it.
    assert probe.stop() > 0.0
    assert tree_cpu_s([me]) > 0.0


def test_busy_ticks_leave_out_idle_and_iowait() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    assert busy_ticks("cpu  100 5 50 9000 70 3 2 1 0 0") == 100 + 5 + 50 + 3 + 2 + 1


@pytest.mark.parametrize("bad", ["", "cpu0 1 2 3 4 5 6 7 8", "cpu 1 2 3"])
def test_busy_ticks_reject_other_lines(bad: str) -> None:
    with pytest.raises(ValueError):
        busy_ticks(bad)
