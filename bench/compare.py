"""`cairn bench compare`: cairn and OpenStack Swift all-in-ones, same machine, same run.

Both systems are started, then each workload runs on both, alternating (A B, then B A), twice
each; every run records throughput, latency, errors, the load generator's CPU and the
server CPU seconds of the system's whole process tree. The table, a JSON file and a PNG
chart go to the output directory; everything started is stopped on the way out, also on
Ctrl-C, SIGTERM or an error. The last line printed is the `ratio ...` line.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from bench.aioload import clear_stop, request_stop
from bench.cairnref import (
    ADMIN_KEY,
    ADMIN_USER,
    CairnCluster,
    CairnRefError,
    paused_daemons,
    running_cairn,
)
from bench.fsquiet import purge, purge_warning, recent_purge, set_aside
from bench.ports import free_ports
from bench.procstat import TreeCPU
from bench.report import Summary, format_table, ratio_line, summarize, to_json, write_chart
from bench.stats import MBPS_WORKLOADS, Result
from bench.swiftref import (
    SwiftLayout,
    SwiftProcesses,
    SwiftRefError,
    ensure_swift,
    running_swift,
)
from bench.target import AuthError, swift_auth
from bench.workloads import (
    WORKLOADS,
    SuiteSpec,
    SystemUnderTest,
    full_spec,
    prepare_listing,
    quick_spec,
    run_workload,
)

__all__ = ["compare", "hardware"]

SYSTEMS = ("cairn", "swift")
REPS = 2


def hardware() -> dict[str, Any]:
    """nproc, CPU model, memory and kernel of this machine."""
    model, mem_kib = "unknown", 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _swift_version(venv: Path) -> str:
    for d in (venv / "lib").glob("python*/site-packages/swift-*.dist-info"):
        return d.name.removeprefix("swift-").removesuffix(".dist-info")
    return "unknown"


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP unwind the run, so every started process is stopped."""

    def handler(signum: int, frame: FrameType | None) -> None:
        request_stop()  # loads running in helper threads end too, so the pools can join
        raise KeyboardInterrupt(f"signal {signum}")

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


Started = tuple[SystemUnderTest, contextlib.AbstractContextManager[object]]


def _entered(cm: contextlib.AbstractContextManager[Any], make: Any) -> Started:
    """Enter `cm`, build the system from what it yields; leave it again if that fails."""
    value = cm.__enter__()
    try:
        return make(value), cm
    except BaseException:
        cm.__exit__(*sys.exc_info())
        raise


def _start_swift(out: Path, venv: Path, workers: int) -> Started:
    bindir = ensure_swift(venv, log=out / "swift-pip.log")
    p = free_ports(8)
    lay = SwiftLayout(
        base=(out / "swift").resolve(),
        proxy_port=p[0],
        node_ports=((p[1], p[2], p[3]), (p[4], p[5], p[6])),
        memcached_port=p[7],
        proxy_workers=workers,
    )

    def make(sp: SwiftProcesses) -> SystemUnderTest:
        target = swift_auth(lay.auth_url, f"{lay.account}:{lay.user}", lay.key)
        return SystemUnderTest("swift", target, TreeCPU(sp.pids))

    return _entered(running_swift(lay, bindir), make)


def _start_cairn(out: Path, workers: int) -> Started:
    def make(cl: CairnCluster) -> SystemUnderTest:
        target = swift_auth(cl.auth_url, ADMIN_USER, ADMIN_KEY)
        sut = SystemUnderTest("cairn", target, TreeCPU(list(cl.server_pids)))
        sut.background = TreeCPU(list(cl.daemon_pids))
        sut.daemon_roots = cl.daemon_pids
        return sut

    return _entered(running_cairn((out / "cairn").resolve(), workers), make)


_START_ERRORS = (SwiftRefError, CairnRefError, AuthError, OSError, subprocess.SubprocessError)


def _start_all(
    stack: contextlib.ExitStack, starters: dict[str, Callable[[], Started]], t0: float
) -> tuple[dict[str, SystemUnderTest], dict[str, str]]:
    """Start the systems side by side; each one that came up is stopped by `stack`."""
    suts: dict[str, SystemUnderTest] = {}
    notes: dict[str, str] = {}
    futs: dict[str, Future[Started]] = {}
    try:
        with ThreadPoolExecutor(max_workers=len(starters)) as pool:
            futs = {name: pool.submit(fn) for name, fn in starters.items()}
            wait(list(futs.values()))
    finally:  # also on Ctrl-C: the pool waited for the starters, so each future is done
        unexpected: BaseException | None = None
        for name, fut in futs.items():
            err = fut.exception() if fut.done() else None
            if not fut.done():
                continue
            if err is None:
                sut, cm = fut.result()
                stack.push(cm)
                suts[name] = sut
                print(f"[{time.monotonic() - t0:6.1f}s] {name} is up", file=sys.stderr)
            elif isinstance(err, _START_ERRORS):
                notes[name] = f"{type(err).__name__}: {err}"
                print(f"{name}: not available: {notes[name]}", file=sys.stderr)
            else:
                unexpected = unexpected or err
        if unexpected is not None:  # raised only once every started system is on the stack
            raise unexpected
    return suts, notes


def _fill_listings(suts: dict[str, SystemUnderTest], spec: SuiteSpec, t0: float) -> None:
    """Fill every system's listing container side by side (not measured)."""
    with ThreadPoolExecutor(max_workers=max(1, len(suts))) as pool:
        futs = {n: pool.submit(prepare_listing, sut, spec) for n, sut in suts.items()}
        for name, fut in futs.items():
            r = fut.result()
            why = f" (first: {r.extra['first_error']})" if r.errors else ""
            print(
                f"[{time.monotonic() - t0:6.1f}s] {name} listing container: {r.ops} objects, "
                f"{r.errors} errors{why}",
                file=sys.stderr,
            )


def _progress(t0: float, name: str, rep: int, r: Result) -> None:
    mbps = r.workload in MBPS_WORKLOADS
    thr = f"{r.mb_per_s:8.1f} MB/s" if mbps else f"{r.ops_per_s:8.1f} op/s"
    why = f" FAILED: {r.extra['failed']}" if "failed" in r.extra else ""
    if r.errors and "first_error" in r.extra:
        why += f" first error: {r.extra['first_error']}"
    print(
        f"[{time.monotonic() - t0:6.1f}s] {name:<5} {r.workload:<8} rep {rep + 1}: {thr}, "
        f"p99 {r.p99_s * 1000:7.1f} ms, {r.errors} errors, server cpu {r.server_cpu_s:.2f}s, "
        f"loadgen cpu {r.client_cpu_s:.2f}s ({r.tool}), "
        f"writeback before it {r.extra.get('settle_s', 0.0):.2f}s{why}",
        file=sys.stderr,
        flush=True,
    )


def settle_writeback() -> float:
    """Write back every dirty page of the machine (sync(2)) and return how long that took.

    Called before each timed run, untimed. A run of small PUTs leaves megabytes of file
    system metadata dirty (inode tables, bitmaps, directory blocks: the fsyncs write only
    the files' and directories' own blocks), which the kernel writes back some seconds
    later, in the middle of whatever runs next; the fsyncs of that run then queue behind
    it. With the systems alternating, each one's first seconds paid for the other's
    writeback, or for the start-up's (docs/performance.md, "Session 15 run").
    """
    t = time.monotonic()
    os.sync()
    return time.monotonic() - t


def _run_all(
    suts: dict[str, SystemUnderTest],
    spec: SuiteSpec,
    t0: float,
    workloads: tuple[str, ...] = WORKLOADS,
    reps: int = REPS,
    settle: Callable[[], float] = settle_writeback,
) -> dict[str, list[Result]]:
    runs: dict[str, list[Result]] = {n: [] for n in suts}
    names = [n for n in SYSTEMS if n in suts]
    for w in workloads:
        for rep in range(reps):
            for name in names if rep % 2 == 0 else names[::-1]:
                settled_s = settle()
                r = run_workload(suts[name], spec, w, rep)
                r.extra["rep"] = rep
                r.extra["settle_s"] = round(settled_s, 3)
                runs[name].append(r)
                _progress(t0, name, rep, r)
    return runs


def compare(
    out: Path,
    quick: bool,
    venv: Path,
    use_wrk: bool = True,
    workloads: tuple[str, ...] = WORKLOADS,
    reps: int = REPS,
) -> int:
    """Run the comparison; prints the table and, last, the ratio line. 0 if both ran.

    `workloads` (in WORKLOADS' order) runs only some of them, e.g. to look at one change;
    the ratio line then says nan for those not run. `reps` runs each workload that many
    times per system, alternating which goes first (more than the default 2 shows how each
    system's figure moves over a fresh cluster's first seconds: compare.json keeps every run
    with its "rep").
    """
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workloads {unknown}; known: {WORKLOADS}")
    if reps < 1:
        raise ValueError(f"reps must be at least 1, not {reps}")
    workloads = tuple(w for w in WORKLOADS if w in workloads)
    out.mkdir(parents=True, exist_ok=True)
    # The last run's data is deleted after measuring, never right before (bench/fsquiet.py).
    aside = set_aside(out, SYSTEMS)
    purged_s_ago = recent_purge(out)
    if purged_s_ago is not None:
        print(purge_warning(purged_s_ago), file=sys.stderr)

    def clean_up() -> None:  # idempotent: a second call finds nothing left to delete
        purge(out, [*aside, *(out / name for name in SYSTEMS)])

    try:
        return _compare(out, quick, venv, use_wrk, workloads, reps, purged_s_ago, clean_up)
    finally:
        clean_up()  # also when the run failed or was interrupted


def _compare(
    out: Path,
    quick: bool,
    venv: Path,
    use_wrk: bool,
    workloads: tuple[str, ...],
    reps: int,
    purged_s_ago: float | None,
    clean_up: Callable[[], None],
) -> int:
    spec = quick_spec(use_wrk) if quick else full_spec(use_wrk)
    workers = os.cpu_count() or 1
    t0 = time.monotonic()
    meta: dict[str, Any] = {
        "hardware": hardware(),
        "quick": quick,
        "spec": asdict(spec),
        "reps": reps,
        "cairn_commit": _git_commit(),
        "swift_version": _swift_version(venv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_start": os.getloadavg(),
        "proxy_workers": workers,
        # the last run's data deleted this long before (None: not within fsquiet.QUIET_S)
        "purged_s_ago": None if purged_s_ago is None else round(purged_s_ago),
    }
    clear_stop()
    with _signals_raise(), contextlib.ExitStack() as stack:
        suts, notes = _start_all(
            stack,
            {
                "swift": lambda: _start_swift(out, venv, workers),
                "cairn": lambda: _start_cairn(out, workers),
            },
            t0,
        )
        if "list" in workloads:
            _fill_listings(suts, spec, t0)
        for sut in suts.values():
            if sut.background is not None:
                sut.background.start()
        with contextlib.ExitStack() as pause:
            # Swift's reference runs no background daemons: cairn's are stopped for the
            # workloads, so both serve them with the same set of processes.
            for sut in suts.values():
                pause.enter_context(paused_daemons(sut.daemon_roots))
            runs = _run_all(suts, spec, t0, workloads, reps)
        meta["background_cpu_s"] = {
            n: round(sut.background.stop(), 2) for n, sut in suts.items() if sut.background
        }
        meta["loadavg_end"] = os.getloadavg()
        print(f"[{time.monotonic() - t0:6.1f}s] stopping both systems", file=sys.stderr)
    meta["elapsed_s"] = round(time.monotonic() - t0, 1)
    clean_up()  # both stopped: their data goes now, so the ratio line stays the last line
    meta["unavailable"] = notes
    summaries: dict[str, dict[str, Summary]] = {
        n: {w: summarize(w, [r for r in rs if r.workload == w]) for w in workloads}
        for n, rs in runs.items()
    }
    (out / "compare.json").write_text(to_json(meta, runs, summaries))
    skipped = write_chart(out / "compare.png", SYSTEMS, summaries)
    c, s = summaries.get("cairn", {}), summaries.get("swift", {})
    print(format_table(SYSTEMS, [(c.get(w), s.get(w)) for w in workloads]))
    print(
        f"(throughput: mean of {reps} runs; cpu/op: CPU ms of the request-serving processes "
        f"per successful request; p99: worst run; errors cairn/swift)"
    )
    for name, cpu in meta["background_cpu_s"].items():
        print(f"{name} background daemons (paused, not in cpu/op): {cpu:.1f} s CPU meanwhile")
    for name, why in notes.items():
        print(f"{name} did not run: {why}")
    print(
        f"wrote {out / 'compare.json'}"
        + (f"; {skipped}" if skipped else f", {out / 'compare.png'}")
    )
    print(ratio_line(c, s))
    return 0 if not notes else 1
