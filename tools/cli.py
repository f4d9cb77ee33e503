"""`cairn`: the umbrella command (up, down, status, nodes, dispersion, bench, volume)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from common.config import ConfigError

__all__ = ["main"]

DEFAULT_DATA_DIR = Path("./cairn-data")
# Sub-commands handed whole to another package's own argument parser.
_PASS_THROUGH = ("bench", "volume")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cairn", description="cairn: storage-first cloud platform")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument(
            "--data-dir",
            type=Path,
            default=DEFAULT_DATA_DIR,
            help="where the deployment keeps its data (default ./cairn-data)",
        )
        return sp

    up = add("up", "start the whole platform on this machine")
    up.add_argument("--config", type=Path, help="a deployment TOML (default: generated)")
    up.add_argument("-d", "--detach", action="store_true", help="run in the background")
    up.add_argument(
        "--only",
        action="append",
        metavar="NODE|SERVICE",
        help="start only this node's services (or one service, or 'proxy'); repeatable",
    )
    up.add_argument("--host", metavar="ADDRESS", help="start only the services placed on ADDRESS")
    add("down", "stop a platform started with `cairn up`")
    st = add("status", "show each service's health, pid and URL, and each node's daemons")
    st.add_argument("--json", action="store_true")
    nd = add("nodes", "show where an account, container or object lives (like swift-get-nodes)")
    nd.add_argument("account")
    nd.add_argument("container", nargs="?")
    nd.add_argument("object", nargs="?")
    nd.add_argument("--check", action="store_true", help="ask each node whether it holds it")
    nd.add_argument("--handoffs", type=int, default=None, help="handoffs to list (default: all)")
    nd.add_argument("--json", action="store_true")
    dp = add("dispersion", "place sample objects/containers, report replicas in place")
    dp.add_argument("--json", action="store_true")
    dp.add_argument("--coverage", type=float, default=None, help="percent of partitions to sample")
    dp.add_argument("--populate-only", action="store_true", help="place samples, no report")
    return p


def _pass_through(cmd: str, rest: list[str]) -> int:
    if cmd == "bench":
        if importlib.util.find_spec("bench.cli") is None:
            print("cairn: bench is not installed", file=sys.stderr)
            return 2
        from bench.cli import bench_main

        return int(bench_main(rest))
    from tools.volume import volume_main

    return volume_main(rest)


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_in and args_in[0] in _PASS_THROUGH:
            return _pass_through(args_in[0], args_in[1:])
        return _dispatch(_parser().parse_args(args_in))
    except ConfigError as e:
        print(f"cairn: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from tools import up

    if args.cmd == "up":
        return up.cmd_up(args.data_dir, args.config, args.detach, args.only, args.host)
    if args.cmd == "down":
        return up.cmd_down(args.data_dir)
    if args.cmd == "status":
        return up.cmd_status(args.data_dir, args.json)
    if args.cmd == "nodes":
        from tools.nodes import cmd_nodes

        return cmd_nodes(
            args.data_dir,
            args.account,
            args.container,
            args.object,
            check=args.check,
            as_json=args.json,
            handoffs_max=args.handoffs,
        )
    if args.cmd == "dispersion":
        from tools.dispersion import cmd_dispersion

        return cmd_dispersion(
            args.data_dir,
            as_json=args.json,
            coverage_pct=args.coverage,
            populate_only=args.populate_only,
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
