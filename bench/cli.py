"""`cairn bench ...`: compare cairn with OpenStack Swift, or load any Swift endpoint.

cairn bench compare [--quick] [--out DIR] [--no-wrk] [--workloads put256m,get256m] [--reps N]
cairn bench run --auth-url URL --user U --key K [--workloads put4k,get4k,...]
cairn bench run --storage-url URL --token T --mix put=1,get=4 --size 65536 --duration 30
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from bench.stats import Result

__all__ = ["bench_main"]

DEFAULT_OUT = Path("./bench-out")


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = units.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in units else t
    try:
        n = int(digits) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 4k, 1m)") from None
    if n < 0:
        raise argparse.ArgumentTypeError("size must be >= 0")
    return n


def _mix(text: str) -> dict[str, float]:
    from bench.aioload import OPS

    out: dict[str, float] = {}
    for part in text.split(","):
        op, sep, w = part.partition("=")
        try:
            weight = float(w) if sep else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight in {part!r}") from None
        if op not in OPS or weight < 0 or not math.isfinite(weight):
            raise argparse.ArgumentTypeError(f"mix entries are op=weight with op in {OPS}")
        out[op] = weight
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cairn bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="cairn vs OpenStack Swift all-in-one, same run")
    c.add_argument("--quick", action="store_true", help="short runs (under 5 minutes)")
    c.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results dir (./bench-out)")
    c.add_argument(
        "--swift-venv",
        type=Path,
        default=DEFAULT_OUT / "swift-venv",
        help="venv for Swift, made on first use (default ./bench-out/swift-venv)",
    )
    c.add_argument("--no-wrk", action="store_true", help="use only the Python load generator")
    c.add_argument("--workloads", default=None,
                   help="only these, comma-separated, e.g. put256m,get256m")  # fmt: skip
    c.add_argument("--reps", type=int, default=2,
                   help="runs of each workload per system, alternated (default 2)")  # fmt: skip
    r = sub.add_parser("run", help="run workloads against any Swift endpoint")
    r.add_argument("--auth-url", help="v1 auth URL (with --user/--key)")
    r.add_argument("--user", default="admin:admin")
    r.add_argument("--key", default="")
    r.add_argument("--storage-url", help="storage URL (with --token)")
    r.add_argument("--token", default="")
    r.add_argument("--s3-endpoint", help="S3 endpoint, path-style (with --access-key/--secret-key)")
    r.add_argument("--access-key", default="")
    r.add_argument("--secret-key", default="")
    r.add_argument("--region", default="us-east-1")
    r.add_argument("--workloads", default="put4k,get4k,head4k,delete4k",
                   help="comma-separated, in order, from: put4k get4k head4k delete4k put1m "
                        "get1m put256m get256m list")  # fmt: skip
    r.add_argument("--mix", type=_mix, help="custom operation mix instead, e.g. put=1,get=4")
    r.add_argument("--size", type=_size, default=4096, help="object size for --mix")
    r.add_argument("--count", type=int, help="requests for --mix")
    r.add_argument("--container", default="bench-mix", help="container for --mix")
    r.add_argument("--concurrency", type=int, default=16)
    r.add_argument("--duration", type=int, default=10, help="seconds per workload")
    r.add_argument("--no-wrk", action="store_true")
    r.add_argument("--json", action="store_true", help="print results as JSON lines")
    return p


class _NoProbe:
    """Server CPU is unknown for a remote endpoint."""

    def start(self) -> None:
        return None

    def stop(self) -> float:
        return math.nan


def _print(results: list[Result], as_json: bool) -> None:
    for r in results:
        if as_json:
            print(json.dumps(r.to_json(), sort_keys=True))
            continue
        print(
            f"{r.workload:<10} {r.ops_per_s:9.1f} op/s {r.mb_per_s:8.1f} MB/s  "
            f"p50 {r.p50_s * 1000:8.1f} ms  p99 {r.p99_s * 1000:8.1f} ms  "
            f"ops {r.ops:<7} errors {r.errors:<4} loadgen cpu {r.client_cpu_share:4.2f} cores "
            f"({r.tool})" + (f"  {r.extra['failed']}" if "failed" in r.extra else "")
        )


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.aioload import LoadSpec, run_load
    from bench.target import AuthError, S3Target, SwiftTarget, Target, swift_auth
    from bench.workloads import WORKLOADS, SuiteSpec, SystemUnderTest, run_workload

    target: Target
    try:
        if args.s3_endpoint:
            target = S3Target(args.s3_endpoint, args.access_key, args.secret_key, args.region)
        elif args.storage_url:
            target = SwiftTarget(args.storage_url, args.token)
        elif args.auth_url:
            target = swift_auth(args.auth_url, args.user, args.key)
        else:
            print("cairn bench run: give --auth-url (+ --user/--key), --storage-url + --token"
                  " or --s3-endpoint + --access-key/--secret-key", file=sys.stderr)  # fmt: skip
            return 2
    except AuthError as e:
        print(f"cairn bench run: {e}", file=sys.stderr)
        return 1
    if args.mix:
        spec = LoadSpec(workload="mix", container=args.container, mix=args.mix,
                        object_bytes=args.size, concurrency=args.concurrency,
                        duration_s=args.duration, count=args.count)  # fmt: skip
        _print(run_load(target, spec), args.json)
        return 0
    names = [w for w in args.workloads.split(",") if w]
    bad = [w for w in names if w not in WORKLOADS]
    if bad:
        print(f"cairn bench run: unknown workloads {bad}; known: {WORKLOADS}", file=sys.stderr)
        return 2
    suite = SuiteSpec(concurrency=args.concurrency, small_s=args.duration, mid_s=args.duration,
                      list_s=args.duration, use_wrk=not args.no_wrk)  # fmt: skip
    sut = SystemUnderTest("endpoint", target, _NoProbe())
    results = [run_workload(sut, suite, w, 0) for w in names]
    _print(results, args.json)
    return 0 if all(r.ops > 0 for r in results) else 1


def bench_main(argv: list[str]) -> int:
    """Entry point of `cairn bench ...` (argv without the leading 'bench')."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "compare":
            from bench.compare import compare
            from bench.workloads import WORKLOADS

            chosen = WORKLOADS
            if args.workloads:
                chosen = tuple(w for w in args.workloads.split(",") if w)
                bad = [w for w in chosen if w not in WORKLOADS]
                if bad:
                    print(f"cairn bench compare: unknown workloads {bad}; known: {WORKLOADS}",
                          file=sys.stderr)  # fmt: skip
                    return 2
            if args.reps < 1:
                print(f"cairn bench compare: --reps must be at least 1, not {args.reps}",
                      file=sys.stderr)  # fmt: skip
                return 2
            return compare(
                args.out,
                args.quick,
                args.swift_venv,
                use_wrk=not args.no_wrk,
                workloads=chosen,
                reps=args.reps,
            )
        return _cmd_run(args)
    except KeyboardInterrupt:
        print("cairn bench: interrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
