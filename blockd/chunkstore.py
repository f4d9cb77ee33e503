"""A volume's chunks as objects: naming, geometry and validation of chunk bodies.

A volume of ``size_bytes`` is cut into chunks of ``chunk_bytes`` (the last one may be
shorter). Chunk ``i`` is the object ``<RESERVED_ACCOUNT>/vol-<volume id>/<i as 12 digits>``
holding the chunk's raw bytes; a missing object reads as zeros (thin provisioning). The body
is raw disk data, so the format version travels in a metadata header instead
(``X-Object-Meta-Cairn-Chunk-Format: 1``); see docs/block.md.
"""

from __future__ import annotations

from collections.abc import Callable

from blockd.allocmap import AllocMap
from blockd.journal import Journal
from blockd.store import ObjectStore, StoreError
from common.clock import Clock, SystemClock

__all__ = [
    "CHUNK_FORMAT",
    "CHUNK_FORMAT_HEADER",
    "RESERVED_ACCOUNT",
    "ChunkCorrupt",
    "ChunkStore",
    "chunk_container",
]

# Accounts starting with "." are refused by the proxy, so users can never reach volume data.
RESERVED_ACCOUNT = ".cairn_block"
CHUNK_FORMAT = 1
CHUNK_FORMAT_HEADER = "X-Object-Meta-Cairn-Chunk-Format"
# The capture id of the chunk's contents (docs/block.md, "Journal"): journal records with an
# older one hold nothing newer for this chunk.
CAPTURE_HEADER = "X-Object-Meta-Cairn-Capture"
_NAME_DIGITS = 12
VERSIONS_KEPT_MAX = 1 << 17  # ~15 MB of version tokens per volume at most


class ChunkCorrupt(StoreError):
    """A chunk object whose body cannot be a chunk of this volume (wrong length)."""


def chunk_container(volume_id: str) -> str:
    return f"vol-{volume_id}"


class ChunkStore:
    """Reads and writes one volume's chunk objects; ``fence`` runs before every mutation.

    The fence is how an exporter that lost its lease stops writing: it raises, and the write
    never reaches the store. With an ``alloc`` map, a chunk's bit is stored before its first
    put, and chunks whose bit is clear are known not to exist.
    """

    def __init__(
        self,
        store: ObjectStore,
        volume_id: str,
        size_bytes: int,
        chunk_bytes: int,
        *,
        account: str = RESERVED_ACCOUNT,
        fence: Callable[[], None] | None = None,
        alloc: AllocMap | None = None,
        journal: Journal | None = None,
        clock: Clock | None = None,
    ) -> None:
        if chunk_bytes <= 0 or size_bytes <= 0:
            raise ValueError("size_bytes and chunk_bytes must be positive")
        self.store = store
        self.volume_id = volume_id
        self.account = account
        self.container = chunk_container(volume_id)
        self.size_bytes = size_bytes
        self.chunk_bytes = chunk_bytes
        self.num_chunks = -(-size_bytes // chunk_bytes)
        self.fence = fence
        self.alloc = alloc
        # Where the cache appends small writes (None: every flush rewrites whole chunks).
        self.journal = journal
        self.clock = clock or SystemClock()
        self._last_capture = 0
        self.last_io_s = 0.0  # the cache's clock (monotonic) at the volume's last read or write
        # The store's version token of our own last put of each chunk (bounded, oldest
        # forgotten first): a read may then be answered by one replica holding exactly it.
        self._versions: dict[int, str] = {}

    def next_capture(self) -> int:
        """A capture id: wall-clock microseconds, strictly increasing within this process.

        Taken when a chunk body or a journal record is cut from the cache (a synchronous step),
        so a larger id always means contents at least as new."""
        self._last_capture = max(int(self.clock.time() * 1e6), self._last_capture + 1)
        return self._last_capture

    def observe_capture(self, capture: int) -> None:
        """Never hand out an id at or below one seen in the store (a clock set back)."""
        self._last_capture = max(self._last_capture, capture)

    async def capture_of(self, idx: int) -> int:
        """The capture id the chunk object was written with (0: none, or no object)."""
        found = await self.store.head(self.account, self.container, self.object_name(idx))
        if found is None:
            return 0
        raw = next((v for k, v in found.items() if k.lower() == CAPTURE_HEADER.lower()), "0")
        return int(raw) if raw.isdigit() else 0

    def chunk_len(self, idx: int) -> int:
        self._check_idx(idx)
        return min(self.chunk_bytes, self.size_bytes - idx * self.chunk_bytes)

    def object_name(self, idx: int) -> str:
        self._check_idx(idx)
        return f"{idx:0{_NAME_DIGITS}d}"

    def _check_idx(self, idx: int) -> None:
        if not 0 <= idx < self.num_chunks:
            raise IndexError(f"chunk {idx} outside 0..{self.num_chunks}")

    def never_written(self, idx: int) -> bool:
        """True if the allocation map shows the chunk has no object (no store request needed)."""
        return self.alloc is not None and not self.alloc.may_exist(idx)

    async def get(self, idx: int) -> bytes | None:
        """The chunk's bytes padded to its length, or None if it was never written."""
        if self.never_written(idx):
            return None
        name = self.object_name(idx)
        body = await self.store.get(
            self.account, self.container, name, version=self._versions.get(idx)
        )
        if body is None:
            return None
        want = self.chunk_len(idx)
        if len(body) > want:
            raise ChunkCorrupt(
                f"{self.container}/{self.object_name(idx)}: {len(body)} bytes > chunk {want}"
            )
        if len(body) < want:
            body = body + bytes(want - len(body))
        return body

    async def get_range(self, idx: int, offset: int, length: int) -> bytes | None:
        """Bytes ``[offset, offset + length)`` of the chunk (zero-padded where its object is
        short), or None if the chunk was never written. Fetches only that range."""
        want = self.chunk_len(idx)
        if offset < 0 or length <= 0 or offset + length > want:
            raise ValueError(f"range {offset}+{length} outside chunk {idx} of {want} bytes")
        if self.never_written(idx):
            return None
        name = self.object_name(idx)
        found = await self.store.get_range(
            self.account, self.container, name, offset, length, version=self._versions.get(idx)
        )
        if found is None:
            return None
        body, object_bytes = found
        if object_bytes > want:
            raise ChunkCorrupt(f"{self.container}/{name}: {object_bytes} bytes > chunk {want}")
        if len(body) > length:
            raise ChunkCorrupt(f"{self.container}/{name}: range answer of {len(body)} bytes")
        if len(body) < length:
            body = body + bytes(length - len(body))
        return body

    async def put(self, idx: int, data: bytes, capture: int | None = None) -> None:
        if len(data) != self.chunk_len(idx):
            raise ValueError(f"chunk {idx} body is {len(data)} bytes, want {self.chunk_len(idx)}")
        if self.fence is not None:
            self.fence()
        if self.alloc is not None:
            await self.alloc.mark(idx)  # durable before the chunk can exist
        headers = {CHUNK_FORMAT_HEADER: str(CHUNK_FORMAT)}
        if capture is not None:
            headers[CAPTURE_HEADER] = str(capture)
        self._versions.pop(idx, None)  # a failed put may have reached some replicas
        version = await self.store.put(
            self.account, self.container, self.object_name(idx), data, headers
        )
        if version is not None:
            self._remember(idx, version)

    def _remember(self, idx: int, version: str) -> None:
        self._versions[idx] = version
        if len(self._versions) > VERSIONS_KEPT_MAX:
            del self._versions[next(iter(self._versions))]

    async def delete(self, idx: int) -> None:
        if self.fence is not None:
            self.fence()
        self._versions.pop(idx, None)
        await self.store.delete(self.account, self.container, self.object_name(idx))

    async def exists(self, idx: int) -> bool:
        if self.alloc is not None and not self.alloc.may_exist(idx):
            return False  # never written: no HEAD needed
        found = await self.store.head(self.account, self.container, self.object_name(idx))
        return found is not None
