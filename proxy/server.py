"""`python -m proxy.server --config FILE [--data-dir DIR]`: run the proxy daemon."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aiohttp import web

from common.config import ConfigError
from common.deploy import load_deployment
from common.server import serve

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cairn-proxy")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--data-dir", type=Path)
    args = p.parse_args(argv)
    try:
        cfg = load_deployment(args.config, data_dir=args.data_dir)
    except ConfigError as e:
        print(f"cairn-proxy: {e}", file=sys.stderr)
        return 2

    async def factory() -> web.Application:
        from proxy.app import make_proxy_app

        return await make_proxy_app(cfg)

    serve(
        factory,
        service="proxy-server",
        host=cfg.proxy.host,
        port=cfg.proxy.port,
        workers=cfg.proxy.workers,
        log_level=cfg.log.level,
        log_format=cfg.log.format,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
