"""CPU per chunk PUT on the object servers: blockd's store path without blockd or iSCSI.

Puts 1 MiB chunks (`ChunkStore.put`, as blockd's cache flushes them) straight to the object
servers of a cluster started by `cairn up --data-dir DIR`, `--concurrency` at a time, and
prints the rate, the CPU per MiB of the object servers (with their workers), of this client
and of the whole machine (/proc/stat). The chunks belong to a volume id of their own in
blockd's reserved account; `--chunks` of them are first written once (unless `--no-warm`),
then `--puts` overwrite them in turn, as a volume's rewrites do. A figure for A/B of the
object servers' PUT path, steadier than the iSCSI bench's (no initiator, no blockd cache);
no reference is run, so it prints no ratio (bench/iscsi_bench.py has tgt).

    .venv/bin/cairn up --data-dir /var/tmp/cb -d
    .venv/bin/python -m bench.chunk_put --data-dir /var/tmp/cb --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.iscsi_bench import cluster_pids
from bench.procstat import machine_busy_s, tree_cpu_s
from blockd.chunkstore import ChunkStore
from blockd.ringstore import open_ring_store
from common.clock import SystemClock
from common.deploy import load_deployment

__all__ = ["Figure", "main", "measure"]

MIB = 1 << 20
VOLUME_ID = "bench-chunk-put"


@dataclass(frozen=True)
class Figure:
    puts: int
    mib_per_s: float
    objects_ms_per_mib: float
    client_ms_per_mib: float
    machine_ms_per_mib: float


async def measure(data_dir: str, puts: int, concurrency: int, chunks: int, warm: bool) -> Figure:
    cfg = load_deployment(Path(data_dir) / "cairn.toml", data_dir)
    objects = cluster_pids(data_dir).objects
    bodies = [os.urandom(MIB) for _ in range(4)]
    async with open_ring_store(cfg, SystemClock()) as store:
        cs = ChunkStore(store, VOLUME_ID, chunks * MIB, MIB)

        async def run(n: int, start: int) -> None:
            todo = iter(range(start, start + n))

            async def worker() -> None:
                for i in todo:
                    await cs.put(i % chunks, bodies[i % len(bodies)])

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        if warm:
            await run(chunks, 0)
        obj0, busy0, me0, t0 = tree_cpu_s(objects), machine_busy_s(), os.times(), time.monotonic()
        await run(puts, chunks)
        t1, me1, busy1, obj1 = time.monotonic(), os.times(), machine_busy_s(), tree_cpu_s(objects)
    client_s = me1.user + me1.system - me0.user - me0.system
    return Figure(
        puts,
        puts / (t1 - t0),
        1e3 * (obj1 - obj0) / puts,
        1e3 * client_s / puts,
        1e3 * (busy1 - busy0) / puts,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chunk_put", description=__doc__)
    p.add_argument("--data-dir", required=True, help="a cluster's `cairn up --data-dir`")
    p.add_argument("--puts", type=int, default=1500)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--chunks", type=int, default=512, help="distinct chunks (1 MiB each)")
    p.add_argument("--no-warm", action="store_true", help="measure first writes, not rewrites")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    for rep in range(1, args.repeat + 1):
        fig = uvloop.run(
            measure(args.data_dir, args.puts, args.concurrency, args.chunks, not args.no_warm)
        )
        print(
            f"run {rep}: {fig.puts} puts of 1 MiB, {args.concurrency} at a time: "
            f"{fig.mib_per_s:.1f} MiB/s; CPU per MiB: object servers "
            f"{fig.objects_ms_per_mib:.2f} ms, client {fig.client_ms_per_mib:.2f} ms, "
            f"machine {fig.machine_ms_per_mib:.2f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
