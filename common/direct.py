"""Plumbing shared by the direct clients of the storage servers (object, container, account).

A direct call is one request to one server, with the caller's ``aiohttp.ClientSession`` and
timeouts, never retried. Paths are ``/<device>/<partition>/<names...>``, each part
percent-encoded (an object server keeps the slashes of an object name: objectd/client.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

__all__ = [
    "DEFAULT_CONN_TIMEOUT_S",
    "DEFAULT_NODE_TIMEOUT_S",
    "SMALL_BODY_BYTES_MAX",
    "Headers",
    "backend_url",
    "simple_request",
    "timeout",
]

DEFAULT_CONN_TIMEOUT_S = 0.5
DEFAULT_NODE_TIMEOUT_S = 10.0
# Bodies of HEAD/PUT/POST/DELETE answers are short status texts; read at most this much.
SMALL_BODY_BYTES_MAX = 64 << 10

Headers = CIMultiDictProxy[str]


def backend_url(node_url: str, device: str, part: int, *names: str) -> str:
    """The URL of a database item on a server: every part encoded, slashes included."""
    path = "/".join(quote(p, safe="") for p in (device, str(part), *names))
    return f"{node_url.rstrip('/')}/{path}"


def timeout(conn_timeout_s: float, node_timeout_s: float) -> aiohttp.ClientTimeout:
    # sock_read bounds each wait for bytes; there is no total so long bodies may stream.
    return aiohttp.ClientTimeout(total=None, sock_connect=conn_timeout_s, sock_read=node_timeout_s)


async def simple_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    conn_timeout_s: float,
    node_timeout_s: float,
) -> tuple[int, Headers]:
    """One request whose answer is status and headers (its short body is read and dropped)."""
    async with session.request(
        method,
        URL(url, encoded=True),
        headers=dict(headers or {}),
        timeout=timeout(conn_timeout_s, node_timeout_s),
        allow_redirects=False,
    ) as resp:
        await resp.content.read(SMALL_BODY_BYTES_MAX)
        return resp.status, resp.headers
