"""An account's database: one row per container with its last reported totals."""

from __future__ import annotations

from typing import Any, NamedTuple

from common.listingdb import Broker
from common.timestamps import Timestamp

__all__ = ["AccountBroker", "ContainerRow"]

_ZERO = "0000000000.00000"


class ContainerRow(NamedTuple):
    name: str
    put_timestamp: str
    delete_timestamp: str = _ZERO
    object_count: int = 0
    bytes_used: int = 0
    # When the container read the totals it reported (orders reports of the same container).
    stats_timestamp: str = _ZERO

    @property
    def deleted(self) -> bool:
        return Timestamp.parse(self.delete_timestamp) > Timestamp.parse(self.put_timestamp)

    def listing_fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.object_count,
            "bytes": self.bytes_used,
            "last_modified": Timestamp.parse(self.put_timestamp).isoformat,
        }

    def _stats_key(self) -> tuple[Timestamp, int, int]:
        # Ties between two reports stamped alike break on the numbers, so every replica
        # picks the same winner whatever the order the reports arrive in.
        return (Timestamp.parse(self.stats_timestamp), self.object_count, self.bytes_used)


class AccountBroker(Broker[ContainerRow]):
    def row_fields(self, row: ContainerRow) -> dict[str, Any]:
        return {
            "p": row.put_timestamp,
            "x": row.delete_timestamp,
            "o": row.object_count,
            "b": row.bytes_used,
            "st": row.stats_timestamp,
        }

    def row_from(self, name: str, fields: dict[str, Any]) -> ContainerRow:
        return ContainerRow(
            name=name,
            put_timestamp=Timestamp.parse(str(fields["p"])).internal,
            delete_timestamp=Timestamp.parse(str(fields["x"])).internal,
            object_count=int(fields["o"]),
            bytes_used=int(fields["b"]),
            stats_timestamp=Timestamp.parse(str(fields["st"])).internal,
        )

    def row_from_wire(self, name: str, fields: dict[str, Any]) -> ContainerRow:
        """A row from a peer, with every field checked (row_from converts leniently)."""
        stamps = [fields.get(k) for k in ("p", "x", "st")]
        counts = [fields.get(k) for k in ("o", "b")]
        if not all(isinstance(t, str) for t in stamps):
            raise ValueError(f"bad row {name[:80]!r}: p, x and st must be timestamp strings")
        if not all(type(c) is int and c >= 0 for c in counts):
            raise ValueError(f"bad row {name[:80]!r}: o and b must be counts")
        return super().row_from_wire(name, fields)

    def merge_row(self, old: ContainerRow | None, new: ContainerRow) -> ContainerRow | None:
        """Timestamps merge by max; the totals come from the newest report."""
        if old is None:
            return new
        put = max(Timestamp.parse(old.put_timestamp), Timestamp.parse(new.put_timestamp))
        delete = max(Timestamp.parse(old.delete_timestamp), Timestamp.parse(new.delete_timestamp))
        stats_from = new if new._stats_key() > old._stats_key() else old
        merged = stats_from._replace(put_timestamp=put.internal, delete_timestamp=delete.internal)
        return None if merged == old else merged

    def row_is_live(self, row: ContainerRow) -> bool:
        return not row.deleted

    def row_stats(self, row: ContainerRow) -> dict[str, int]:
        if row.deleted:
            return {}
        return {
            "container_count": 1,
            "object_count": row.object_count,
            "bytes_used": row.bytes_used,
        }

    def row_reclaimable(self, row: ContainerRow, cutoff: Timestamp) -> bool:
        return row.deleted and Timestamp.parse(row.delete_timestamp) < cutoff
