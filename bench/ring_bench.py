"""Ring benchmark: cairn's ring builder and lookups against OpenStack Swift's, in the same run.

    python -m bench.ring_bench [--quick] [--out DIR] [--swift-timeout-s N] [--no-swift]

For each size (part power 14/100 devices, 18/500, 20/1000; --quick: 12/100, 14/200, 16/400)
it times the first rebalance, a growth rebalance (+10% devices, min_part_hours waived), and
ring lookups per second (get_nodes on an account/container/object name). Swift is installed
from PyPI (`pip install swift`) into a side venv under DIR (default ./bench-out/swift-venv) and
measured the same way in a child process; if that fails, the reason is printed and cairn's
figures are printed alone. Times are CPU seconds of the measuring process (the machine may be
shared, so wall time is printed too); speedup = Swift time / cairn time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

from ring import Ring, RingBuilder
from ring.devspec import NewDevice
from ring.ringfile import write_ring

FULL_SIZES = [(14, 100), (18, 500), (20, 1000)]
QUICK_SIZES = [(12, 100), (14, 200), (16, 400)]
ZONES = 5
DISKS_PER_SERVER = 10
INSTALL_TIMEOUT_S = 900
LOOKUP_NAMES = 50_000


def topology(i: int) -> tuple[int, int, str, str]:
    """Device i: region 1, zone i % 5, ten disks per server (same for cairn and Swift)."""
    server = i // DISKS_PER_SERVER
    return 1, i % ZONES, f"10.{server // 250}.{server % 250}.1", f"d{i}"


def names(count: int) -> list[tuple[str, str, str]]:
    rng = random.Random(7)
    return [
        (f"AUTH_{rng.randrange(1000)}", f"c{rng.randrange(100)}", f"o{i}") for i in range(count)
    ]


def timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def cairn_case(part_power: int, devices: int, workdir: Path) -> dict[str, Any]:
    b = RingBuilder(part_power, 3, 1)

    def add(i: int) -> None:
        region, zone, ip, dev = topology(i)
        b.add(NewDevice(region, zone, ip, 6200, ip, 6200, dev, 100.0))

    for i in range(devices):
        add(i)
    first, cpu1, wall1 = timed(lambda: b.rebalance(seed=1, now=0))
    for i in range(devices, devices + devices // 10):
        add(i)
    b.pretend_min_part_hours_passed()
    grow, cpu2, wall2 = timed(lambda: b.rebalance(seed=1, now=0))
    path = workdir / f"cairn-{part_power}.ring"
    write_ring(path, b.ring_data())
    ring = Ring(path, "bench-prefix", "bench-suffix")
    todo = names(LOOKUP_NAMES)
    _, cpu3, _ = timed(lambda: [ring.get_nodes(a, c, o) for a, c, o in todo])
    return {
        "rebalance_cpu_s": cpu1,
        "rebalance_wall_s": wall1,
        "balance": first.balance,
        "grow_cpu_s": cpu2,
        "grow_wall_s": wall2,
        "grow_moved_pct": 100.0 * grow.moved / (3 << part_power),
        "grow_balance": grow.balance,
        "lookups_per_s": len(todo) / cpu3 if cpu3 else float("inf"),
    }


SWIFT_SIDE = r"""
import json, random, sys, time, resource
from array import array
from swift.common import utils
utils.HASH_PATH_PREFIX, utils.HASH_PATH_SUFFIX = b"bench-prefix", b"bench-suffix"
from swift.common.ring import RingBuilder, Ring
part_power, devices, zones, per_server, count, out = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
    sys.argv[6])
def dev(i):
    s = i // per_server
    ip = "10.%d.%d.1" % (s // 250, s % 250)
    return {"id": i, "region": 1, "zone": i % zones, "ip": ip, "port": 6200,
            "replication_ip": ip, "replication_port": 6200, "device": "d%d" % i,
            "weight": 100.0, "meta": ""}
def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    r = fn()
    return r, time.process_time() - cpu, time.perf_counter() - wall
b = RingBuilder(part_power, 3, 1)
for i in range(devices):
    b.add_dev(dev(i))
(parts, balance, _), cpu1, wall1 = timed(lambda: b.rebalance(seed=1))
for i in range(devices, devices + devices // 10):
    b.add_dev(dev(i))
b.pretend_min_part_hours_passed()
before = [array("H", r) for r in b._replica2part2dev]
(_, gbalance, _), cpu2, wall2 = timed(lambda: b.rebalance(seed=1))
moved = sum(1 for r0, r1 in zip(before, b._replica2part2dev) for x, y in zip(r0, r1) if x != y)
b.get_ring().save(out)
ring = Ring(out)
rng = random.Random(7)
todo = [("AUTH_%d" % rng.randrange(1000), "c%d" % rng.randrange(100), "o%d" % i)
        for i in range(count)]
_, cpu3, _ = timed(lambda: [ring.get_nodes(a, c, o) for a, c, o in todo])
print(json.dumps({"rebalance_cpu_s": cpu1, "rebalance_wall_s": wall1, "balance": balance,
                  "grow_cpu_s": cpu2, "grow_wall_s": wall2,
                  "grow_moved_pct": 100.0 * moved / (3 << part_power), "grow_balance": gbalance,
                  "lookups_per_s": count / cpu3 if cpu3 else float("inf"),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def swift_python(out: Path) -> tuple[Path | None, str]:
    """The side venv's python with swift installed, or None and why not."""
    env_dir = out / "swift-venv"
    py = env_dir / "bin" / "python"
    try:
        if not py.exists():
            venv.EnvBuilder(with_pip=True).create(env_dir)
        check = subprocess.run(
            [str(py), "-c", "import swift.common.ring"], check=False, capture_output=True
        )
        if check.returncode != 0:
            print("installing swift from PyPI into", env_dir, file=sys.stderr)
            done = subprocess.run(
                [str(py), "-m", "pip", "install", "--quiet", "swift"],
                check=False,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                return None, f"pip install swift failed: {' '.join(tail)}"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not set up the Swift venv: {exc}"
    return py, ""


def swift_case(
    py: Path, part_power: int, devices: int, workdir: Path, timeout_s: float
) -> dict[str, Any] | str:
    script = workdir / "swift_side.py"
    script.write_text(SWIFT_SIDE)
    argv = [str(py), str(script), str(part_power), str(devices), str(ZONES)]
    argv += [str(DISKS_PER_SERVER)]
    argv += [str(LOOKUP_NAMES), str(workdir / f"swift-{part_power}.ring.gz")]
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:.0f} s"
    if done.returncode < 0:
        return f"killed by signal {-done.returncode}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"failed: {lines[-1] if lines else done.returncode}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ratio(swift: float, cairn: float) -> str:
    return f"{swift / cairn:8.1f}x" if cairn > 0 else "       -"


def print_table(rows: list[tuple[int, int, dict[str, Any], dict[str, Any] | str]]) -> None:
    metrics = [
        ("first rebalance, CPU s", "rebalance_cpu_s", "{:10.2f}"),
        ("first rebalance, wall s", "rebalance_wall_s", "{:10.2f}"),
        ("balance after first, %", "balance", "{:10.2f}"),
        ("grow +10% devices, CPU s", "grow_cpu_s", "{:10.2f}"),
        ("grow: part-replicas moved, %", "grow_moved_pct", "{:10.2f}"),
        ("balance after grow, %", "grow_balance", "{:10.2f}"),
        ("lookups per CPU second", "lookups_per_s", "{:10.0f}"),
    ]
    print("speedup = how many times faster cairn is (Swift time / cairn time; rate / rate)")
    print(f"{'metric':<31}{'cairn':>10}{'swift':>10}{'speedup':>12}")
    for pp, devs, ours, theirs in rows:
        print(f"-- part power {pp} ({1 << pp} partitions), {devs} devices, 3 replicas")
        for label, key, fmt in metrics:
            mine = fmt.format(ours[key])
            if isinstance(theirs, str):
                other, rat = f"{'n/a':>10}", ""
            else:
                other = fmt.format(theirs[key])
                rat = ""
                if key == "lookups_per_s":
                    rat = ratio(ours[key], theirs[key])
                elif key.endswith("_s"):
                    rat = ratio(theirs[key], ours[key])
            print(f"{label:<31}{mine:>10}{other:>10}{rat:>12}")
        if isinstance(theirs, str):
            print(f"swift: {theirs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller rings")
    parser.add_argument("--out", default="bench-out", help="where the Swift venv and files go")
    parser.add_argument("--swift-timeout-s", type=float, default=1800.0)
    parser.add_argument("--no-swift", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    py, why = (None, "skipped (--no-swift)") if args.no_swift else swift_python(out)
    if py is None:
        print(f"Swift not measured: {why}")
    rows = []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        for pp, devs in sizes:
            print(f"measuring part power {pp} with {devs} devices ...", file=sys.stderr)
            ours = cairn_case(pp, devs, work)
            theirs: dict[str, Any] | str = why
            if py is not None:
                theirs = swift_case(py, pp, devs, work, args.swift_timeout_s)
            rows.append((pp, devs, ours, theirs))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
