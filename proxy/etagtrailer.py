"""The proxy's half of a large PUT's ETag trailer (format: common/puttrailer.py).

For a PUT with a declared Content-Length above SMALL_PUT_BYTES_MAX the proxy hashes the
client's body once (MD5 for the ETag, xxh3-128 for the object servers to check what they
received against) while it streams the body to the replicas, and sends each replica the
trailer after the body. The object servers then compute no MD5 of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import xxhash

from common.puttrailer import (
    PutTrailer,
    encode_trailer,
)

__all__ = ["BodyHasher", "TrailerPlan", "trailer_plan"]

# PUTs of more than this many declared bytes carry a trailer (smaller ones are sent whole by
# put_buffered, with the object server computing the MD5 of its copy as before).
TRAILER_BODY_BYTES_MIN = 64 * 1024 + 1


@dataclass(frozen=True)
class TrailerPlan:
    """A PUT that carries a trailer: its declared length and the client's ETag ("" if none)."""

    body_len: int
    client_etag: str

    def trailer(self, md5_hex: str, xxh3_128_hex: str) -> bytes:
        """The trailer for a body with these digests: commit, or cancel when the client
        declared an ETag the body does not have (then no replica may commit)."""
        bad = bool(self.client_etag) and self.client_etag != md5_hex
        action: Literal["commit", "cancel"] = "cancel" if bad else "commit"
        return encode_trailer(PutTrailer(action, self.body_len, md5_hex, xxh3_128_hex))


def trailer_plan(headers: Mapping[str, str]) -> TrailerPlan | None:
    """The plan for a PUT with these backend headers, None for one sent the plain way
    (chunked, small, or no valid Content-Length)."""
    raw = headers.get("Content-Length")
    if raw is None or not raw.isdigit() or "Transfer-Encoding" in headers:
        return None
    length = int(raw)
    if length < TRAILER_BODY_BYTES_MIN:
        return None
    etag = headers.get("ETag", "").strip().strip('"').lower()
    return TrailerPlan(length, etag)


class BodyHasher:
    """MD5 and xxh3-128 of a body fed in pieces, computed in a thread (hashlib releases the
    GIL), one piece at a time, while the event loop sends the piece on."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5()
        self._xxh = xxhash.xxh3_128()
        self._busy: asyncio.Future[None] | None = None
        self.total = 0

    def _update(self, piece: bytes) -> None:
        self._md5.update(piece)
        self._xxh.update(piece)

    def _update_parts(self, parts: list[bytes]) -> None:
        for part in parts:
            self._md5.update(part)
            self._xxh.update(part)

    async def feed(self, piece: bytes) -> None:
        """Start hashing `piece` once the previous piece is hashed (order matters)."""
        if self._busy is not None:
            await self._busy
        self.total += len(piece)
        self._busy = asyncio.get_running_loop().run_in_executor(None, self._update, piece)

    async def feed_parts(self, parts: list[bytes]) -> None:
        """`feed` for a piece given as the list of its parts (hashed in order, not joined)."""
        if self._busy is not None:
            await self._busy
        self.total += sum(map(len, parts))
        self._busy = asyncio.get_running_loop().run_in_executor(None, self._update_parts, parts)

    async def finish(self) -> tuple[str, str]:
        """(MD5 hex, xxh3-128 hex) of everything fed."""
        busy, self._busy = self._busy, None
        if busy is not None:
            await busy
        return self._md5.hexdigest(), self._xxh.hexdigest()
