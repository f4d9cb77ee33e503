"""Listing speed on a 1,000,000-row container: prefix + delimiter pages straight from LMDB.

Run: .venv/bin/python -m bench.listing_bench [--rows N] [--dir DIR]
Prints timings (no thresholds). The reference point measured in the same run is a full scan
of the same rows through one LMDB cursor, which is what a listing without seeks would cost.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from common.listingdb import EnvOptions, ListingParams, acquire_env, release_env
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker

BATCH_ROWS = 100_000


def _names(rows: int, rng: random.Random) -> list[str]:
    # 100 top-level "directories", each with sub-directories of objects: a photo-library shape.
    return [f"user{rng.randrange(100):03d}/album{i % 1000:04d}/img{i:08d}.jpg" for i in range(rows)]


def _load(broker: ContainerBroker, names: list[str]) -> float:
    started = time.perf_counter()
    for start in range(0, len(names), BATCH_ROWS):
        batch = names[start : start + BATCH_ROWS]
        broker.merge_rows(
            [
                {
                    "name": n,
                    "t": "1700000000.00000",
                    "s": 1024,
                    "c": "image/jpeg",
                    "e": "0" * 32,
                    "d": False,
                }
                for n in batch
            ]
        )
    return time.perf_counter() - started


def _time(broker: ContainerBroker, params: ListingParams, repeat: int = 20) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(repeat):
        started = time.perf_counter()
        got = broker.list_rows(params)
        best = min(best, time.perf_counter() - started)
        count = len(got[1]) if got else 0
    return best, count


def _full_scan(broker: ContainerBroker) -> float:
    env = broker.env
    started = time.perf_counter()
    with env.env.begin(db=env.rows) as txn:
        for _ in txn.cursor().iternext(keys=True, values=True):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="where to build the database (default: temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        env = acquire_env(Path(tmp) / "containers.lmdb", EnvOptions(map_bytes=1 << 36, threads=1))
        try:
            broker = ContainerBroker(env, 0, "0" * 32)
            broker.create_or_update("AUTH_bench", "photos", Timestamp.from_float(1.0), {})
            names = _names(args.rows, random.Random(42))
            load_s = _load(broker, names)
            print(f"rows: {args.rows:,}  load: {load_s:.1f} s ({args.rows / load_s:,.0f} rows/s)")
            cases = {
                "delimiter=/ (top level)": ListingParams(delimiter="/"),
                "prefix=user042/ delimiter=/": ListingParams(prefix="user042/", delimiter="/"),
                "prefix=user042/album0500/ delimiter=/": ListingParams(
                    prefix="user042/album0500/", delimiter="/"
                ),
                "prefix=user042/ delimiter=/ reverse": ListingParams(
                    prefix="user042/", delimiter="/", reverse=True
                ),
                "limit=10000 (first page, no delimiter)": ListingParams(limit=10_000),
            }
            for label, params in cases.items():
                best_s, count = _time(broker, params)
                print(f"{label:42s} {count:6d} entries  best of 20: {best_s * 1000:8.2f} ms")
            scan_s = _full_scan(broker)
            print(
                f"{'reference: full cursor scan of all rows':42s} {'':14s} {scan_s * 1000:8.0f} ms"
            )
        finally:
            release_env(env)


if __name__ == "__main__":
    main()
