"""A container's database: one row per object name (live or tombstone), LWW by timestamp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.listingdb import Broker, DbInfo
from common.timestamps import Timestamp

__all__ = ["ContainerBroker", "ObjectRow", "bytes_used", "object_count"]

_EMPTY_ETAG = "d41d8cd98f00b204e9800998ecf8427e"


@dataclass(frozen=True)
class ObjectRow:
    name: str
    timestamp: str  # internal form
    size: int = 0
    content_type: str = ""
    etag: str = ""
    deleted: bool = False

    @classmethod
    def tombstone(cls, name: str, ts: Timestamp) -> ObjectRow:
        return cls(name, ts.internal, 0, "", _EMPTY_ETAG, deleted=True)

    def listing_fields(self) -> dict[str, Any]:
        """Swift's JSON listing fields, in Swift's order."""
        return {
            "name": self.name,
            "hash": self.etag,
            "bytes": self.size,
            "content_type": self.content_type,
            "last_modified": Timestamp.parse(self.timestamp).isoformat,
        }


def object_count(info: DbInfo) -> int:
    return info.stats.get("object_count", 0)


def bytes_used(info: DbInfo) -> int:
    return info.stats.get("bytes_used", 0)


class ContainerBroker(Broker[ObjectRow]):
    def row_fields(self, row: ObjectRow) -> dict[str, Any]:
        return {
            "t": row.timestamp,
            "s": row.size,
            "c": row.content_type,
            "e": row.etag,
            "d": row.deleted,
        }

    def row_from(self, name: str, fields: dict[str, Any]) -> ObjectRow:
        row = ObjectRow(
            name=name,
            timestamp=Timestamp.parse(str(fields["t"])).internal,
            size=int(fields["s"]),
            content_type=str(fields["c"]),
            etag=str(fields["e"]),
            deleted=bool(fields["d"]),
        )
        assert row.size >= 0, row
        return row

    def merge_row(self, old: ObjectRow | None, new: ObjectRow) -> ObjectRow | None:
        if old is None or Timestamp.parse(new.timestamp) > Timestamp.parse(old.timestamp):
            return new
        return None

    def row_is_live(self, row: ObjectRow) -> bool:
        return not row.deleted

    def row_stats(self, row: ObjectRow) -> dict[str, int]:
        if row.deleted:
            return {}
        return {"object_count": 1, "bytes_used": row.size}

    def row_reclaimable(self, row: ObjectRow, cutoff: Timestamp) -> bool:
        return row.deleted and Timestamp.parse(row.timestamp) < cutoff

    def is_deleted(self, info: DbInfo) -> bool:
        # Swift's rule: deleted by timestamp and empty; rows merged in later revive it.
        return info.timestamp_deleted and object_count(info) == 0
