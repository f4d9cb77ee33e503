"""The records the operations layer returns, and the header filter they go through."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict

__all__ = ["AccountInfo", "ContainerInfo", "Result", "client_headers", "iter_body"]

_STREAM_CHUNK = 64 * 1024


@dataclass
class Result:
    status: int
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    _resp: aiohttp.ClientResponse | None = None

    async def close(self) -> None:
        if self._resp is not None:
            self._resp.release()
            self._resp = None

    async def read_all(self, limit_bytes: int = 64 << 20) -> bytes:
        """The whole body (for small internal reads like manifests)."""
        if self.stream is None:
            return self.body
        out = bytearray()
        async for chunk in self.stream:
            out += chunk
            if len(out) > limit_bytes:
                await self.close()
                raise ValueError("body larger than the internal read limit")
        await self.close()
        return bytes(out)


@dataclass(frozen=True)
class ContainerInfo:
    status: int
    read_acl: str = ""
    write_acl: str = ""
    object_count: int = 0
    bytes_used: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AccountInfo:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)


def client_headers(h: Mapping[str, str]) -> CIMultiDict[str]:
    """Backend response headers a client may see."""
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in h.items():
        lk = k.lower()
        if lk.startswith(
            ("x-backend-", "x-object-sysmeta-", "x-container-sysmeta-", "x-account-sysmeta-")
        ):
            continue
        if lk in (
            "server",
            "date",
            "connection",
            "keep-alive",
            "transfer-encoding",
            "x-trans-id",
            "x-openstack-request-id",
        ):
            continue
        out.add(k, v)
    return out


async def iter_body(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_chunked(_STREAM_CHUNK):
            yield chunk
    finally:
        resp.release()
