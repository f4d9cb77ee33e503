"""cairn's iSCSI target against Debian's tgt, same jobs, same run (`qemu-img bench` over iscsi://).

    .venv/bin/python -m bench.iscsi_bench [--quick] [--repeat N] [--cluster-volume-url URL]
        [--cluster-data-dir DIR [--keep-daemons]]

Starts (a) ``python -m blockd.target`` with a FileBackend and (b) ``tgtd -f`` on its own
control port (``-C``) and a loopback portal, each serving a file-backed LUN of the same size
in the same directory (``/dev/shm`` when it exists, so the disk is not the limit), then runs
on each: 4 KiB writes and reads at queue depth 32 (IOPS), 1 MiB sequential writes and reads
at queue depth 8 (MB/s) and 4 KiB writes at queue depth 1 (latency). ``qemu-img bench`` has
no random mode: the 4 KiB jobs step 1 MiB + 4 KiB between requests, wrapping at the end of
the LUN, so consecutive requests land far apart. Writes carry the byte 0xA5 (qemu's default,
zeros, would let a thin volume skip the store altogether). Besides the figures it prints each target
process's CPU seconds per I/O (utime + stime from /proc), the steadier figure on a shared
machine. With ``--cluster-volume-url`` the same jobs also run against a cairn volume on a
running cluster; add ``--cluster-data-dir`` (the cluster's ``cairn up --data-dir``) to also get
the CPU per I/O of its blockd and, separately, of its object servers (found with ``cairn status
--json``). For every target the rate including qemu's closing SYNCHRONIZE CACHE is printed too
(``incl. flush``: the whole ``qemu-img`` run, login to logout): a volume acknowledges writes
from its write-back cache, and only that figure counts the replicated flush.

With ``--cluster-data-dir`` the cluster's background daemons (``<node>-<kind>-daemons``:
replicators, auditors, updaters, and their children) are stopped (SIGSTOP) for each job on
the volume and resumed (SIGCONT) after it, also when a job fails or the run is interrupted,
as ``cairn bench compare`` does: tgt does no background work, and what the replicator sends
the object servers (a REPLICATE per partition a pass) depends on the partitions it holds, not
on the job, so it made the volume's rates and object-server CPU swing from run to run. blockd
and the storage servers are not stopped (they serve the I/O). The cluster's processes are
looked up again (``cairn status --json``) before each job on the volume, so a service the
supervisor restarted meanwhile is stopped and counted under its new pid.
``--keep-daemons`` leaves them running during the jobs (the old way of measuring); their CPU
seconds during the volume's jobs are then printed on a line of their own, in no cpu/io
figure. A failed lookup keeps the processes found before (with a warning).

When a 1 MiB write job runs and ``--floor-dir`` (default: ``--cluster-data-dir``) is given,
``bench.durable_floor`` first measures there how fast three fsynced copies of each MiB can be
written with system calls only (``os.sync()`` before it, the cluster's daemons stopped as for
a job); the last line sets tgt's and the volume's 1 MiB write against it. With all of a
cluster's devices on one disk, that floor bounds the volume's sustained write.

Needs qemu-utils, qemu-block-extra and tgt (Debian). Processes are stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cairnref import paused_daemons, service_pids
from bench.durable_floor import FloorResult, measure
from bench.ports import free_ports
from bench.procstat import tree_cpu_s

KIB = 1024
MIB = 1024 * KIB
LUN_BYTES = 1024 * MIB
CAIRN_IQN = "iqn.2026-01.org.cairn:bench"
TGT_IQN = "iqn.2026-01.org.cairn:tgtbench"
START_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 600.0
# Written bytes are this value, not qemu-img bench's default 0: a thin volume stores nothing for
# zeros (an all-zero chunk is a delete, reads of it never reach the store).
WRITE_PATTERN = 0xA5
RUN_RE = re.compile(r"Run completed in ([0-9.]+) seconds")


@dataclass(frozen=True)
class Job:
    name: str
    size_bytes: int
    depth: int
    write: bool
    step_bytes: int
    count_full: int
    count_quick: int
    unit: str  # "IOPS", "MB/s" or "us" (latency per request)


JOBS = (
    Job("4k-randwrite-qd32", 4 * KIB, 32, True, MIB + 4 * KIB, 20000, 4000, "IOPS"),
    Job("4k-randread-qd32", 4 * KIB, 32, False, MIB + 4 * KIB, 20000, 4000, "IOPS"),
    Job("1m-seqwrite-qd8", MIB, 8, True, MIB, 400, 100, "MB/s"),
    Job("1m-seqread-qd8", MIB, 8, False, MIB, 400, 100, "MB/s"),
    Job("4k-write-qd1-lat", 4 * KIB, 1, True, 4 * KIB, 2000, 500, "us"),
)


@dataclass
class Result:
    figure: float
    cpu_per_io_us: float | None
    seconds: float
    figure_incl_flush: float = 0.0  # from the whole qemu-img run, closing flush included
    store_cpu_per_io_us: float | None = None  # a volume's object servers


@dataclass
class Target:
    name: str
    url: str
    pids: list[int] = field(default_factory=list)
    store_pids: list[int] = field(default_factory=list)
    # background daemons stopped for each job's run (a cluster volume's, unless --keep-daemons)
    paused_pids: tuple[int, ...] = ()
    # A cluster volume's: where its processes are now (called before each job), whether its
    # daemons are stopped during the jobs, and their CPU seconds summed over the jobs.
    lookup: Callable[[], ClusterPids] | None = None
    pause_daemons: bool = True
    daemon_pids: tuple[int, ...] = ()
    daemon_cpu_s: float = 0.0

    def take(self, found: ClusterPids) -> None:
        """Use the processes of a fresh lookup (pure bookkeeping)."""
        self.pids = list(found.blockd)
        self.store_pids = list(found.objects)
        self.daemon_pids = found.daemons
        self.paused_pids = found.daemons if self.pause_daemons else ()


@dataclass
class JobCPU:
    """CPU seconds of a target's processes (`pids`) and its object servers over one job."""

    serving_s: float | None = None
    store_s: float | None = None


@contextlib.contextmanager
def job_window(target: Target) -> Iterator[JobCPU]:
    """One job's measurement: the target's background daemons stopped (SIGSTOP) first and
    resumed (SIGCONT) last, also when the job fails or is interrupted; the CPU of its serving
    processes and object servers filled in when the block ends without an error. A target
    with a `lookup` finds its processes again first (a restarted daemon has a new pid)."""
    _look_up_again(target)
    cpu = JobCPU()
    with paused_daemons(target.paused_pids):
        serving0 = tree_cpu_s(target.pids) if target.pids else 0.0
        store0 = tree_cpu_s(target.store_pids) if target.store_pids else 0.0
        daemons0 = [tree_cpu_s([pid]) for pid in target.daemon_pids]
        yield cpu
        if target.pids:
            cpu.serving_s = tree_cpu_s(target.pids) - serving0
        if target.store_pids:
            cpu.store_s = tree_cpu_s(target.store_pids) - store0
        # per daemon: one that exited meanwhile counts nothing, and takes no one else's share
        for pid, before in zip(target.daemon_pids, daemons0, strict=True):
            target.daemon_cpu_s += max(0.0, tree_cpu_s([pid]) - before)


def _look_up_again(target: Target) -> None:
    if target.lookup is not None:
        try:
            target.take(target.lookup())
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            # `cairn status` failed (a service restarting, say): the pids found last time
            print(f"warning: cluster processes not looked up again ({e!r})", file=sys.stderr)


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def cairn_target(workdir: Path, port: int) -> Iterator[Target]:
    path = workdir / "cairn.img"
    cmd = [sys.executable, "-m", "blockd.target", "--port", str(port), "--file", str(path)]
    cmd += ["--size", str(LUN_BYTES), "--iqn", CAIRN_IQN, "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        _wait_port(port, START_TIMEOUT_S)
        yield Target("cairn", f"iscsi://127.0.0.1:{port}/{CAIRN_IQN}/0", [proc.pid])
    finally:
        _stop(proc)


def _tgtadm(control: int, *args: str) -> None:
    cmd = ["tgtadm", "-C", str(control), "--lld", "iscsi", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def tgt_target(workdir: Path, port: int, control: int) -> Iterator[Target]:
    path = workdir / "tgt.img"
    with open(path, "wb") as f:
        f.truncate(LUN_BYTES)
    cmd = ["tgtd", "-f", "-C", str(control), "--iscsi", f"portal=127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, START_TIMEOUT_S)
        _tgtadm(control, "--op", "new", "--mode", "target", "--tid", "1", "-T", TGT_IQN)
        _tgtadm(
            control, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
            "-b", str(path),
        )  # fmt: skip
        _tgtadm(control, "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
        yield Target("tgt", f"iscsi://127.0.0.1:{port}/{TGT_IQN}/1", [proc.pid])
    finally:
        _stop(proc)


def run_job(target: Target, job: Job, quick: bool) -> Result:
    count = job.count_quick if quick else job.count_full
    cmd = ["qemu-img", "bench", "-f", "raw", "-c", str(count)]
    cmd += ["-d", str(job.depth), "-s", str(job.size_bytes), "-S", str(job.step_bytes)]
    if job.write:
        cmd += ["-w", f"--pattern={WRITE_PATTERN}"]
    cmd.append(target.url)
    with job_window(target) as used:
        t0 = time.monotonic()
        out = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=JOB_TIMEOUT_S
        )
        wall_s = time.monotonic() - t0
    cpu, store = used.serving_s, used.store_s
    match = RUN_RE.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    seconds = float(match.group(1))
    return Result(
        _figure(job, count, seconds),
        cpu / count * 1e6 if cpu is not None else None,
        seconds,
        _figure(job, count, wall_s),
        store / count * 1e6 if store is not None else None,
    )


def _figure(job: Job, count: int, seconds: float) -> float:
    if job.unit == "IOPS":
        return count / seconds
    if job.unit == "MB/s":
        return count * job.size_bytes / seconds / 1e6
    return seconds / count * 1e6


def _median_of(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.figure for r in results),
        _median_of([r.cpu_per_io_us for r in results]),
        statistics.median(r.seconds for r in results),
        statistics.median(r.figure_incl_flush for r in results),
        _median_of([r.store_cpu_per_io_us for r in results]),
    )


def _pick_jobs(names: str | None) -> tuple[Job, ...]:
    if not names:
        return JOBS
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {j.name: j for j in JOBS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown job(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[n] for n in wanted)


def run_all(
    targets: list[Target], quick: bool, repeat: int, jobs: Sequence[Job] = JOBS
) -> dict[tuple[str, str], Result]:
    """Each job on each target in turn (interleaved, so load changes hit both alike)."""
    results: dict[tuple[str, str], list[Result]] = {}
    for job in jobs:
        for _ in range(repeat):
            for target in targets:
                res = run_job(target, job, quick)
                results.setdefault((job.name, target.name), []).append(res)
                print(
                    f"  {job.name:18} {target.name:8} {res.figure:10.1f} {job.unit:4}"
                    f" (incl. flush {res.figure_incl_flush:.1f})"
                    f"  cpu/io {_fmt(res.cpu_per_io_us)} us"
                    f" store cpu/io {_fmt(res.store_cpu_per_io_us)} us",
                    file=sys.stderr,
                    flush=True,
                )
    return {key: _median(rs) for key, rs in results.items()}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(job: Job, ours: float, tgt: float) -> float:
    """>1 means ours is better: ours/tgt for rates, tgt/ours for latency."""
    return tgt / ours if job.unit == "us" else ours / tgt


def render(results: dict[tuple[str, str], Result], names: list[str]) -> str:
    ours = [n for n in names if n != "tgt"]
    head = f"{'job':18} {'unit':5}" + "".join(f" {n:>10}" for n in names)
    head += "".join(f" {n + '/tgt':>11}" for n in ours)
    head += "".join(f" {'cpu/io ' + n:>14}" for n in names)
    lines = [head + "   (cpu/io in us of target CPU per request)"]
    for job in JOBS:
        row = f"{job.name:18} {job.unit:5}"
        row += "".join(f" {results[(job.name, n)].figure:10.1f}" for n in names)
        tgt = results[(job.name, "tgt")].figure
        row += "".join(f" {_ratio(job, results[(job.name, n)].figure, tgt):11.2f}" for n in ours)
        row += "".join(f" {_fmt(results[(job.name, n)].cpu_per_io_us):>14}" for n in names)
        lines.append(row)
    lines.append("ratio: x/tgt for IOPS and MB/s, tgt/x for latency (>1: x better)")
    if "volume" in names:
        lines.append(DAEMON_LEGEND)
    lines.append("")
    lines.append("including qemu's closing flush (whole qemu-img run), and object-server CPU:")
    for job in JOBS:
        row = f"{job.name:18} {job.unit:5}"
        row += "".join(f" {results[(job.name, n)].figure_incl_flush:10.1f}" for n in names)
        tgt = results[(job.name, "tgt")].figure_incl_flush
        row += "".join(
            f" {_ratio(job, results[(job.name, n)].figure_incl_flush, tgt):11.2f}" for n in ours
        )
        row += "".join(f" {_fmt(results[(job.name, n)].store_cpu_per_io_us):>14}" for n in names)
        lines.append(row)
    return "\n".join(lines)


DAEMON_LEGEND = (
    "volume: the cluster's background daemons (replicators, auditors, updaters) are stopped"
    " (SIGSTOP) during each job unless --keep-daemons, as tgt has none; blockd and the"
    " storage servers run"
)


@dataclass(frozen=True)
class ClusterPids:
    blockd: list[int]
    objects: list[int]  # object servers (with their workers below them)
    daemons: tuple[int, ...]  # `<node>-<kind>-daemons` roots


def split_services(status: dict[str, Any]) -> ClusterPids:
    """blockd, object servers and background daemons of a `cairn status --json` document
    (pure). A service without a pid (held, or not started yet) is left out."""
    services = [s for s in status.get("services", []) if isinstance(s, dict)]
    blockd = [int(s["pid"]) for s in services if s.get("name") == "blockd" and s.get("pid")]
    objects = [
        int(s["pid"])
        for s in services
        if re.fullmatch(r"node\d+-object", str(s.get("name", ""))) and s.get("pid")
    ]
    return ClusterPids(blockd, objects, service_pids(status)[1])


def cluster_pids(data_dir: str) -> ClusterPids:
    """The processes of a cluster started by `cairn up --data-dir`."""
    out = subprocess.run(
        [sys.executable, "-m", "tools.cli", "status", "--data-dir", data_dir, "--json"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = split_services(json.loads(out.stdout))
    if not found.blockd:
        raise SystemExit(f"no running blockd in {data_dir}")
    return found


FLOOR_JOB = "1m-seqwrite-qd8"
FLOOR_REPLICAS = 3


def durable_floor(directory: Path, volume: Target | None, quick: bool) -> FloorResult:
    """bench.durable_floor's bound for 3 fsynced copies of each MiB, written under
    `directory`, with a cluster volume's background daemons stopped as for its jobs."""
    os.sync()  # nobody's dirty pages in the way
    paused: tuple[int, ...] = ()
    if volume is not None:
        _look_up_again(volume)
        paused = volume.paused_pids  # (not job_window: no CPU of this counts for a job)
    with (
        paused_daemons(paused),
        tempfile.TemporaryDirectory(prefix="durable-floor-", dir=directory) as tmp,
    ):
        return measure(Path(tmp), mib=200 if quick else 800, replicas=FLOOR_REPLICAS)


def floor_line(floor: FloorResult, results: dict[tuple[str, str], Result]) -> str:
    """The floor, and the 1 MiB write figures of this run against it."""
    parts = [
        f"durable floor ({FLOOR_REPLICAS} fsynced copies of each MiB, system calls only,"
        f" bench.durable_floor): {floor.mb_s:.1f} MB/s, machine CPU"
        f" {floor.cpu_ms_per_mib:.2f} ms per MiB"
    ]
    tgt = results.get((FLOOR_JOB, "tgt"))
    if tgt is not None:
        parts.append(f"0.8x tgt's 1 MiB write = {0.8 * tgt.figure:.1f} MB/s")
    vol = results.get((FLOOR_JOB, "volume"))
    if vol is not None:
        parts.append(
            f"volume/floor {vol.figure / floor.mb_s:.2f}"
            f" (incl. flush {vol.figure_incl_flush / floor.mb_s:.2f})"
        )
    return "; ".join(parts)


def _loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.iscsi_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests per job")
    parser.add_argument("--repeat", type=int, default=1, help="runs per job; median reported")
    parser.add_argument("--cluster-volume-url", help="also run the jobs on this iscsi:// URL")
    parser.add_argument("--cluster-data-dir", help="that cluster's data dir (for its CPU)")
    parser.add_argument(
        "--keep-daemons",
        action="store_true",
        help="leave the cluster's background daemons running during the jobs (default: stopped"
        " with SIGSTOP for each job, as tgt has no background work)",
    )
    parser.add_argument("--only", choices=("cairn", "tgt", "volume"), help="run one target only")
    parser.add_argument(
        "--floor-dir",
        help="before a 1 MiB write job, measure bench.durable_floor's 3-replica bound here"
        " (default: --cluster-data-dir, the disk the volume's replicas use)",
    )
    parser.add_argument(
        "--jobs",
        help="comma-separated job names to run (default all: "
        + ", ".join(j.name for j in JOBS)
        + ")",
    )
    args = parser.parse_args(argv)
    jobs = _pick_jobs(args.jobs)
    for tool in ("qemu-img", "tgtd", "tgtadm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install qemu-utils qemu-block-extra tgt")
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    cairn_port, tgt_port = free_ports(2)
    control = 1000 + tgt_port % 20000  # tgtd's control socket /var/run/tgtd/socket.<n>
    print(f"load average before: {_loadavg()} on {os.cpu_count()} CPUs", file=sys.stderr)
    with (
        tempfile.TemporaryDirectory(prefix="iscsi-bench-", dir=base) as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        targets = []
        if args.only in (None, "cairn"):
            targets.append(stack.enter_context(cairn_target(workdir, cairn_port)))
        if args.only in (None, "tgt"):
            targets.append(stack.enter_context(tgt_target(workdir, tgt_port, control)))
        volume: Target | None = None
        if args.cluster_volume_url:
            volume = Target("volume", args.cluster_volume_url, pause_daemons=not args.keep_daemons)
            if args.cluster_data_dir:
                data_dir = args.cluster_data_dir
                volume.lookup = lambda: cluster_pids(data_dir)
            targets.append(volume)
        floor_dir = args.floor_dir or args.cluster_data_dir
        floor: FloorResult | None = None
        if floor_dir and any(j.name == FLOOR_JOB for j in jobs):
            # first: after the jobs, a volume's blockd and the page cache's writeback are
            # still busy with what they wrote, and the floor would count their work
            floor = durable_floor(Path(floor_dir), volume, args.quick)
        results = run_all(targets, args.quick, args.repeat, jobs)
    names = [t.name for t in targets]
    if {"cairn", "tgt"} <= set(names) and jobs == JOBS:
        print(render(results, names))
    else:
        for (job, name), res in results.items():
            print(
                f"{job:18} {name:8} {res.figure:10.1f} (incl. flush {res.figure_incl_flush:.1f})"
                f"  cpu/io {_fmt(res.cpu_per_io_us)} us"
                f"  store cpu/io {_fmt(res.store_cpu_per_io_us)} us"
            )
        if "volume" in names:
            print(DAEMON_LEGEND)
    if floor is not None:
        print(floor_line(floor, results))
    if volume is not None and volume.lookup is not None and args.keep_daemons:
        # (stopped during the jobs by default: nothing to count then)
        print(
            f"background daemons (running during the jobs, not in cpu/io):"
            f" {volume.daemon_cpu_s:.1f} s CPU during the volume's jobs"
            f" ({len(volume.daemon_pids)} daemon processes)"
        )
    print(f"load average after: {_loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
