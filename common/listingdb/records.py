"""The per-database info record and metadata merging (msgpack, versioned)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from common.timestamps import Timestamp

__all__ = [
    "INFO_VERSION",
    "ZERO_TS",
    "DbInfo",
    "Metadata",
    "decode_info",
    "encode_info",
    "live_metadata",
    "merge_metadata",
]

INFO_VERSION = 1
ZERO_TS = "0000000000.00000"

# header name -> (value, timestamp internal form); an empty value is a deleted key, kept so
# that an older set of the same key arriving later by replication loses.
Metadata = dict[str, tuple[str, str]]


@dataclass
class DbInfo:
    dbid: int
    account: str
    container: str | None
    created_at: str
    put_timestamp: str
    delete_timestamp: str = ZERO_TS
    status_changed_at: str = ZERO_TS
    # Totals over live rows; names are the service's ("object_count", "bytes_used", ...).
    stats: dict[str, int] = field(default_factory=dict)
    max_seq: int = 0
    metadata: Metadata = field(default_factory=dict)
    # Random identity of this replica of the database (for replication sync points).
    instance_id: str = ""
    # peer instance id -> highest of its row sequence numbers merged here.
    sync_points: dict[str, int] = field(default_factory=dict)
    # Service-specific values (the container keeps its last account report here).
    extra: dict[str, Any] = field(default_factory=dict)
    # XOR of a digest of every stored row (32 hex digits): equal on two replicas holding the
    # same rows, whatever order they arrived in. None when unknown (a record written before
    # the field existed); replication then compares sequence numbers only.
    row_hash: str | None = None

    def ts(self, name: str) -> Timestamp:
        value = getattr(self, name)
        assert isinstance(value, str)
        return Timestamp.parse(value)

    @property
    def timestamp_deleted(self) -> bool:
        return self.ts("delete_timestamp") > self.ts("put_timestamp")


def encode_info(info: DbInfo) -> bytes:
    record: dict[str, Any] = {
        "v": INFO_VERSION,
        "id": info.dbid,
        "a": info.account,
        "c": info.container,
        "ca": info.created_at,
        "pt": info.put_timestamp,
        "dt": info.delete_timestamp,
        "sc": info.status_changed_at,
        "st": info.stats,
        "sq": info.max_seq,
        "md": {k: list(v) for k, v in info.metadata.items()},
        "iid": info.instance_id,
        "sp": info.sync_points,
        "x": info.extra,
    }
    if info.row_hash is not None:
        record["rh"] = info.row_hash
    return bytes(msgpack.packb(record))


def decode_info(raw: bytes) -> DbInfo:
    r = msgpack.unpackb(raw)
    if not isinstance(r, dict) or r.get("v") != INFO_VERSION:
        raise ValueError(
            f"unsupported db info record version {r.get('v') if isinstance(r, dict) else r!r}"
        )
    return DbInfo(
        dbid=r["id"],
        account=r["a"],
        container=r["c"],
        created_at=r["ca"],
        put_timestamp=r["pt"],
        delete_timestamp=r["dt"],
        status_changed_at=r["sc"],
        stats=dict(r["st"]),
        max_seq=r["sq"],
        metadata={k: (v[0], v[1]) for k, v in r["md"].items()},
        instance_id=r["iid"],
        sync_points=dict(r["sp"]),
        extra=dict(r["x"]),
        row_hash=r.get("rh"),
    )


def merge_metadata(current: Metadata, incoming: Metadata) -> bool:
    """Merge per key, newest timestamp wins; True when anything changed."""
    changed = False
    for key, (value, ts) in incoming.items():
        have = current.get(key)
        if have is None or Timestamp.parse(ts) > Timestamp.parse(have[1]):
            current[key] = (value, ts)
            changed = True
    return changed


def live_metadata(md: Metadata) -> dict[str, str]:
    return {k: v for k, (v, _ts) in md.items() if v != ""}
