"""Measure blockd's volume data path for several chunk sizes against a modelled object store.

The store is MemoryObjectStore with a per-request latency and one shared link of limited
bandwidth, standing in for a 3-replica PUT/GET through the ring (see docs/block.md for the
numbers chosen and the result). The cache, the volume and the workloads are the real code.

    .venv/bin/python -m bench.blockd_chunk_size [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import sys
from collections.abc import Awaitable, Callable

from blockd.cache import ChunkCache
from blockd.chunkstore import RESERVED_ACCOUNT, ChunkStore
from blockd.store import MemoryObjectStore
from blockd.volume import Volume

BS = 512
KIB = 1024
MIB = 1024 * KIB
VOLUME_BYTES = 256 * MIB
CACHE_BYTES = 64 * MIB
PUT_LATENCY_S = 0.004  # HTTP to 3 object servers in parallel + fsync of file and directory
GET_LATENCY_S = 0.0015
LINK_BYTES_PER_S = 1e9  # bytes the blockd host can push to the replicas (3 copies share it)
# blockd's own CPU per HTTP request (Python client, one core): a put is 3 requests, a get 1.
CPU_S_PER_REQUEST = 0.0002
_cpu_s_per_request = CPU_S_PER_REQUEST


class ModelStore(MemoryObjectStore):
    """MemoryObjectStore plus one serialised CPU: each request first takes its CPU turn."""

    def __init__(self) -> None:
        super().__init__(PUT_LATENCY_S, GET_LATENCY_S, LINK_BYTES_PER_S / 3)
        self._cpu_free_at = 0.0

    async def _cpu(self, requests: int) -> None:
        now = asyncio.get_running_loop().time()
        self._cpu_free_at = max(now, self._cpu_free_at) + requests * _cpu_s_per_request
        await asyncio.sleep(self._cpu_free_at - now)

    async def put(self, account, container, obj, data, headers=None):
        await self._cpu(3)
        await super().put(account, container, obj, data, headers)

    async def get(self, account, container, obj, *, version=None):
        await self._cpu(1)
        return await super().get(account, container, obj, version=version)


VOLUME_ID = "beec" * 8


def _volume(chunk_bytes: int, prefilled: bool) -> Volume:
    store = ModelStore()
    chunks = ChunkStore(store, VOLUME_ID, VOLUME_BYTES, chunk_bytes)
    if prefilled:  # one shared body: a full volume without the memory
        body = bytes([0xA5]) * chunk_bytes
        for idx in range(chunks.num_chunks):
            store._objects[(RESERVED_ACCOUNT, chunks.container, chunks.object_name(idx))] = (
                body,
                {},
            )
    return Volume(chunks, ChunkCache(CACHE_BYTES, backpressure_timeout_s=600), block_size=BS)


async def _timed(fn: Callable[[], Awaitable[None]]) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await fn()
    return loop.time() - t0


async def _workers(qd: int, ops: list[Callable[[], Awaitable[None]]]) -> None:
    queue = list(reversed(ops))

    async def worker() -> None:
        while queue:
            await queue.pop()()

    await asyncio.gather(*(worker() for _ in range(qd)))


async def rand_write_iops(chunk_bytes: int, n: int, rng: random.Random) -> float:
    vol = _volume(chunk_bytes, prefilled=True)
    data = bytes(4 * KIB)
    lbas = [rng.randrange(vol.num_blocks // 8) * 8 for _ in range(n)]

    async def one(lba: int) -> None:
        await vol.write(lba, data)

    async def run() -> None:
        await _workers(32, [functools.partial(one, lba) for lba in lbas])
        await vol.flush()

    return n / await _timed(run)


async def rand_read_iops(chunk_bytes: int, n: int, rng: random.Random) -> float:
    vol = _volume(chunk_bytes, prefilled=True)
    lbas = [rng.randrange(vol.num_blocks // 8) * 8 for _ in range(n)]

    async def one(lba: int) -> None:
        await vol.read(lba, 8)

    async def run() -> None:
        await _workers(32, [functools.partial(one, lba) for lba in lbas])

    return n / await _timed(run)


async def seq_write_mbs(chunk_bytes: int, total: int) -> float:
    vol = _volume(chunk_bytes, prefilled=False)
    data = bytes([1]) * MIB
    step = MIB // BS

    async def one(i: int) -> None:
        await vol.write(i * step, data)

    async def run() -> None:
        await _workers(8, [functools.partial(one, i) for i in range(total // MIB)])
        await vol.flush()

    return total / MIB / await _timed(run)


async def seq_read_mbs(chunk_bytes: int, total: int) -> float:
    vol = _volume(chunk_bytes, prefilled=True)
    step = MIB // BS

    async def run() -> None:
        for i in range(total // MIB):  # QD1: only prefetch overlaps store round trips
            await vol.read(i * step, step)

    return total / MIB / await _timed(run)


async def fua_latency_ms(chunk_bytes: int, n: int) -> float:
    vol = _volume(chunk_bytes, prefilled=True)
    data = bytes(4 * KIB)

    async def run() -> None:
        for i in range(n):
            await vol.write(i * 8, data, fua=True)

    return await _timed(run) / n * 1000


async def measure(chunk_bytes: int, quick: bool, only: str) -> dict[str, float]:
    rng = random.Random(chunk_bytes)
    scale = 4 if quick else 1
    jobs: dict[str, Callable[[], Awaitable[float]]] = {
        "rand_write_4k_qd32_iops": lambda: rand_write_iops(chunk_bytes, 2000 // scale, rng),
        "rand_read_4k_qd32_iops": lambda: rand_read_iops(chunk_bytes, 2000 // scale, rng),
        "seq_write_1m_qd8_mbs": lambda: seq_write_mbs(chunk_bytes, 128 * MIB // scale),
        "seq_read_1m_qd1_mbs": lambda: seq_read_mbs(chunk_bytes, 128 * MIB // scale),
        "fua_write_4k_qd1_ms": lambda: fua_latency_ms(chunk_bytes, 100 // scale),
    }
    return {name: await job() for name, job in jobs.items() if only in name}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a quarter of the operations")
    ap.add_argument("--chunks-kib", default="64,256,1024,4096")
    ap.add_argument("--cpu-us", type=float, default=CPU_S_PER_REQUEST * 1e6)
    ap.add_argument("--only", default="", help="run only the jobs whose name contains this")
    args = ap.parse_args(argv)
    global _cpu_s_per_request
    _cpu_s_per_request = args.cpu_us / 1e6
    sizes = [int(s) * KIB for s in args.chunks_kib.split(",")]
    print(
        f"store model: put {PUT_LATENCY_S * 1000} ms, get {GET_LATENCY_S * 1000} ms, "
        f"link {LINK_BYTES_PER_S / 3 / 1e6:.0f} MB/s per replica copy, "
        f"{_cpu_s_per_request * 1e6:.0f} us CPU per replica request; "
        f"volume {VOLUME_BYTES // MIB} MiB, cache {CACHE_BYTES // MIB} MiB"
    )
    rows = {size: asyncio.run(measure(size, args.quick, args.only)) for size in sizes}
    keys = list(next(iter(rows.values())))
    print("chunk".ljust(10) + "".join(k.rjust(26) for k in keys))
    for size, row in rows.items():
        print(f"{size // KIB} KiB".ljust(10) + "".join(f"{row[k]:26.1f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
