"""Direct calls to one object server (for the proxy, the replicator and tools).

Every call takes the caller's ``aiohttp.ClientSession`` and a timeout; none retries. Paths are
``/<device>/<partition>/<account>/<container>/<object>`` with each part percent-encoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote

import aiohttp
from yarl import URL

from common.direct import (
    DEFAULT_CONN_TIMEOUT_S,
    DEFAULT_NODE_TIMEOUT_S,
    Headers,
    simple_request,
)
from common.direct import timeout as _timeout

__all__ = [
    "DEFAULT_CONN_TIMEOUT_S",
    "DEFAULT_NODE_TIMEOUT_S",
    "ReplicateError",
    "direct_delete_object",
    "direct_get_object",
    "direct_head_object",
    "direct_post_object",
    "direct_put_object",
    "direct_replicate",
    "object_url",
]


def object_url(
    node_url: str, device: str, part: int, account: str, container: str, obj: str
) -> str:
    prefix = "/".join(quote(p, safe="") for p in (device, str(part), account, container))
    return f"{node_url.rstrip('/')}/{prefix}/{quote(obj, safe='/')}"


async def direct_put_object(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    obj: str,
    body: bytes | AsyncIterator[bytes],
    headers: Mapping[str, str],
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
    expect_continue: bool = False,
) -> tuple[int, Headers]:
    """PUT an object; an async iterator body is sent chunked unless Content-Length is given.

    With `expect_continue` the server can refuse (e.g. 507) before any body byte is sent.
    Headers must include X-Timestamp and Content-Type.
    """
    url = object_url(node_url, device, part, account, container, obj)
    async with session.put(
        URL(url, encoded=True),
        data=body,
        headers=dict(headers),
        timeout=_timeout(conn_timeout_s, node_timeout_s),
        expect100=expect_continue,
        allow_redirects=False,
    ) as resp:
        await resp.read()
        return resp.status, resp.headers


async def direct_get_object(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    obj: str,
    headers: Mapping[str, str] | None = None,
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> aiohttp.ClientResponse:
    """GET an object; the caller streams `resp.content` and must `resp.release()` it.

    A body shorter than Content-Length (raised as aiohttp.ClientPayloadError while reading)
    means the server found corruption mid-stream: treat the replica as failed.
    """
    url = object_url(node_url, device, part, account, container, obj)
    return await session.get(
        URL(url, encoded=True),
        headers=dict(headers or {}),
        timeout=_timeout(conn_timeout_s, node_timeout_s),
        allow_redirects=False,
        auto_decompress=False,
    )


async def direct_head_object(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    obj: str,
    headers: Mapping[str, str] | None = None,
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    url = object_url(node_url, device, part, account, container, obj)
    return await simple_request(session, "HEAD", url, headers, conn_timeout_s, node_timeout_s)


async def direct_delete_object(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    obj: str,
    headers: Mapping[str, str],
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    """DELETE (headers must include X-Timestamp); 204 deleted, 404 nothing live, 409 stale."""
    url = object_url(node_url, device, part, account, container, obj)
    return await simple_request(session, "DELETE", url, headers, conn_timeout_s, node_timeout_s)


async def direct_post_object(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    obj: str,
    headers: Mapping[str, str],
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    """POST metadata (headers must include X-Timestamp); 202, or 404 if no object."""
    url = object_url(node_url, device, part, account, container, obj)
    return await simple_request(session, "POST", url, headers, conn_timeout_s, node_timeout_s)


REPLICATE_BYTES_MAX = 1 << 20


class ReplicateError(Exception):
    """A REPLICATE call failed (status, transport or a body that is not a hashes map)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def direct_replicate(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    suffixes: list[str] | None = None,
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> dict[str, str]:
    """A partition's suffix hashes on one node, after it recomputed `suffixes`."""
    from objectd.hashes import decode_cache

    path = f"/_replicate/{quote(device, safe='')}/{part}"
    if suffixes:
        path += "/" + "-".join(sorted(suffixes))
    try:
        async with session.request(
            "POST",
            URL(node_url.rstrip("/") + path, encoded=True),
            timeout=_timeout(conn_timeout_s, node_timeout_s),
            allow_redirects=False,
        ) as resp:
            body = await resp.content.read(REPLICATE_BYTES_MAX + 1)
            if resp.status != 200:
                raise ReplicateError(f"REPLICATE answered {resp.status}", resp.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise ReplicateError(f"REPLICATE failed: {e!r}") from None
    hashes = decode_cache(body)
    if hashes is None:
        raise ReplicateError("REPLICATE answer is not a version 1 hashes map")
    return hashes
