"""Direct calls to one account server (for the proxy, replicators and tools).

Every call takes the caller's ``aiohttp.ClientSession`` and timeouts; none retries. Paths
are ``/<device>/<partition>/<account>[/<container>]``, each part percent-encoded.
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
    "direct_delete_account",
    "direct_get_account",
    "direct_get_recon",
    "direct_head_account",
    "direct_post_account",
    "direct_put_account",
    "direct_put_account_container",
]


async def direct_put_account(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    headers: Mapping[str, str],
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    """Create an account (X-Timestamp and metadata headers); 201 or 202."""
    url = backend_url(node_url, device, part, account)
    return await simple_request(session, "PUT", url, headers, conn_timeout_s, node_timeout_s)


async def direct_head_account(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    headers: Mapping[str, str] | None = None,
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    """Account totals and metadata in headers; 204, or 404."""
    url = backend_url(node_url, device, part, account)
    return await simple_request(session, "HEAD", url, headers, conn_timeout_s, node_timeout_s)


async def direct_get_account(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    params: ListingParams | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> ListingReply:
    """One JSON listing page: (status, headers, rows) with rows None unless status is 200."""
    url = backend_url(node_url, device, part, account)
    return await get_listing(session, url, params, headers, conn_timeout_s, node_timeout_s)


async def direct_post_account(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    headers: Mapping[str, str],
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    """Merge metadata (X-Timestamp; an empty value removes a key)."""
    url = backend_url(node_url, device, part, account)
    return await simple_request(session, "POST", url, headers, conn_timeout_s, node_timeout_s)


async def direct_delete_account(
    session: aiohttp.ClientSession,
    node_url: str,
    device: str,
    part: int,
    account: str,
    headers: Mapping[str, str],
    *,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, Headers]:
    """Mark the account deleted (X-Timestamp)."""
    url = backend_url(node_url, device, part, account)
    return await simple_request(session, "DELETE", url, headers, conn_timeout_s, node_timeout_s)


async def direct_put_account_container(
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
    """A container's stats report: X-Put-Timestamp, X-Delete-Timestamp, X-Object-Count,
    X-Bytes-Used (optionally X-Backend-Stats-Timestamp)."""
    url = backend_url(node_url, device, part, account, container)
    return await simple_request(session, "PUT", url, headers, conn_timeout_s, node_timeout_s)


# GET /recon/<daemon> on a account server: (status, the daemon's last pass record or None).
direct_get_recon = get_recon
