"""The blockd daemon: the volume API and the iSCSI target, over volumes in the object store.

``python -m blockd.server --config FILE [--data-dir DIR]`` runs until SIGTERM/SIGINT, then
stops accepting, flushes every volume's cache to the store and releases its leases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import uvloop
from aiohttp import web

from blockd.api import Authenticate, make_volume_app
from blockd.backend import BlockBackend
from blockd.iscsi.chap import ChapCredentials
from blockd.manager import VolumeManager
from blockd.store import ObjectStore
from blockd.target import IscsiTarget
from common.clock import Clock, SystemClock
from common.config import ConfigError
from common.deploy import BlockConfig, DeploymentConfig, load_deployment
from common.log import get_logger, setup_logging
from common.malloctune import tune_malloc

__all__ = [
    "BlockService",
    "IscsiExporter",
    "default_authenticator",
    "main",
    "make_block_service",
    "refuse_all",
]

log = get_logger("cairn.blockd.server")

SHUTDOWN_S = 10.0


class IscsiExporter:
    """Adapts the iSCSI target to the manager's Exporter protocol (LUN 0, one-way CHAP)."""

    def __init__(self, target: IscsiTarget) -> None:
        self.target = target

    def export(self, iqn: str, backend: BlockBackend, chap_user: str, chap_secret: str) -> None:
        self.target.add_target(iqn, backend, ChapCredentials(chap_user, chap_secret))

    def unexport(self, iqn: str) -> None:
        self.target.remove_target(iqn)


async def refuse_all(_headers: Mapping[str, str]) -> str | None:
    """The authenticator used when none is wired in: every request answers 401."""
    return None


@dataclass
class BlockService:
    manager: VolumeManager
    target: IscsiTarget
    runner: web.AppRunner
    host: str
    api_port: int
    iscsi_port: int

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    async def stop(self) -> None:
        """Stop serving, then flush every volume and release the leases."""
        await self.runner.cleanup()
        await self.target.stop()
        await self.manager.stop()


def _holder_id(conf: BlockConfig, iscsi_port: int) -> str:
    # Stable across restarts, unique among live processes (two cannot bind the same port).
    return conf.holder_id or f"{socket.gethostname()}:{conf.host}:{iscsi_port}"


async def make_block_service(
    conf: BlockConfig,
    store: ObjectStore,
    *,
    authenticate: Authenticate = refuse_all,
    clock: Clock | None = None,
    timers: bool = True,
) -> BlockService:
    """Start the iSCSI target and the volume API (ports 0 in `conf` pick free ones)."""
    target = IscsiTarget()
    iscsi_port = await target.start(conf.host, conf.iscsi_port)
    manager = VolumeManager(
        store,
        conf,
        holder_id=_holder_id(conf, iscsi_port),
        clock=clock,
        exporter=IscsiExporter(target),
        portal=f"{conf.host}:{iscsi_port}",
    )
    try:
        await manager.start(timers=timers)
        runner = web.AppRunner(
            make_volume_app(manager, authenticate),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_S,
        )
        await runner.setup()
        site = web.TCPSite(runner, conf.host, conf.api_port)
        await site.start()
    except BaseException:
        await target.stop()
        await manager.stop()
        raise
    server = site._server
    assert server is not None
    api_port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    log.info(
        "blockd serving",
        extra={"fields": {"host": conf.host, "api_port": api_port, "iscsi_port": iscsi_port}},
    )
    return BlockService(manager, target, runner, conf.host, api_port, iscsi_port)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="blockd", description="cairn block volume service")
    ap.add_argument("--config", required=True, help="deployment TOML file")
    ap.add_argument("--data-dir", help="override the deployment's data_dir")
    return ap


def default_authenticator(cfg: DeploymentConfig) -> Authenticate | None:
    """The deployment's tempauth tokens: a valid X-Auth-Token names the project it owns.

    The project is the user's storage account (e.g. "AUTH_test"), the same id the Swift API
    uses, so `/v3/AUTH_test/volumes` belongs to the users of account "test".
    """
    import time

    from common.authtoken import DeploymentTokens

    tokens = DeploymentTokens.from_deployment(cfg)

    async def authenticate(headers: Mapping[str, str]) -> str | None:
        token = headers.get("X-Auth-Token") or headers.get("X-Storage-Token") or ""
        claims = tokens.verify(token, time.time()) if token else None
        return tokens.storage_account(claims) if claims is not None else None

    return authenticate


async def _run(args: argparse.Namespace, authenticate: Authenticate | None) -> int:
    from blockd.ringstore import open_ring_store

    cfg = load_deployment(args.config, args.data_dir)
    setup_logging("blockd", cfg.log.level, cfg.log.format)
    authenticate = authenticate or default_authenticator(cfg)
    if authenticate is None:
        log.warning("no authenticator wired in: the volume API refuses every request")
        authenticate = refuse_all
    clock = SystemClock()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_ring_store(cfg, clock) as store:
        service = await make_block_service(cfg.block, store, authenticate=authenticate, clock=clock)
        try:
            await stop.wait()
        finally:
            try:
                await service.stop()
            except Exception as e:  # the store is down: unflushed data is lost, say so
                log.error("stopped without flushing", extra={"fields": {"error": repr(e)}})
                return 1
    return 0


def main(argv: list[str] | None = None, authenticate: Authenticate | None = None) -> int:
    """Run blockd until SIGTERM; `authenticate` maps request headers to a project (or None)."""
    args = _parser().parse_args(argv)
    tune_malloc()  # chunk bodies are 1 MiB buffers (common/malloctune.py)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_run(args, authenticate))
    except ConfigError as e:
        print(f"blockd: {e}", file=sys.stderr)
        return 2


def with_ports(conf: BlockConfig, api_port: int, iscsi_port: int) -> BlockConfig:
    """A copy of `conf` on other ports (tests use 0: ephemeral)."""
    return dataclasses.replace(conf, api_port=api_port, iscsi_port=iscsi_port)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
