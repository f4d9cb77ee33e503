"""Object GET bodies that survive a replica failing mid-stream.

An object server stops sending when it finds a bad block (it quarantines the file) or when
it dies; the proxy has then sent part of the body and its status line already. Instead of
cutting the client off, the body is resumed from another replica: a ranged GET for the
bytes not yet sent, accepted only from a replica that holds the same version (the same
X-Backend-Timestamp). Only bodies with one contiguous span can resume: a whole object (200)
or a single range (206 with Content-Range); a multipart/byteranges body is cut as before.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from common.log import get_logger
from common.nodes import node_key
from common.server import body_chunks
from proxy.backend import Backend, Resp
from ring import Device

__all__ = ["Reopen", "Span", "resumable_span", "resuming_body"]

log = get_logger("cairn.proxy.resume")

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
# Conditions were settled by the first replica; the resumed request asks for bytes only.
_DROP = ("range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


@dataclass(frozen=True)
class Span:
    """The object bytes a response body carries, first and last inclusive."""

    first: int
    last: int


def resumable_span(status: int, headers: Mapping[str, str]) -> Span | None:
    """The span of a body that could be resumed elsewhere, or None."""
    if status == 200:
        try:
            length = int(headers.get("Content-Length", ""))
        except ValueError:
            return None
        return Span(0, length - 1) if length > 0 else None
    if status == 206:
        m = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
        if m is None:  # multipart/byteranges has no Content-Range of its own
            return None
        return Span(int(m.group(1)), int(m.group(2)))
    return None


def _resume_headers(headers: Mapping[str, str], first: int, last: int) -> CIMultiDict[str]:
    out = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _DROP)
    out["Range"] = f"bytes={first}-{last}"
    return out


# Opens the object on the next replicas with the given headers, as proxy.backend.open_stream
# does (bound to the request's part and node iterator): (open response or None, summary).
Reopen = Callable[[Mapping[str, str]], Awaitable[tuple[aiohttp.ClientResponse | None, Resp]]]


async def _reopen(
    reopen: Reopen, headers: Mapping[str, str], span: Span, version: str
) -> tuple[aiohttp.ClientResponse, Device | None] | None:
    """The first further replica that serves `span` of the same version, left open."""
    ranged = _resume_headers(headers, span.first, span.last)
    while True:
        r, summary = await reopen(ranged)
        if r is None:
            return None  # no replica left
        got = resumable_span(r.status, r.headers)
        if r.status == 206 and got == span and r.headers.get("X-Backend-Timestamp") == version:
            return r, summary.node
        r.release()


async def resuming_body(
    backend: Backend,
    resp: aiohttp.ClientResponse,
    node: Device | None,
    reopen: Reopen,
    headers: Mapping[str, str],
) -> AsyncIterator[bytes]:
    """The body of `resp`; if its replica fails part-way, the rest comes from the next
    replicas `reopen` opens. When none can serve it the original error is raised (the
    client connection is then cut: a short body, never wrong bytes)."""
    span = resumable_span(resp.status, resp.headers)
    version = resp.headers.get("X-Backend-Timestamp")
    current = resp
    sent = 0
    try:
        while True:
            try:
                async for chunk in body_chunks(current.content):
                    sent += len(chunk)
                    yield chunk
                return
            except (aiohttp.ClientError, TimeoutError) as e:
                current.close()
                if node is not None:
                    backend.errors.error(node_key(node))
                if span is not None and span.first + sent > span.last:
                    return  # every byte was sent; the failure came after the body
                if span is None or version is None:
                    raise
                rest = Span(span.first + sent, span.last)
                found = await _reopen(reopen, headers, rest, version)
                log.warning(
                    "object stream broke; resuming on another replica",
                    extra={
                        "fields": {
                            "node": f"{node.ip}:{node.port}/{node.device}" if node else "",
                            "error": type(e).__name__,
                            "sent_bytes": sent,
                            "resumed": found is not None,
                        }
                    },
                )
                if found is None:
                    raise
                current, node = found
    finally:
        current.release()
