"""A client's PUT body as the proxy forwards it: the error for a body that can't be read in
full, and the body regrouped into pieces (lists of the chunks it arrived in, never joined)."""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["ClientBodyError", "piece_lists"]


class ClientBodyError(Exception):
    """The client's body could not be read in full (disconnect, timeout, short body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def piece_lists(body: AsyncIterator[bytes], piece_bytes: int) -> AsyncIterator[list[bytes]]:
    """`body` regrouped into pieces of at least `piece_bytes` (the last may be shorter), each
    the list of the non-empty chunks it is made of: a sender writes them with one
    `writelines` and a hasher takes them one by one, so no byte is copied to join them."""
    parts: list[bytes] = []
    size = 0
    async for chunk in body:
        if not chunk:
            continue
        parts.append(chunk)
        size += len(chunk)
        if size >= piece_bytes:
            yield parts
            parts, size = [], 0
    if parts:
        yield parts
