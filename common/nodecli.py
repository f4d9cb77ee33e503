"""The command line every storage-node process shares: the object, container and account
servers and their background-daemon runners.

    python -m <pkg>.server  --config FILE --node NAME [--data-dir DIR]
    python -m <pkg>.daemons --config FILE --node NAME [--data-dir DIR] [--once] [--only A,B]

Bad arguments, an unreadable deployment file or an unknown node print one line naming the
problem on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from common.config import ConfigError
from common.deploy import DeploymentConfig, StorageNodeConfig, load_deployment
from common.server import serve

__all__ = ["DaemonArgs", "parse_daemon_args", "parse_only", "storage_server_main"]


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


def _parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument("--config", required=True, help="deployment TOML file")
    parser.add_argument("--node", required=True, help="storage node name in the deployment")
    parser.add_argument("--data-dir", default=None, help="override the deployment's data_dir")
    return parser


def _load(prog: str, args: argparse.Namespace) -> tuple[DeploymentConfig, StorageNodeConfig] | None:
    if sys.flags.optimize:
        print(f"{prog}: refusing to run with python -O (assertions must stay on)", file=sys.stderr)
        return None
    try:
        deploy = load_deployment(args.config, args.data_dir)
        return deploy, deploy.node(args.node)
    except (ConfigError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
    except KeyError:
        print(f"{prog}: no node named {args.node!r} in {args.config}", file=sys.stderr)
    return None


def parse_daemon_args(
    prog: str, description: str | None, daemons: Sequence[str], argv: list[str] | None
) -> DaemonArgs | None:
    """The parsed arguments, or None after printing why they are not usable (exit 2)."""
    parser = _parser(prog, description)
    parser.add_argument("--once", action="store_true", help="one pass of each daemon, then exit")
    parser.add_argument("--only", default=None, help="comma list of: " + ",".join(daemons))
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only, daemons)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    loaded = _load(prog, args)
    if loaded is None:
        return None
    return DaemonArgs(loaded[0], loaded[1], args.once, only)


def storage_server_main(
    argv: list[str] | None,
    *,
    prog: str,
    description: str | None,
    service: str,
    port_of: Callable[[StorageNodeConfig], int],
    make_app: Callable[[DeploymentConfig, StorageNodeConfig], Awaitable[web.Application]],
) -> int:
    """Run one storage server of a node (its workers, until SIGTERM); 2 on bad arguments."""
    args = _parser(prog, description).parse_args(argv)
    loaded = _load(prog, args)
    if loaded is None:
        return 2
    deploy, node = loaded

    async def factory() -> web.Application:
        return await make_app(deploy, node)

    serve(
        factory,
        service=service,
        host=node.host,
        port=port_of(node),
        workers=node.workers,
        log_level=deploy.log.level,
        log_format=deploy.log.format,
    )
    return 0
