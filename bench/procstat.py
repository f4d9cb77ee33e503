"""CPU seconds used by a set of process trees, from /proc/<pid>/stat, and by the whole
machine, from /proc/stat (Linux only).

Server CPU per request is the steadier figure on a shared machine: other tenants slow a
run down but do not add CPU time to our processes. A tree's time is utime + stime of every
live process in it, plus cutime + cstime (children already reaped) of each, so a worker
that exits during a run still counts once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcStat",
    "TreeCPU",
    "busy_ticks",
    "machine_busy_s",
    "parse_stat",
    "tree_cpu_s",
    "tree_pids",
]

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    ticks: int  # utime + stime + cutime + cstime, in clock ticks


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line. The command name may hold spaces and ')'."""
    head, sep, tail = text.rpartition(")")
    if not sep or "(" not in head:
        raise ValueError("not a /proc/<pid>/stat line")
    pid = int(head.split("(", 1)[0].strip())
    f = tail.split()
    # after ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    if len(f) < 15:
        raise ValueError("short /proc/<pid>/stat line")
    return ProcStat(pid=pid, ppid=int(f[1]), ticks=sum(int(x) for x in f[11:15]))


def _all_stats() -> dict[int, ProcStat]:
    out = {}
    for d in _PROC.iterdir():
        if not d.name.isdigit():
            continue
        try:
            st = parse_stat((d / "stat").read_text())
        except (OSError, ValueError):
            continue  # exited while we looked
        out[st.pid] = st
    return out


def tree_pids(roots: Iterable[int], stats: dict[int, ProcStat] | None = None) -> set[int]:
    """`roots` and all their live descendants."""
    stats = _all_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    seen: set[int] = set()
    todo = [p for p in roots if p in stats]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(children.get(p, []))
    return seen


def tree_cpu_s(roots: Iterable[int]) -> float:
    """CPU seconds of the process trees under `roots`, now."""
    stats = _all_stats()
    ticks = sum(stats[p].ticks for p in tree_pids(roots, stats))
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class TreeCPU:
    """Before/after probe: `start()` then `stop()` returns CPU seconds used in between."""

    roots: list[int]
    _t0: float = 0.0

    def start(self) -> None:
        self._t0 = tree_cpu_s(self.roots)

    def stop(self) -> float:
        return tree_cpu_s(self.roots) - self._t0


def busy_ticks(cpu_line: str) -> int:
    """Busy clock ticks of /proc/stat's first (``cpu``) line: every field of the first
    eight but idle and iowait (user nice system idle iowait irq softirq steal)."""
    fields = cpu_line.split()
    if len(fields) < 9 or fields[0] != "cpu":
        raise ValueError("not /proc/stat's cpu line")
    v = [int(x) for x in fields[1:9]]
    return sum(v) - v[3] - v[4]


def machine_busy_s() -> float:
    """CPU seconds every CPU of the machine has spent busy since boot (all processes and
    the kernel)."""
    with open("/proc/stat") as f:
        return busy_ticks(f.readline()) / os.sysconf("SC_CLK_TCK")
