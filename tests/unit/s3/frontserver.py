"""An S3 front served on 127.0.0.1:0 in a background thread, over the MemoryOps twin.

Real aiohttp server, real sockets, real clients (boto3, the AWS CLI, urllib); only the
storage cluster underneath is the in-memory twin.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import boto3
from aiohttp import web
from botocore.config import Config

from common.deploy import ProxyConfig, TempAuthConfig, TempAuthUser
from proxy.auth import TempAuth
from proxy.s3.frontend import s3_middleware
from tests.unit.s3.memory_ops import MemoryOps

DOMAIN = "s3.cairn.test"
USERS = {
    "test:tester": "testing",
    "test:tester3": "testing3",
    "test2:tester2": "testing2",
}


class ShiftedClock:
    """The system clock plus an offset the test controls (to reach expiry and skew)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def time(self) -> float:
        return time.time() + self.offset_s

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class Front:
    url: str
    port: int
    ops: MemoryOps
    clock: ShiftedClock
    clients: dict[str, Any] = field(default_factory=dict)

    def client(self, user: str = "test:tester", *, secret: str | None = None,
               **config: Any) -> Any:  # fmt: skip
        """A boto3 client, kept (and closed when the front stops) so no socket leaks."""
        cache_key = repr((user, secret, sorted(config.items())))
        if cache_key not in self.clients:
            self.clients[cache_key] = self._new_client(user, secret, config)
        return self.clients[cache_key]

    def close_clients(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()

    def _new_client(self, user: str, secret: str | None, config: dict[str, Any]) -> Any:
        cfg = Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1, "mode": "standard"},
            **config,
        )
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=user,
            aws_secret_access_key=secret if secret is not None else USERS[user],
            config=cfg,
        )


def _users() -> list[TempAuthUser]:
    out = []
    for name, key in USERS.items():
        account, user = name.split(":")
        out.append(TempAuthUser(account, user, key, admin=user != "tester3"))
    return out


@contextmanager
def serve_front() -> Iterator[Front]:
    clock = ShiftedClock()
    ops = MemoryOps(clock)
    auth = TempAuth(TempAuthConfig(users=_users()), b"s3-front-test-secret-0123456789ab", clock)
    state = SimpleNamespace(cfg=SimpleNamespace(proxy=ProxyConfig(s3_domain=DOMAIN)), ops=ops,
                            auth=auth)  # fmt: skip
    middleware = s3_middleware(lambda: state, rng=random.Random(7))
    app = web.Application(middlewares=[middleware])

    async def stand_in(_request: web.Request) -> web.Response:
        return web.Response(text="swift route")

    app.router.add_route("*", "/v1/{tail:.*}", stand_in)
    app.router.add_route("GET", "/healthcheck", stand_in)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the S3 front did not start"
    port = int(holder["port"])
    front = Front(f"http://127.0.0.1:{port}", port, ops, clock)
    try:
        yield front
    finally:
        front.close_clients()
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
