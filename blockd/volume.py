"""A volume: the BlockBackend the iSCSI target serves, made of chunk objects behind the cache.

Byte ranges are split at chunk boundaries and each piece goes through :class:`ChunkCache`
(concurrently for a multi-chunk request). FUA writes flush the chunks they touched before
returning; ``flush`` (SYNCHRONIZE CACHE) flushes every dirty chunk of the volume. A read that
starts where the previous one ended is sequential, and the chunks covering the next
``prefetch_bytes`` are loaded in the background (if the cache has room without waiting).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from blockd.backend import BackendRangeError, check_range
from blockd.cache import ChunkCache
from blockd.chunkstore import ChunkStore

__all__ = ["Volume"]

_STATUS_SCAN_CHUNKS_MAX = 16


class Volume:
    def __init__(
        self,
        chunks: ChunkStore,
        cache: ChunkCache,
        *,
        block_size: int = 512,
        serial: str | None = None,
        prefetch_bytes: int = 4 << 20,
    ) -> None:
        if chunks.chunk_bytes % block_size or chunks.size_bytes % block_size:
            raise ValueError("chunk and volume sizes must be whole blocks")
        self.chunks = chunks
        self.cache = cache
        self._block_size = block_size
        self._num_blocks = chunks.size_bytes // block_size
        self._serial = serial or chunks.volume_id[:32]
        self.prefetch_chunks = -(-prefetch_bytes // chunks.chunk_bytes)
        self._next_seq_lba = -1

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def serial(self) -> str:
        return self._serial

    def _spans(self, offset: int, length: int) -> Iterator[tuple[int, int, int, int]]:
        """(chunk index, offset in chunk, length, offset in the request) per touched chunk."""
        cb = self.chunks.chunk_bytes
        pos = 0
        while pos < length:
            idx, off = divmod(offset + pos, cb)
            n = min(cb - off, length - pos)
            yield idx, off, n, pos
            pos += n

    async def read(self, lba: int, count: int) -> bytes:
        check_range(lba, count, self._num_blocks)
        bs = self._block_size
        spans = list(self._spans(lba * bs, count * bs))
        if len(spans) == 1:  # the common case: no task per chunk
            idx, off, n, _ = spans[0]
            parts = [await self.cache.read(self.chunks, idx, off, n)]
        else:
            parts = await asyncio.gather(
                *(self.cache.read(self.chunks, idx, off, n) for idx, off, n, _ in spans)
            )
        if spans and lba == self._next_seq_lba and self.prefetch_chunks:
            last = spans[-1][0]
            upto = min(last + 1 + self.prefetch_chunks, self.chunks.num_chunks)
            self.cache.prefetch(self.chunks, range(last + 1, upto))
        self._next_seq_lba = lba + count
        return b"".join(parts)

    async def write(self, lba: int, data: bytes, fua: bool = False) -> None:
        bs = self._block_size
        if len(data) % bs:
            raise BackendRangeError(f"write of {len(data)} bytes is not whole {bs}-byte blocks")
        check_range(lba, len(data) // bs, self._num_blocks)
        idx, off = divmod(lba * bs, self.chunks.chunk_bytes)
        if off + len(data) <= self.chunks.chunk_bytes:  # the common case: within one chunk
            # The bytes themselves, not a view: the cache may hold them as they are.
            await self.cache.write(self.chunks, idx, off, data)
            idxs = [idx]
        else:
            view = memoryview(data)
            spans = list(self._spans(lba * bs, len(data)))
            await asyncio.gather(
                *(
                    self.cache.write(self.chunks, idx, off, view[pos : pos + n])
                    for idx, off, n, pos in spans
                )
            )
            idxs = [idx for idx, _, _, _ in spans]
        if fua:
            await self.cache.flush(self.chunks, idxs)

    async def flush(self) -> None:
        await self.cache.flush(self.chunks)

    async def unmap(self, lba: int, count: int) -> None:
        check_range(lba, count, self._num_blocks)
        bs = self._block_size
        await asyncio.gather(
            *(
                self.cache.discard(self.chunks, idx, off, n)
                for idx, off, n, _ in self._spans(lba * bs, count * bs)
            )
        )

    async def is_mapped(self, lba: int) -> tuple[bool, int]:
        """Mapping is tracked per chunk: a chunk with an object (or cached data) is mapped."""
        check_range(lba, 1, self._num_blocks)
        bs = self._block_size
        idx, off = divmod(lba * bs, self.chunks.chunk_bytes)
        mapped = await self.cache.is_mapped(self.chunks, idx)
        run_bytes = self.chunks.chunk_len(idx) - off
        last = min(self.chunks.num_chunks, idx + _STATUS_SCAN_CHUNKS_MAX)
        for nxt in range(idx + 1, last):
            if await self.cache.is_mapped(self.chunks, nxt) != mapped:
                break
            run_bytes += self.chunks.chunk_len(nxt)
        return mapped, run_bytes // bs

    async def close(self) -> None:
        """Flush this volume's dirty data (the cache itself is shared and stays open)."""
        await self.flush()
