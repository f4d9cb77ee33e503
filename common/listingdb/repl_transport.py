"""How a replicator reaches a peer: the transport seam (real HTTP, in-process, faulty).

``HttpTransport`` sends ``POST /replicate/<device>/<partition>/<hash>`` to the peer's
replication address. ``DirectTransport`` hands the encoded request straight to a
``ReplicationService`` (the in-process twin for tests: real LMDB, real codec, no sockets).
``FaultyTransport`` wraps either and fails calls a test picks (a peer dying mid-sync).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import aiohttp
from yarl import URL

from common.listingdb.repl_service import ReplicationService
from common.listingdb.replication import (
    BODY_BYTES_MAX,
    ProtocolError,
    Reply,
    Request,
    decode_reply,
    encode_request,
)

__all__ = [
    "DirectTransport",
    "FaultyTransport",
    "HttpTransport",
    "Peer",
    "PeerError",
    "ReplicationTransport",
]


class PeerError(Exception):
    """The peer could not be reached or did not answer in the protocol."""


@dataclass(frozen=True)
class Peer:
    """A peer database server: its replication address and the device to write to."""

    ip: str
    port: int
    device: str

    @property
    def netloc(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


class ReplicationTransport(Protocol):
    async def call(self, peer: Peer, part: int, hash_hex: str, req: Request) -> Reply:
        """The peer's reply; PeerError when it cannot be had."""
        ...


class HttpTransport:
    def __init__(
        self, session: aiohttp.ClientSession, conn_timeout_s: float, node_timeout_s: float
    ) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=conn_timeout_s, sock_read=node_timeout_s
        )
        self.total_timeout_s = conn_timeout_s + node_timeout_s

    async def call(self, peer: Peer, part: int, hash_hex: str, req: Request) -> Reply:
        path = "/".join(("replicate", quote(peer.device, safe=""), str(part), hash_hex))
        url = URL(f"http://{peer.netloc}/{path}", encoded=True)
        body = encode_request(req)
        headers = {"Content-Type": "application/x-msgpack"}
        try:
            async with self.session.post(
                url, data=body, headers=headers, timeout=self.timeout
            ) as resp:
                data = await resp.content.read(BODY_BYTES_MAX + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise PeerError(f"{peer.netloc}/{peer.device}: {e!r}") from None
        try:
            return decode_reply(data)
        except ProtocolError as e:
            raise PeerError(f"{peer.netloc}/{peer.device}: HTTP {status}, {e}") from None


class DirectTransport:
    """Requests go straight to the ReplicationService registered for the peer's address."""

    def __init__(self, services: Mapping[tuple[str, int], ReplicationService]) -> None:
        self.services = services

    async def call(self, peer: Peer, part: int, hash_hex: str, req: Request) -> Reply:
        service = self.services.get((peer.ip, peer.port))
        if service is None:
            raise PeerError(f"{peer.netloc}: connection refused (no such in-process server)")
        _status, data = await service.handle(peer.device, part, hash_hex, encode_request(req))
        try:
            return decode_reply(data)
        except ProtocolError as e:
            raise PeerError(str(e)) from None


# Decides whether call number `n` (counting from 0, over this transport) to `peer` fails.
FailWhen = Callable[[Peer, Request, int], bool]


class FaultyTransport:
    """Wraps a transport; a call `fail_when` picks raises PeerError instead of arriving."""

    def __init__(self, inner: ReplicationTransport, fail_when: FailWhen) -> None:
        self.inner = inner
        self.fail_when = fail_when
        self.calls = 0
        self.failed = 0

    async def call(self, peer: Peer, part: int, hash_hex: str, req: Request) -> Reply:
        n = self.calls
        self.calls += 1
        if self.fail_when(peer, req, n):
            self.failed += 1
            raise PeerError(f"{peer.netloc}: injected failure on call {n}")
        return await self.inner.call(peer, part, hash_hex, req)
