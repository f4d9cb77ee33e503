"""Direct calls to one container server (for the proxy, replicators and tools).

Every call takes the caller's ``aiohttp.ClientSession`` and timeouts; none retries. Paths
are ``/<device>/<partition>/<account>/<container>[/<object>]``, each part percent-encoded.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from common.listingdb.client import (
    DEFAULT_CONN_TIMEOUT_S,
    DEFAULT_NODE_TIMEOUT_S,
    Headers,
    ListingReply,
    backend_url,
    get_listing,
    get_recon,
    simple_request,
)
from common.listingdb.listing import ListingParams

__all__ = [
    "DEFAULT_CONN_TIMEOUT_S",
    "DEFAULT_NODE_TIMEOUT_S",
    "ListingParams",
    "direct_delete_container",
    "direct_delete_container_object",
    "direct_get_container",
    "direct_get_recon",
    "direct_head_container",
    "direct_post_container",
    "direct_put_container",
    "direct_put_container_object",
]


_call = simple_request


async def direct_put_container(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    headers: Mapping[str, str],
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    """Create a container (headers: X-Timestamp, metadata, X-Account-Host/-Partition/-Device)."""
    url = backend_url(node_url, device, part, account, container)
    return await _call(session, "PUT", url, headers, conn_timeout_s, node_timeout_s)


async def direct_head_container(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    headers: Mapping[str, str] | None = None,
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    url = backend_url(node_url, device, part, account, container)
    return await _call(session, "HEAD", url, headers, conn_timeout_s, node_timeout_s)


async def direct_get_container(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    params: ListingParams | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> ListingReply:
    """One JSON listing page: (status, headers, rows) with rows None unless status is 200."""
    url = backend_url(node_url, device, part, account, container)
    return await get_listing(session, url, params, headers, conn_timeout_s, node_timeout_s)


async def direct_delete_container(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    headers: Mapping[str, str],
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    """Delete an empty container (X-Timestamp; 409 when it still holds objects)."""
    url = backend_url(node_url, device, part, account, container)
    return await _call(session, "DELETE", url, headers, conn_timeout_s, node_timeout_s)


async def direct_post_container(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    container: str,
    headers: Mapping[str, str],
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    """Merge metadata (X-Timestamp; an empty value removes a key)."""
    url = backend_url(node_url, device, part, account, container)
    return await _call(session, "POST", url, headers, conn_timeout_s, node_timeout_s)


async def direct_put_container_object(
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
    """Record an object row (X-Timestamp, X-Size, X-Content-Type, X-Etag)."""
    url = backend_url(node_url, device, part, account, container, obj)
    return await _call(session, "PUT", url, headers, conn_timeout_s, node_timeout_s)


async def direct_delete_container_object(
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
    """Record an object deletion (X-Timestamp)."""
    url = backend_url(node_url, device, part, account, container, obj)
    return await _call(session, "DELETE", url, headers, conn_timeout_s, node_timeout_s)


# GET /recon/<daemon> on a container server: (status, the daemon's last pass record or None).
direct_get_recon = get_recon
