"""The command line every background-daemon runner shares.

    python -m <pkg>.daemons --config FILE --node NAME [--data-dir DIR] [--once] [--only A,B]

Bad arguments, an unreadable deployment file or an unknown node print one line naming the
problem on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from common.config import ConfigError
from common.deploy import DeploymentConfig, StorageNodeConfig, load_deployment

__all__ = ["DaemonArgs", "parse_daemon_args", "parse_only"]


@dataclass(frozen=True)
class DaemonArgs:
    deploy: DeploymentConfig
    node: StorageNodeConfig
    once: bool
    only: tuple[str, ...]


def parse_only(raw: str | None, daemons: Sequence[str]) -> tuple[str, ...]:
    """The daemons chosen by `--only a,b` (all of them when absent); ValueError if unknown."""
    if not raw:
        return tuple(daemons)
    chosen = tuple(x.strip() for x in raw.split(",") if x.strip())
    unknown = sorted(set(chosen) - set(daemons))
    if unknown or not chosen:
        raise ValueError(f"--only takes {','.join(daemons)}; got {raw!r}")
    return chosen


def parse_daemon_args(
    prog: str, description: str | None, daemons: Sequence[str], argv: list[str] | None
) -> DaemonArgs | None:
    """The parsed arguments, or None after printing why they are not usable (exit 2)."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument("--config", required=True, help="deployment TOML file")
    parser.add_argument("--node", required=True, help="storage node name in the deployment")
    parser.add_argument("--data-dir", default=None, help="override the deployment's data_dir")
    parser.add_argument("--once", action="store_true", help="one pass of each daemon, then exit")
    parser.add_argument("--only", default=None, help="comma list of: " + ",".join(daemons))
    args = parser.parse_args(argv)
    if sys.flags.optimize:
        print(f"{prog}: refusing to run with python -O (assertions must stay on)", file=sys.stderr)
        return None
    try:
        only = parse_only(args.only, daemons)
        deploy = load_deployment(args.config, args.data_dir)
        node = deploy.node(args.node)
    except (ConfigError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    except KeyError:
        print(f"{prog}: no node named {args.node!r} in {args.config}", file=sys.stderr)
        return None
    return DaemonArgs(deploy, node, args.once, only)
