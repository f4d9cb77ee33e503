"""The benchmark workloads, run one at a time against a system under test.

4 KiB PUT/GET/HEAD/DELETE, 1 MiB PUT/GET, one 256 MiB object PUT/GET and a listing of a
container of 10,000 objects. Fixed-size PUT/GET go through wrk when it is installed; HEAD,
DELETE (each object once), large objects and listings through the Python generator. Each
repetition uses its own containers; GET/HEAD/DELETE work on the objects its PUT left.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bench.aioload import LoadSpec, run_load
from bench.stats import Result
from bench.target import Target
from bench.wrk import WrkJob, run_wrk, wrk_path

__all__ = [
    "WORKLOADS",
    "CpuProbe",
    "SuiteSpec",
    "SystemUnderTest",
    "full_spec",
    "prepare_listing",
    "quick_spec",
    "run_workload",
]

KIB = 1024
MIB = 1024 * KIB
WORKLOADS = (
    "put4k",
    "get4k",
    "head4k",
    "delete4k",
    "put1m",
    "get1m",
    "put256m",
    "get256m",
    "list",
)
_CONTAINER_TIMEOUT_S = 30.0
LISTING_FILL_MIN_SHARE = 0.99


@dataclass(frozen=True)
class SuiteSpec:
    concurrency: int = 16  # 4 KiB requests
    small_s: int = 10  # 4 KiB PUT/GET/HEAD, and the cap on DELETE
    # 1 MiB requests: fewer connections, so the requests still in flight when a timed run
    # ends (their server CPU is counted, their completion is not) stay few against those done.
    mid_concurrency: int = 4
    mid_s: int = 8  # 1 MiB PUT/GET
    list_s: int = 8
    large_bytes: int = 256 * MIB
    listing_objects: int = 10_000
    listing_concurrency: int = 2
    use_wrk: bool = True
    wrk_threads: int = 1


def full_spec(use_wrk: bool = True) -> SuiteSpec:
    return SuiteSpec(use_wrk=use_wrk)


def quick_spec(use_wrk: bool = True) -> SuiteSpec:
    """Short runs (and a 500-object listing) so `compare --quick` ends within 5 minutes."""
    return SuiteSpec(small_s=2, mid_s=3, list_s=2, listing_objects=500, use_wrk=use_wrk)


class CpuProbe(Protocol):
    def start(self) -> None: ...

    def stop(self) -> float: ...


@dataclass
class SystemUnderTest:
    name: str
    target: Target
    probe: CpuProbe
    pools: dict[str, int] = field(default_factory=dict)  # "<rep>:<size>" -> objects left
    listing_filled: int | None = None  # objects the listing fill created; None: not tried
    # CPU of processes outside the per-request figure (background daemons), for the record.
    background: CpuProbe | None = None
    # Roots of those daemons' process trees, paused (SIGSTOP) while the workloads run.
    daemon_roots: tuple[int, ...] = ()


def _container(sut: SystemUnderTest, name: str) -> None:
    """Create a container (or S3 bucket); one that exists already is fine (Swift 202, S3 409)."""
    url, headers = sut.target.request("PUT", name)
    req = urllib.request.Request(url, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=_CONTAINER_TIMEOUT_S) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        e.close()
        status = e.code
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeError(f"{sut.name}: creating container {name} failed: {e}") from None
    if not (200 <= status < 300 or status == 409):
        raise RuntimeError(f"{sut.name}: creating container {name}: HTTP {status}")


def _measured(sut: SystemUnderTest, fn: Callable[[], Result]) -> Result:
    sut.probe.start()
    try:
        result = fn()
    finally:
        cpu = sut.probe.stop()
    result.server_cpu_s = cpu
    return result


def _wrk_or_python(
    sut: SystemUnderTest,
    spec: SuiteSpec,
    workload: str,
    method: str,
    container: str,
    size: int,
    duration_s: int,
    pool: int,
    concurrency: int,
) -> tuple[Result, int]:
    """Run it with wrk if possible; returns the result and, after a PUT, the objects left."""
    headers = sut.target.static_headers()
    wrk_ok = method in ("PUT", "GET") and wrk_path() is not None and headers is not None
    if spec.use_wrk and wrk_ok and headers is not None:
        job = WrkJob(
            method=method,
            container_path=sut.target.container_path(container),
            prefix="o",
            headers=headers,
            duration_s=duration_s,
            connections=concurrency,
            threads=spec.wrk_threads,
            object_bytes=size,
            pool=pool,
        )
        outs = []

        def go() -> Result:
            result, out = run_wrk(sut.target.base_url, job, workload)
            outs.append(out)
            return result

        result = _measured(sut, go)
        return result, outs[0].pool_left(job.threads)
    load = LoadSpec(
        workload=workload,
        container=container,
        mix={method.lower(): 1.0},
        object_bytes=size,
        concurrency=concurrency,
        duration_s=duration_s,
        pool=pool,
    )
    result = _measured(sut, lambda: run_load(sut.target, load)[0])
    return result, result.ops


def _top_up(sut: SystemUnderTest, container: str, size: int, pool: int, want: int) -> int:
    """Make objects o<pool>..o<want-1> (not measured) when a timed PUT left too few."""
    if pool >= want:
        return pool
    load = LoadSpec(
        workload="top-up", container=container, mix={"put": 1.0}, object_bytes=size,
        concurrency=min(4, want - pool), count=want - pool, prefix="o", put_start=pool,
    )  # fmt: skip
    r = run_load(sut.target, load)[0]
    if r.errors:
        raise RuntimeError(f"{sut.name}: could not create objects to read: {r.extra}")
    return want


def _small(sut: SystemUnderTest, spec: SuiteSpec, workload: str, rep: int) -> Result:
    op, size_name = workload[:-2], workload[-2:]
    size = 4 * KIB if size_name == "4k" else MIB
    duration = spec.small_s if size_name == "4k" else spec.mid_s
    conc = spec.concurrency if size_name == "4k" else spec.mid_concurrency
    container = f"bench-{rep}-{size_name}"
    key = f"{rep}:{size_name}"
    if op == "put":
        _container(sut, container)
        r, left = _wrk_or_python(sut, spec, workload, "PUT", container, size, duration, 0, conc)
        sut.pools[key] = left  # objects o0..o<left-1> exist
        return r
    if op in ("get", "head"):
        # A PUT run on an overloaded machine may have finished next to nothing: read at least
        # one object per connection, or the GET would measure a handful of cached reads.
        pool = sut.pools[key] = _top_up(sut, container, size, sut.pools.get(key, 0), conc)
        method = op.upper()
        return _wrk_or_python(sut, spec, workload, method, container, size, duration, pool, conc)[0]
    pool = sut.pools.get(key, 0)
    if pool <= 0:
        raise RuntimeError(f"{workload} needs the objects of a successful put{size_name}")
    load = LoadSpec(
        workload=workload,
        container=container,
        mix={"delete": 1.0},
        concurrency=conc,
        duration_s=duration,
        count=pool,
        pool=pool,
    )
    r = _measured(sut, lambda: run_load(sut.target, load)[0])
    sut.pools[key] = 0
    return r


def _large(sut: SystemUnderTest, spec: SuiteSpec, workload: str, rep: int) -> Result:
    container = f"bench-{rep}-large"
    op = workload[:3]
    if op == "put":
        _container(sut, container)
    load = LoadSpec(
        workload=workload,
        container=container,
        mix={op: 1.0},
        object_bytes=spec.large_bytes,
        concurrency=1,
        count=1,
        pool=1 if op == "get" else 0,
    )
    r = _measured(sut, lambda: run_load(sut.target, load)[0])
    if op == "get":  # free the disk space (3 x 256 MiB per copy); not measured
        run_load(
            sut.target,
            LoadSpec(
                workload="cleanup",
                container=container,
                mix={"delete": 1.0},
                count=1,
                pool=1,
                concurrency=1,
            ),
        )
    return r


def prepare_listing(sut: SystemUnderTest, spec: SuiteSpec) -> Result:
    """Fill the listing container with `listing_objects` empty objects (not measured)."""
    _container(sut, "bench-listing")
    load = LoadSpec(
        workload="listing-fill",
        container="bench-listing",
        mix={"put": 1.0},
        object_bytes=0,
        concurrency=max(spec.concurrency, 16),
        count=spec.listing_objects,
    )
    r = run_load(sut.target, load)[0]
    sut.listing_filled = r.ops
    return r


def _listing(sut: SystemUnderTest, spec: SuiteSpec, workload: str) -> Result:
    if sut.listing_filled is None:
        prepare_listing(sut, spec)
    filled = sut.listing_filled or 0
    # An overloaded server may time out a few of the thousands of PUTs: list what is there
    # (the count is reported), but not a container that is mostly missing.
    if filled < LISTING_FILL_MIN_SHARE * spec.listing_objects:
        raise RuntimeError(f"the listing fill made only {filled} of {spec.listing_objects} objects")
    load = LoadSpec(
        workload=workload,
        container="bench-listing",
        mix={"list": 1.0},
        concurrency=spec.listing_concurrency,
        duration_s=spec.list_s,
        list_limit=spec.listing_objects,
    )
    r = _measured(sut, lambda: run_load(sut.target, load)[0])
    r.extra["objects_listed"] = filled
    return r


def run_workload(sut: SystemUnderTest, spec: SuiteSpec, workload: str, rep: int) -> Result:
    """Run one workload; errors become a result with ops=0 and the reason in `extra`."""
    try:
        if workload in ("put256m", "get256m"):
            return _large(sut, spec, workload, rep)
        if workload == "list":
            return _listing(sut, spec, workload)
        return _small(sut, spec, workload, rep)
    except (RuntimeError, ValueError, OSError) as e:
        return Result(
            workload=workload,
            ops=0,
            errors=1,
            duration_s=0.0,
            server_cpu_s=math.nan,
            extra={"failed": str(e)},
        )
