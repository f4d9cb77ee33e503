"""Multi-connection asyncio (uvloop + aiohttp) load generator for any `Target`.

Used for what wrk does not do well: count-bounded runs (DELETE each object once,
populating a container), listings, large objects streamed in both directions (a 256 MiB PUT
sends one reused 1 MiB buffer; a GET counts and drops what it reads), and operation mixes.
Its own CPU time (getrusage of this process) is reported with every result.
"""

from __future__ import annotations

import asyncio
import random
import resource
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp

from bench.stats import Result
from bench.target import Target

__all__ = ["OPS", "LoadSpec", "clear_stop", "request_stop", "run_load"]

OPS = ("put", "get", "head", "delete", "list")
# Set from a signal handler to end every running load early (runs may sit in other threads,
# where KeyboardInterrupt never arrives); cleared when a new run starts in the main thread.
_STOP = threading.Event()


def request_stop() -> None:
    """Make every running `run_load` finish its requests in flight and return."""
    _STOP.set()


def clear_stop() -> None:
    """Allow loads to run again after `request_stop`."""
    _STOP.clear()


MIB = 1024 * 1024
_OK = range(200, 300)


@dataclass(frozen=True)
class LoadSpec:
    """What to run. Ends at `duration_s` or after `count` requests, whichever comes first."""

    workload: str
    container: str
    mix: dict[str, float]  # op -> weight
    object_bytes: int = 4096
    concurrency: int = 16
    duration_s: float | None = None
    count: int | None = None
    prefix: str = "o"
    pool: int = 0  # objects <prefix>0..pool-1 exist before the run
    put_start: int = 0  # new objects are named from <prefix><put_start> on
    chunk_bytes: int = MIB
    request_timeout_s: float = 600.0
    list_limit: int = 10_000
    seed: int = 1

    def __post_init__(self) -> None:
        bad = set(self.mix) - set(OPS)
        if bad or not self.mix or any(w < 0 for w in self.mix.values()):
            raise ValueError(f"mix must weight some of {OPS}, got {self.mix}")
        if self.duration_s is None and self.count is None:
            raise ValueError("give a duration or a count")
        if self.concurrency < 1 or self.object_bytes < 0 or self.chunk_bytes < 1:
            raise ValueError("concurrency >= 1, object_bytes >= 0, chunk_bytes >= 1")


@dataclass
class _State:
    spec: LoadSpec
    rng: random.Random
    deadline: float
    live: list[str]
    next_put: int
    issued: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    moved: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_error: str = ""

    def take(self) -> bool:
        if _STOP.is_set():
            return False
        if self.spec.count is not None and self.issued >= self.spec.count:
            return False
        if time.monotonic() >= self.deadline:
            return False
        self.issued += 1
        return True

    def pick(self) -> tuple[str, str | None]:
        ops, weights = zip(*self.spec.mix.items(), strict=True)
        op = self.rng.choices(ops, weights)[0]
        if op == "list":
            return op, None
        if op in ("get", "head", "delete") and not self.live:
            if set(self.spec.mix) <= {"get", "head", "delete"}:
                return "", None  # nothing left to read or delete: this worker is done
            op = "put"
        if op == "put":
            name = f"{self.spec.prefix}{self.next_put}"
            self.next_put += 1
            return op, name
        if op == "delete":
            i = self.rng.randrange(len(self.live))
            self.live[i], self.live[-1] = self.live[-1], self.live[i]
            return op, self.live.pop()
        return op, self.rng.choice(self.live)


async def _body(buf: bytes, total: int) -> AsyncIterator[bytes]:
    view = memoryview(buf)
    left = total
    while left > 0:
        n = min(left, len(buf))
        yield view[:n].tobytes() if n < len(buf) else buf
        left -= n


async def _one(
    session: aiohttp.ClientSession, target: Target, st: _State, op: str, name: str | None
) -> tuple[bool, int, str]:
    spec = st.spec
    if op == "list":
        url, headers = target.request(
            "GET", spec.container, None, f"format=json&limit={spec.list_limit}"
        )
        method = "GET"
    else:
        method = op.upper()
        url, headers = target.request(method, spec.container, name)
    data: bytes | AsyncIterator[bytes] | None = None
    if op == "put":
        headers = {**headers, "Content-Length": str(spec.object_bytes)}
        if spec.object_bytes <= len(_buffer(spec)):
            data = _buffer(spec)[: spec.object_bytes]
        else:
            data = _body(_buffer(spec), spec.object_bytes)
    async with session.request(method, url, headers=headers, data=data) as resp:
        got = 0
        async for chunk in resp.content.iter_chunked(spec.chunk_bytes):
            got += len(chunk)
        ok = resp.status in _OK
        why = "" if ok else f"{method} {name or ''} -> {resp.status}"
    moved = spec.object_bytes if op == "put" else got if op in ("get", "list") else 0
    return ok, moved if ok else 0, why


_BUFFERS: dict[tuple[int, int], bytes] = {}


def _buffer(spec: LoadSpec) -> bytes:
    """Random (incompressible) payload, made once per size and seed and reused."""
    key = (spec.chunk_bytes, spec.seed)
    if key not in _BUFFERS:
        _BUFFERS[key] = random.Random(spec.seed).randbytes(spec.chunk_bytes)
    return _BUFFERS[key]


async def _worker(session: aiohttp.ClientSession, target: Target, st: _State) -> None:
    while st.take():
        op, name = st.pick()
        if not op:
            return
        t0 = time.perf_counter()
        try:
            ok, moved, why = await _one(session, target, st, op, name)
        except (aiohttp.ClientError, TimeoutError) as e:
            ok, moved, why = False, 0, f"{op} {name or ''}: {type(e).__name__}: {e}"
        lat = time.perf_counter() - t0
        if ok:
            st.latencies[op].append(lat)
            st.moved[op] += moved
            if op == "put" and name is not None:
                st.live.append(name)
        else:
            st.errors[op] += 1
            st.first_error = st.first_error or why


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _run(target: Target, spec: LoadSpec) -> list[Result]:
    st = _State(
        spec=spec,
        rng=random.Random(spec.seed),
        deadline=time.monotonic() + (spec.duration_s if spec.duration_s is not None else 1e9),
        live=[f"{spec.prefix}{i}" for i in range(spec.pool)],
        next_put=spec.put_start,
    )
    conn = aiohttp.TCPConnector(limit=spec.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)
    async with aiohttp.ClientSession(
        connector=conn, timeout=timeout, auto_decompress=False
    ) as session:
        cpu0, t0 = _cpu_s(), time.perf_counter()
        await asyncio.gather(*(_worker(session, target, st) for _ in range(spec.concurrency)))
        wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    out = []
    ops = [op for op in OPS if op in spec.mix]
    for op in ops:
        name = spec.workload if len(ops) == 1 else f"{spec.workload}:{op}"
        r = Result.from_latencies(
            name,
            st.latencies[op],
            st.errors[op],
            wall,
            st.moved[op],
            client_cpu_s=cpu,
            tool="python",
        )
        if st.first_error:
            r.extra["first_error"] = st.first_error
        r.extra["live_objects"] = len(st.live)
        out.append(r)
    return out


def run_load(target: Target, spec: LoadSpec) -> list[Result]:
    """Run `spec` against `target` on a fresh (uvloop, when installed) event loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_run(target, spec))
