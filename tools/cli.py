"""`cairn`: the umbrella command (up, down, status, ...)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import ConfigError

__all__ = ["main"]

DEFAULT_DATA_DIR = Path("./cairn-data")


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
    add("down", "stop a platform started with `cairn up`")
    st = add("status", "show each service's health, pid and URL")
    st.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tools import up

    try:
        if args.cmd == "up":
            return up.cmd_up(args.data_dir, args.config, args.detach)
        if args.cmd == "down":
            return up.cmd_down(args.data_dir)
        if args.cmd == "status":
            return up.cmd_status(args.data_dir, args.json)
    except ConfigError as e:
        print(f"cairn: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
