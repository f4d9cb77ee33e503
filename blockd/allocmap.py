"""Which chunks of a volume may have an object: a bitmap kept as one object beside the chunks.

The store cannot list a volume's chunk objects, so without this a volume delete would have to
delete every chunk index (and write a tombstone for each one that never existed), and GET LBA
STATUS would need a HEAD per chunk. The map is a superset: a chunk's bit is made durable
*before* its first put, and is not cleared when the chunk is deleted.

Object ``<RESERVED_ACCOUNT>/vol-<id>/.alloc``, format version 1 (docs/block.md)::

    magic b"cairn-alloc\\0" (12 bytes) | version u32 | num_chunks u64 | bitmap | crc32 u32

integers big-endian; the bitmap has ``ceil(num_chunks / 8)`` bytes, chunk ``i`` is bit
``i % 8`` (least significant first) of byte ``i // 8``; the CRC-32 covers everything before it.
"""

from __future__ import annotations

import asyncio
import struct
import zlib

from blockd.store import ObjectStore, StoreError

__all__ = [
    "ALLOC_FORMAT",
    "ALLOC_OBJECT",
    "MARK_AHEAD_CHUNKS_MAX",
    "AllocCorrupt",
    "AllocMap",
    "decode",
    "encode",
]

ALLOC_OBJECT = ".alloc"
ALLOC_FORMAT = 1
_MAGIC = b"cairn-alloc\x00"
_HEAD = struct.Struct(">12sIQ")
_CRC = struct.Struct(">I")


class AllocCorrupt(StoreError):
    """An allocation map object that does not decode (bad magic, version, size or CRC)."""


def encode(num_chunks: int, bitmap: bytes | bytearray) -> bytes:
    assert len(bitmap) == (num_chunks + 7) // 8
    body = _HEAD.pack(_MAGIC, ALLOC_FORMAT, num_chunks) + bytes(bitmap)
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes, num_chunks: int) -> bytearray:
    if len(data) < _HEAD.size + _CRC.size:
        raise AllocCorrupt(f"allocation map of {len(data)} bytes is too short")
    body, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise AllocCorrupt("allocation map checksum mismatch")
    magic, version, count = _HEAD.unpack(body[: _HEAD.size])
    if magic != _MAGIC or version != ALLOC_FORMAT:
        raise AllocCorrupt(f"not a version {ALLOC_FORMAT} allocation map")
    if count != num_chunks or len(body) != _HEAD.size + (count + 7) // 8:
        raise AllocCorrupt(f"allocation map for {count} chunks, volume has {num_chunks}")
    bitmap = bytearray(body[_HEAD.size :])
    if num_chunks % 8 and bitmap[-1] >> (num_chunks % 8):
        raise AllocCorrupt("allocation map has bits past the last chunk")
    return bitmap


def _has(bitmap: bytes | bytearray, idx: int) -> bool:
    return bool(bitmap[idx >> 3] >> (idx & 7) & 1)


# The most bits a mark sets ahead of a sequential run of chunks (see AllocMap._mark_ahead).
MARK_AHEAD_CHUNKS_MAX = 64


class AllocMap:
    """The bitmap of one volume; `mark` returns once a chunk's bit is in the store.

    Concurrent marks are batched: while one map write is in flight, later marks wait and go
    out together in the next write. A mark that extends a run of set bits also sets the bits
    after it (as many as the run is long, at most MARK_AHEAD_CHUNKS_MAX): a sequential writer
    then needs a map write only every so many chunks.
    """

    def __init__(self, store: ObjectStore, account: str, container: str, num_chunks: int) -> None:
        self.store = store
        self.account = account
        self.container = container
        self.num_chunks = num_chunks
        self.known = False  # False: no map was found; every chunk may exist
        self._durable = bytearray((num_chunks + 7) // 8)
        self._pending: set[int] = set()
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        body = await self.store.get(self.account, self.container, ALLOC_OBJECT)
        if body is None:
            self.known = False
            self._durable = bytearray((self.num_chunks + 7) // 8)
        else:
            self._durable = decode(body, self.num_chunks)
            self.known = True

    async def start_empty(self) -> None:
        """A new volume: write an empty map, so every later chunk is recorded."""
        empty = bytearray((self.num_chunks + 7) // 8)
        await self._write(empty)
        self._durable = empty
        self.known = True

    def may_exist(self, idx: int) -> bool:
        return not self.known or _has(self._durable, idx)

    def allocated(self) -> list[int]:
        """Chunks that may have an object (every chunk when no map was found)."""
        if not self.known:
            return list(range(self.num_chunks))
        return [i for i in range(self.num_chunks) if _has(self._durable, i)]

    async def mark(self, idx: int) -> None:
        if not self.known or _has(self._durable, idx):
            return
        self._pending.add(idx)
        async with self._lock:
            if _has(self._durable, idx):
                return  # the write before ours carried our bit
            bitmap = bytearray(self._durable)
            batch = set(self._pending)
            for i in batch:
                bitmap[i >> 3] |= 1 << (i & 7)
            self._pending -= batch
            for i in sorted(batch):
                self._mark_ahead(bitmap, i)
            try:
                await self._write(bitmap)
            except BaseException:
                self._pending |= batch  # retried by the next mark
                raise
            self._durable = bitmap

    def _mark_ahead(self, bitmap: bytearray, idx: int) -> None:
        """Set the bits after `idx` when `idx` ends a run of set bits (a sequential writer):
        as many as the run is long, at most MARK_AHEAD_CHUNKS_MAX, so a run of n chunks
        written in order costs about log2(MARK_AHEAD_CHUNKS_MAX) + n / MARK_AHEAD_CHUNKS_MAX
        map writes instead of one per batch of flushes (each a PUT on three replicas). The map
        stays a superset: a bit set ahead only means a read or delete asks the store."""
        run = 1
        while run < MARK_AHEAD_CHUNKS_MAX and idx - run >= 0 and _has(bitmap, idx - run):
            run += 1
        if run == 1:
            return  # a first chunk alone, not a run yet
        for i in range(idx + 1, min(idx + 1 + run, self.num_chunks)):
            bitmap[i >> 3] |= 1 << (i & 7)

    async def _write(self, bitmap: bytearray) -> None:
        body = encode(self.num_chunks, bitmap)
        assert decode(body, self.num_chunks) == bitmap
        await self.store.put(self.account, self.container, ALLOC_OBJECT, body)

    async def remove(self) -> None:
        await self.store.delete(self.account, self.container, ALLOC_OBJECT)
