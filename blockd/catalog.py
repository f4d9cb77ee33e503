"""Volume records and the volume index, kept as JSON objects in the reserved account.

- ``<RESERVED_ACCOUNT>/volumes/<id>``: one :class:`VolumeRecord` per volume.
- ``<RESERVED_ACCOUNT>/volumes/.index``: the ids of all volumes (the store has no listing).

Both carry ``format_version`` and are validated right after reading and right before writing.
A record also carries ``record_version``, bumped on every update, so a reader can tell which
of two copies is newer. Index updates are read-modify-write serialised by a lock inside one
blockd; two blockd processes creating volumes at the same instant could lose an index entry
(see docs/block.md): the record itself is never lost, only its listing.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from blockd.chunkstore import RESERVED_ACCOUNT
from blockd.store import ObjectStore

__all__ = [
    "INDEX_OBJECT",
    "RECORDS_CONTAINER",
    "RECORD_FORMAT",
    "Catalog",
    "CatalogCorrupt",
    "VolumeRecord",
    "decode_record",
    "encode_record",
]

RECORD_FORMAT = 1
RECORDS_CONTAINER = "volumes"
INDEX_OBJECT = ".index"
VOLUME_STATUSES = frozenset({"available", "deleting"})
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_RECORD_BYTES_MAX = 64 << 10
_INDEX_BYTES_MAX = 64 << 20


class CatalogCorrupt(ValueError):
    """A record or index object that does not decode to a valid record."""


@dataclass(frozen=True)
class VolumeRecord:
    id: str  # 32 lowercase hex digits
    name: str
    project: str
    size_bytes: int
    chunk_bytes: int
    block_size: int
    created_at: str  # ISO 8601 UTC, Cinder style
    chap_user: str
    chap_secret: str
    status: str = "available"
    record_version: int = 1
    format_version: int = RECORD_FORMAT

    def __post_init__(self) -> None:
        problem = _record_problem(self)
        if problem:
            raise CatalogCorrupt(f"volume record {self.id!r}: {problem}")


def _record_problem(r: VolumeRecord) -> str | None:
    if r.format_version != RECORD_FORMAT:
        return f"format_version {r.format_version} is not supported"
    if not _ID_RE.match(r.id):
        return "id must be 32 lowercase hex digits"
    if r.block_size not in (512, 4096):
        return "block_size must be 512 or 4096"
    if r.chunk_bytes <= 0 or r.chunk_bytes % r.block_size:
        return "chunk_bytes must be a positive multiple of block_size"
    if r.size_bytes <= 0 or r.size_bytes % r.block_size:
        return "size_bytes must be a positive multiple of block_size"
    if r.status not in VOLUME_STATUSES:
        return f"unknown status {r.status!r}"
    if r.record_version < 1:
        return "record_version must be >= 1"
    return None


def encode_record(record: VolumeRecord) -> bytes:
    return json.dumps(asdict(record), sort_keys=True).encode()


def decode_record(body: bytes) -> VolumeRecord:
    raw = _decode_json(body, "volume record")
    fields = set(VolumeRecord.__dataclass_fields__)
    if set(raw) != fields:
        raise CatalogCorrupt(f"volume record has keys {sorted(raw)}, want {sorted(fields)}")
    ints = ("size_bytes", "chunk_bytes", "block_size", "record_version", "format_version")
    for key in fields:
        want: type = int if key in ints else str
        if type(raw[key]) is not want:
            raise CatalogCorrupt(f"volume record field {key} is not {want.__name__}")
    return VolumeRecord(**raw)


def _decode_json(body: bytes, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CatalogCorrupt(f"{what} is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise CatalogCorrupt(f"{what} is not a JSON object")
    return raw


def encode_index(ids: list[str]) -> bytes:
    return json.dumps({"format_version": RECORD_FORMAT, "volumes": sorted(set(ids))}).encode()


def decode_index(body: bytes) -> list[str]:
    raw = _decode_json(body, "volume index")
    if raw.get("format_version") != RECORD_FORMAT:
        raise CatalogCorrupt(f"volume index format_version {raw.get('format_version')!r}")
    ids = raw.get("volumes")
    if not isinstance(ids, list) or not all(isinstance(i, str) and _ID_RE.match(i) for i in ids):
        raise CatalogCorrupt("volume index 'volumes' must be a list of volume ids")
    return list(ids)


class Catalog:
    """Volume records and the index in one object store."""

    def __init__(self, store: ObjectStore, account: str = RESERVED_ACCOUNT) -> None:
        self.store = store
        self.account = account
        self._index_lock = asyncio.Lock()

    async def get(self, volume_id: str) -> VolumeRecord | None:
        if not _ID_RE.match(volume_id):
            return None
        body = await self.store.get(self.account, RECORDS_CONTAINER, volume_id)
        if body is None:
            return None
        if len(body) > _RECORD_BYTES_MAX:
            raise CatalogCorrupt(f"volume record {volume_id} is {len(body)} bytes")
        return decode_record(body)

    async def put(self, record: VolumeRecord) -> None:
        body = encode_record(record)
        assert decode_record(body) == record  # paired check: what we write must read back
        await self.store.put(self.account, RECORDS_CONTAINER, record.id, body)

    async def create(self, record: VolumeRecord) -> None:
        """Store the record first, then list it: a crash in between leaves an unlisted record."""
        await self.put(record)
        async with self._index_lock:
            ids = await self._read_index()
            if record.id not in ids:
                await self._write_index([*ids, record.id])

    async def update(self, record: VolumeRecord, **changes: Any) -> VolumeRecord:
        new = replace(record, record_version=record.record_version + 1, **changes)
        await self.put(new)
        return new

    async def remove(self, volume_id: str) -> None:
        """Unlist first, then delete the record."""
        async with self._index_lock:
            ids = await self._read_index()
            if volume_id in ids:
                await self._write_index([i for i in ids if i != volume_id])
        await self.store.delete(self.account, RECORDS_CONTAINER, volume_id)

    async def records(self) -> list[VolumeRecord]:
        async with self._index_lock:
            ids = await self._read_index()
        records = await asyncio.gather(*(self.get(i) for i in ids))
        return [r for r in records if r is not None]

    async def _read_index(self) -> list[str]:
        body = await self.store.get(self.account, RECORDS_CONTAINER, INDEX_OBJECT)
        if body is None:
            return []
        if len(body) > _INDEX_BYTES_MAX:
            raise CatalogCorrupt(f"volume index is {len(body)} bytes")
        return decode_index(body)

    async def _write_index(self, ids: list[str]) -> None:
        body = encode_index(ids)
        assert decode_index(body) == sorted(set(ids))
        await self.store.put(self.account, RECORDS_CONTAINER, INDEX_OBJECT, body)
