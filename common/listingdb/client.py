"""Listing and recon requests shared by the container and account direct clients (the
plain request plumbing is common/direct.py, re-exported here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from common.direct import (
    DEFAULT_CONN_TIMEOUT_S,
    DEFAULT_NODE_TIMEOUT_S,
    Headers,
    backend_url,
    simple_request,
    timeout,
)
from common.listingdb.listing import ListingParams

__all__ = [
    "DEFAULT_CONN_TIMEOUT_S",
    "DEFAULT_NODE_TIMEOUT_S",
    "LISTING_BODY_BYTES_MAX",
    "Headers",
    "ListingReply",
    "backend_url",
    "get_listing",
    "get_recon",
    "listing_query",
    "simple_request",
]

# 10,000 rows of up to ~1.3 KiB each, with room to spare.
LISTING_BODY_BYTES_MAX = 64 << 20

ListingReply = tuple[int, Headers, list[dict[str, Any]] | None]


def listing_query(params: ListingParams | None) -> str:
    p = params or ListingParams()
    query: dict[str, str] = {"format": "json", "limit": str(p.limit)}
    for key in ("prefix", "delimiter", "marker", "end_marker"):
        value = getattr(p, key)
        if value:
            query[key] = value
    if p.reverse:
        query["reverse"] = "true"
    if p.path is not None:
        query["path"] = p.path
    return urlencode(query, quote_via=quote)


async def get_listing(
    session: aiohttp.ClientSession,
    url: str,
    params: ListingParams | None,
    headers: Mapping[str, str] | None,
    conn_timeout_s: float,
    node_timeout_s: float,
) -> ListingReply:
    """GET a JSON listing page: (status, headers, rows or None when not 200)."""
    async with session.get(
        URL(f"{url}?{listing_query(params)}", encoded=True),
        headers=dict(headers or {}),
        timeout=timeout(conn_timeout_s, node_timeout_s),
        allow_redirects=False,
    ) as resp:
        body = await resp.content.read(LISTING_BODY_BYTES_MAX + 1)
        if len(body) > LISTING_BODY_BYTES_MAX:
            raise ValueError(f"listing body from {url} exceeds {LISTING_BODY_BYTES_MAX} bytes")
        if resp.status != 200:
            return resp.status, resp.headers, None
        rows = json.loads(body)
        if not isinstance(rows, list):
            raise ValueError(f"listing from {url} is not a JSON list")
        return resp.status, resp.headers, rows


RECON_BODY_BYTES_MAX = 1 << 20


async def get_recon(
    session: aiohttp.ClientSession,
    node_url: str,
    daemon: str,
    conn_timeout_s: float = DEFAULT_CONN_TIMEOUT_S,
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S,
) -> tuple[int, dict[str, Any] | None]:
    """GET /recon/<daemon>: (status, the daemon's last pass record when status is 200)."""
    url = f"{node_url.rstrip('/')}/recon/{quote(daemon, safe='')}"
    async with session.get(
        URL(url, encoded=True), timeout=timeout(conn_timeout_s, node_timeout_s)
    ) as resp:
        body = await resp.content.read(RECON_BODY_BYTES_MAX + 1)
        if resp.status != 200 or len(body) > RECON_BODY_BYTES_MAX:
            return resp.status, None
        try:
            record = json.loads(body)
        except ValueError:
            return 502, None
        return 200, record if isinstance(record, dict) else None
