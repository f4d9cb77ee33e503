"""Server CPU seconds per request on cairn's object path (4 KiB, 1 MiB and 256 MiB PUT/GET).

Starts a cairn all-in-one (`bench.cairnref.running_cairn`: 2 nodes x 2 devices, 3 replicas,
proxy workers = cores), then runs each workload a fixed number of requests at a time and
reads the CPU time of every request-serving process (proxy, object, container and account
servers with their workers; `/proc/<pid>/stat`) before and after. On a shared machine that
figure is steadier than throughput: other tenants stretch wall-clock time but add no CPU time
to our processes. Each workload is repeated and the median, min and max are printed, with
throughput and the load average for context. The cluster lives under `--base`: the previous
run's is set aside when a run starts and deleted when it ends, never just before measuring
(bench/fsquiet.py: on a journal-less ext4, freshly freed inodes slow new files down).

    .venv/bin/python -m bench.profile_object_path            # default counts, 3 repetitions
    .venv/bin/python -m bench.profile_object_path --reps 5 --small 800 --json out.json
    .venv/bin/python -m bench.profile_object_path --pyspy bench-out/pyspy   # flame data too

With `--pyspy DIR` (needs `py-spy` on PATH or in the venv) every proxy worker, object server
and container server is sampled (`--nonblocking`) during the first repetition of each
workload; raw folded stacks go to `DIR/<workload>-<role>.txt`. py-spy samples wall-clock
time: a thread blocked in fsync or waiting for pool work shows up as much as one on CPU. Add
`--pyspy-gil` to sample only the thread holding the GIL (Python's CPU time, roughly).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.aioload import LoadSpec, run_load
from bench.cairnref import ADMIN_KEY, ADMIN_USER, CairnCluster, paused_daemons, running_cairn
from bench.fsquiet import purge, purge_warning, recent_purge, set_aside
from bench.procstat import TreeCPU, tree_pids
from bench.target import SwiftTarget, swift_auth

__all__ = ["Figure", "main", "measure"]

MIB = 1024 * 1024
_CONTAINER_TIMEOUT_S = 30.0
_CONTAINER_ATTEMPTS = 5
_CONTAINER_RETRY_S = 1.0


@dataclass(frozen=True)
class Figure:
    workload: str
    reps: int
    ops: int  # per repetition
    cpu_ms_per_op: list[float]
    ops_per_s: list[float]
    mb_per_s: list[float]
    errors: int
    loadavg: float

    def row(self) -> str:
        c = self.cpu_ms_per_op
        return (
            f"{self.workload:9s} {self.ops:6d} {statistics.median(c):11.2f} "
            f"{min(c):9.2f} {max(c):9.2f} {statistics.median(self.ops_per_s):9.1f} "
            f"{statistics.median(self.mb_per_s):9.1f} {self.errors:6d} {self.loadavg:6.1f}"
        )


_HEADER = (
    f"{'workload':9s} {'ops':>6s} {'ms cpu/op':>11s} {'min':>9s} {'max':>9s} "
    f"{'ops/s':>9s} {'MB/s':>9s} {'errors':>6s} {'load1':>6s}"
)


def _make_container(target: SwiftTarget, name: str) -> None:
    """PUT a container; retried a few times on 404/503, which a cluster that has just come
    up can answer while its account databases are still being created."""
    import urllib.error
    import urllib.request

    url, headers = target.request("PUT", name)
    for attempt in range(_CONTAINER_ATTEMPTS):
        req = urllib.request.Request(url, method="PUT", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=_CONTAINER_TIMEOUT_S) as resp:
                if resp.status in (201, 202):
                    return
                raise RuntimeError(f"container PUT {name} -> {resp.status}")
        except urllib.error.HTTPError as e:
            e.close()
            if e.code not in (404, 503) or attempt + 1 == _CONTAINER_ATTEMPTS:
                raise
        time.sleep(_CONTAINER_RETRY_S)


# Object bytes and connections per size (as `cairn bench compare` runs them: 16 and 4
# connections there; fewer here, where the CPU per request is the figure).
_SIZES = {"4k": (4096, 8), "1m": (MIB, 4), "256m": (256 * MIB, 1)}


def _spec(workload: str, container: str, count: int, pool: int, put_start: int) -> LoadSpec:
    op, size = workload[:3], workload[3:]
    object_bytes, concurrency = _SIZES[size]
    return LoadSpec(
        workload=workload,
        container=container,
        mix={op: 1.0},
        object_bytes=object_bytes,
        concurrency=concurrency,
        count=count,
        pool=pool,
        put_start=put_start,
        chunk_bytes=MIB if size != "4k" else 64 * 1024,
    )


def _pyspy_bin() -> str | None:
    venv = Path(sys.executable).parent / "py-spy"
    return str(venv) if venv.exists() else shutil.which("py-spy")


_ROLE_MODULES = (
    ("proxy", "proxy.server"),
    ("object", "objectd.server"),
    ("container", "containerd.server"),
    ("account", "accountd.server"),
)


def _role_of(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    return next((role for role, mod in _ROLE_MODULES if mod in cmd), "other")


def _split(roots: tuple[int, ...]) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds per role, over the trees under `roots`, now."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, tuple[float, float]] = {}
    for pid in tree_pids(roots):
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        user, system = int(f[11]) + int(f[13]), int(f[12]) + int(f[14])
        u0, s0 = out.get(_role_of(pid), (0.0, 0.0))
        out[_role_of(pid)] = (u0 + user / tick, s0 + system / tick)
    return out


def _split_line(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], ops: int
) -> str:
    parts = []
    for role, (u1, s1) in sorted(after.items()):
        u0, s0 = before.get(role, (0.0, 0.0))
        parts.append(f"{role} {1000 * (u1 - u0) / ops:.2f}u+{1000 * (s1 - s0) / ops:.2f}s")
    return "    ms/op by role (user+system): " + ", ".join(parts)


def _roles(cluster: CairnCluster) -> dict[str, int]:
    """Every proxy worker, object- and container-server process that serves requests (the
    leaves)."""
    pids = tree_pids(cluster.server_pids)
    found: dict[str, int] = {}
    for pid in sorted(pids):
        role = _role_of(pid)
        leaf = not [p for p in tree_pids([pid]) if p != pid]
        if role in ("proxy", "object", "container") and leaf:
            found[f"{role}-{pid}"] = pid
    return found


def _start_pyspy(
    cluster: CairnCluster, out: Path, workload: str, gil: bool = False
) -> list[subprocess.Popen[bytes]]:
    exe = _pyspy_bin()
    if exe is None:
        print("py-spy not found; skipping profiles", file=sys.stderr)
        return []
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for role, pid in _roles(cluster).items():
        dest = out / f"{workload}-{role}.txt"
        procs.append(
            subprocess.Popen(
                [
                    exe,
                    "record",
                    "--nonblocking",
                    *(["--gil"] if gil else []),
                    "-p",
                    str(pid),
                    "-f",
                    "raw",
                    "-r",
                    "100",
                    "-o",
                    str(dest),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(1.0)  # let py-spy attach before the load starts
    return procs


def _stop_pyspy(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(2)  # SIGINT: py-spy writes its output and exits
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def measure(
    cluster: CairnCluster,
    small: int,
    large: int,
    reps: int,
    pyspy: Path | None,
    workloads: tuple[str, ...] = ("put4k", "get4k", "put256m", "get256m"),
    pyspy_gil: bool = False,
    mid: int = 100,
) -> list[Figure]:
    target = swift_auth(cluster.auth_url, ADMIN_USER, ADMIN_KEY)
    probe = TreeCPU(list(cluster.server_pids))
    figures = []
    for workload in workloads:
        count = small if workload.endswith("4k") else mid if workload.endswith("1m") else large
        cpu, thr, mbs, errors = [], [], [], 0
        for rep in range(reps):
            container = f"prof-{workload[3:]}-{rep}"
            if workload.startswith("put"):
                _make_container(target, container)
            spec = _spec(
                workload,
                container,
                count,
                pool=count if workload.startswith("get") else 0,
                put_start=0,
            )
            procs = _start_pyspy(cluster, pyspy, workload, pyspy_gil) if pyspy and rep == 0 else []
            split0 = _split(cluster.server_pids)
            probe.start()
            (result,) = run_load(target, spec)
            used = probe.stop()
            split_line = _split_line(split0, _split(cluster.server_pids), max(1, result.ops))
            _stop_pyspy(procs)
            ok = max(1, result.ops)
            cpu.append(1000.0 * used / ok)
            thr.append(result.ops_per_s)
            mbs.append(result.bytes_moved / result.duration_s / 1e6 if result.duration_s else 0)
            errors += result.errors
        figures.append(Figure(workload, reps, count, cpu, thr, mbs, errors, os.getloadavg()[0]))
        print(figures[-1].row(), flush=True)
        print(split_line, flush=True)
    return figures


_KNOWN = ("put4k", "get4k", "put1m", "get1m", "put256m", "get256m")


def _ordered(spec: str) -> tuple[str, ...]:
    """The chosen workloads in a runnable order: a GET reads what the PUT of its size wrote."""
    chosen = {w.strip() for w in spec.split(",") if w.strip()}
    unknown = chosen - set(_KNOWN)
    if unknown:
        raise SystemExit(f"unknown workloads {sorted(unknown)}; choose from {', '.join(_KNOWN)}")
    for size in _SIZES:
        if f"get{size}" in chosen:
            chosen.add(f"put{size}")
    return tuple(w for w in _KNOWN if w in chosen)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--small", type=int, default=400, help="4 KiB requests per repetition")
    ap.add_argument("--mid", type=int, default=100, help="1 MiB requests per repetition")
    ap.add_argument("--large", type=int, default=1, help="256 MiB requests per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="proxy workers")
    ap.add_argument("--base", type=Path, default=Path("bench-out/profile-object-path"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--pyspy", type=Path, default=None)
    ap.add_argument("--pyspy-gil", action="store_true", help="sample only the GIL holder")
    ap.add_argument("--workloads", default="put4k,get4k,put256m,get256m")
    ap.add_argument(
        "--keep-data",
        action="store_true",
        help="leave this run's cluster set aside instead of deleting it (A/B runs in a row:"
        " no deletion slows the next run's PUTs, bench/fsquiet.py); delete it yourself later",
    )
    args = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    # The last run's cluster is deleted after measuring, never right before (bench/fsquiet.py).
    out = args.base.parent
    out.mkdir(parents=True, exist_ok=True)
    aside = set_aside(out, (args.base.name,))
    purged_s_ago = recent_purge(out)
    if purged_s_ago is not None:
        print(f"# {purge_warning(purged_s_ago)}", flush=True)
    try:
        with (
            running_cairn(args.base, args.workers) as cluster,
            paused_daemons(cluster.daemon_pids),
        ):
            print(f"# {started}, load average {os.getloadavg()}", flush=True)
            print(_HEADER, flush=True)
            figures = measure(
                cluster,
                args.small,
                args.large,
                args.reps,
                args.pyspy,
                _ordered(args.workloads),
                args.pyspy_gil,
                args.mid,
            )
    finally:
        if args.keep_data:
            set_aside(out, (args.base.name,))
        else:
            purge(out, [*aside, args.base])
    if args.json:
        args.json.write_text(
            json.dumps({"started": started, "figures": [f.__dict__ for f in figures]}, indent=1)
        )
    return 0 if all(f.errors == 0 for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
