"""The database broker shared by containers and accounts: rows, stats, metadata, merge, reclaim.

A broker is one container's (or account's) database inside a device's LMDB environment. Its
methods are blocking and each runs exactly one LMDB transaction; servers call them through
``ListingEnv.run`` so they execute on the device's thread pool, never on the event loop.

Subclasses say what a row is (fields, how two versions merge, what it adds to the totals);
this base keeps the row store, the per-database change sequence, totals and metadata.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgpack
import xxhash

from common.listingdb.env import ListingEnv
from common.listingdb.keys import (
    NAME_KEY_BYTES_MAX,
    dbid_prefix,
    info_key,
    iter_forward,
    iter_reverse,
    name_key,
    parse_info_key,
    seq_key,
)
from common.listingdb.listing import ListingParams, Subdir, list_rows
from common.listingdb.records import (
    ZERO_TS,
    DbInfo,
    Metadata,
    decode_info,
    encode_info,
    merge_metadata,
)
from common.timestamps import Timestamp

__all__ = [
    "EMPTY_ROW_HASH",
    "ROW_VERSION",
    "STAGING_PARTITION",
    "Broker",
    "DeleteOutcome",
    "PutOutcome",
    "RowRecord",
    "list_databases",
    "put_rows_batch",
    "reclaim_all",
]

ROW_VERSION = 1
_RESERVED = frozenset({"v", "q", "n"})
# Databases being copied in by replication live under this partition (never a real one: the
# ring's part_power is at most 24) until they are complete; see common/listingdb/staging.py.
STAGING_PARTITION = 0xFFFFFFFF
EMPTY_ROW_HASH = "0" * 32


class RowRecord(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=RowRecord)
Txn = Any  # lmdb.Transaction (untyped package)


@dataclass(frozen=True)
class PutOutcome:
    # "created" (new or revived), "accepted" (existed), "conflict" (still deleted)
    status: str
    info: DbInfo


@dataclass(frozen=True)
class DeleteOutcome:
    # "deleted", "not_found", "conflict" (has live rows and emptiness was required)
    status: str
    info: DbInfo | None


class Broker(ABC, Generic[R]):
    """One database. Subclasses implement the row hooks below."""

    def __init__(self, env: ListingEnv, partition: int, hash_hex: str) -> None:
        self.env = env
        self.partition = partition
        self.hash_hex = hash_hex
        self.key = info_key(partition, hash_hex)

    # ----- row hooks for subclasses -------------------------------------------------------
    @abstractmethod
    def row_fields(self, row: R) -> dict[str, Any]:
        """The row's stored fields (short keys, msgpack types), without the name."""

    @abstractmethod
    def row_from(self, name: str, fields: dict[str, Any]) -> R:
        """The inverse of row_fields; validates what it reads."""

    @abstractmethod
    def merge_row(self, old: R | None, new: R) -> R | None:
        """The row to store, or None to keep `old` unchanged."""

    @abstractmethod
    def row_is_live(self, row: R) -> bool:
        """False for a tombstone (listed nowhere, counted nowhere)."""

    @abstractmethod
    def row_stats(self, row: R) -> dict[str, int]:
        """What a row adds to the database totals (nothing when it is a tombstone)."""

    @abstractmethod
    def row_reclaimable(self, row: R, cutoff: Timestamp) -> bool:
        """A tombstone older than the cutoff."""

    def is_deleted(self, info: DbInfo) -> bool:
        return info.timestamp_deleted

    def row_from_wire(self, name: str, fields: dict[str, Any]) -> R:
        """A row sent by a peer, checked: ValueError for anything malformed (subclasses
        check field types explicitly; this default relies on row_from's own checks)."""
        try:
            return self.row_from(name, fields)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad row {name[:80]!r}: {e!r}") from None

    def row_digest(self, row: R) -> int:
        """What a row contributes to the database's row hash (order-independent by XOR):
        xxh3-128 of the msgpack array of a tuple row (name first, then its fields in
        declaration order; twice as fast as building a map), else of [name, row_fields]."""
        plain: object = row  # the row types are NamedTuples; the protocol does not say so
        value = plain if isinstance(plain, tuple) else [row.name, self.row_fields(row)]
        return int(xxhash.xxh3_128_intdigest(msgpack.packb(value)))

    def _rehash(self, info: DbInfo, *digests: int) -> None:
        if info.row_hash is None:
            return
        h = int(info.row_hash, 16)
        for d in digests:
            h ^= d
        info.row_hash = f"{h:032x}"

    # ----- encoding ----------------------------------------------------------------------
    def _encode_row(self, row: R, seq: int) -> bytes:
        fields = self.row_fields(row)
        assert not _RESERVED & fields.keys(), fields
        record: dict[str, Any] = {"v": ROW_VERSION, "q": seq, **fields}
        raw_name = row.name.encode()
        if len(raw_name) > NAME_KEY_BYTES_MAX:
            record["n"] = row.name
        return bytes(msgpack.packb(record))

    def _decode_row(self, name: bytes, raw: bytes) -> tuple[R, int]:
        record = msgpack.unpackb(raw)
        if record.get("v") != ROW_VERSION:
            raise ValueError(f"unsupported row version {record.get('v')!r}")
        full = record["n"] if "n" in record else name.decode()
        # row_from reads only its own keys, so the record goes in whole (no copy per row).
        return self.row_from(full, record), int(record["q"])

    @staticmethod
    def _name_of(raw: bytes) -> bytes:
        return str(msgpack.unpackb(raw)["n"]).encode()

    # ----- transaction helpers -----------------------------------------------------------
    def _info(self, txn: Txn) -> DbInfo | None:
        raw = txn.get(self.key, db=self.env.info)
        return decode_info(raw) if raw is not None else None

    def _save_info(self, txn: Txn, info: DbInfo) -> None:
        txn.put(self.key, encode_info(info), db=self.env.info)

    def _get_row(self, txn: Txn, info: DbInfo, name: str) -> tuple[R, int] | None:
        raw_name = name.encode()
        raw = txn.get(dbid_prefix(info.dbid) + name_key(raw_name), db=self.env.rows)
        if raw is None:
            return None
        row, seq = self._decode_row(raw_name, raw)
        assert row.name == name, f"name key collision: {row.name!r} vs {name!r}"
        return row, seq

    def _apply_row(self, txn: Txn, info: DbInfo, row: R) -> bool:
        """Merge one row into the database; True when it changed. Updates totals and seqs."""
        held = self._get_row(txn, info, row.name)
        old, old_seq = held if held is not None else (None, 0)
        merged = self.merge_row(old, row)
        if merged is None:
            return False
        if old is not None:
            for k, v in self.row_stats(old).items():
                info.stats[k] = info.stats.get(k, 0) - v
            txn.delete(seq_key(info.dbid, old_seq), db=self.env.seqs)
            self._rehash(info, self.row_digest(old))
        self._rehash(info, self.row_digest(merged))
        for k, v in self.row_stats(merged).items():
            info.stats[k] = info.stats.get(k, 0) + v
        info.max_seq += 1
        nkey = name_key(merged.name.encode())
        txn.put(
            dbid_prefix(info.dbid) + nkey, self._encode_row(merged, info.max_seq), db=self.env.rows
        )
        txn.put(seq_key(info.dbid, info.max_seq), nkey, db=self.env.seqs)
        return True

    def _new_info(self, txn: Txn, account: str, container: str | None, ts: Timestamp) -> DbInfo:
        return DbInfo(
            dbid=self.env.next_dbid(txn),
            account=account,
            container=container,
            created_at=ts.internal,
            put_timestamp=ts.internal,
            status_changed_at=ts.internal,
            stats={},
            instance_id=os.urandom(16).hex(),
            row_hash=EMPTY_ROW_HASH,
        )

    # ----- public operations (one transaction each) -------------------------------------
    def get_info(self) -> DbInfo | None:
        with self.env.env.begin() as txn:
            return self._info(txn)

    def create_or_update(
        self,
        account: str,
        container: str | None,
        put_ts: Timestamp,
        metadata: Metadata,
        extra: dict[str, Any] | None = None,
    ) -> PutOutcome:
        """PUT of the database itself: create it, or move its put timestamp forward.
        `extra` values are stored unless the outcome is a conflict."""
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None:
                info = self._new_info(txn, account, container, put_ts)
                merge_metadata(info.metadata, metadata)
                info.extra.update(extra or {})
                self._save_info(txn, info)
                return PutOutcome("created", info)
            was_deleted = self.is_deleted(info)
            if put_ts > info.ts("put_timestamp"):
                info.put_timestamp = put_ts.internal
                if was_deleted and not self.is_deleted(info):
                    info.status_changed_at = put_ts.internal
                    info.created_at = put_ts.internal
            if self.is_deleted(info):
                return PutOutcome("conflict", info)
            merge_metadata(info.metadata, metadata)
            info.extra.update(extra or {})
            self._save_info(txn, info)
            return PutOutcome("created" if was_deleted else "accepted", info)

    def update_metadata(self, metadata: Metadata) -> DbInfo | None:
        """POST: merge metadata; None when the database is missing or deleted."""
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None or self.is_deleted(info):
                return None
            if merge_metadata(info.metadata, metadata):
                self._save_info(txn, info)
            return info

    def delete_db(
        self, ts: Timestamp, require_empty: bool, extra: dict[str, Any] | None = None
    ) -> DeleteOutcome:
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None or self.is_deleted(info):
                return DeleteOutcome("not_found", info)
            if require_empty and any(info.stats.values()):
                return DeleteOutcome("conflict", info)
            if ts > info.ts("delete_timestamp"):
                info.delete_timestamp = ts.internal
                if self.is_deleted(info):
                    info.status_changed_at = ts.internal
                info.extra.update(extra or {})
                self._save_info(txn, info)
            return DeleteOutcome("deleted" if self.is_deleted(info) else "conflict", info)

    def put_row(self, row: R) -> bool | None:
        """A row update from a client path; None when the database is missing or deleted."""
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None or self.is_deleted(info):
                return None
            changed = self._apply_row(txn, info, row)
            if changed:
                self._save_info(txn, info)
            return changed

    def get_row(self, name: str) -> R | None:
        with self.env.env.begin() as txn:
            info = self._info(txn)
            held = self._get_row(txn, info, name) if info is not None else None
            return held[0] if held is not None else None

    def list_rows(self, params: ListingParams) -> tuple[DbInfo, list[R | Subdir]] | None:
        """The info record and one listing page, read in one snapshot."""
        with self.env.env.begin(db=self.env.rows) as txn:
            info = self._info(txn)
            if info is None:
                return None
            src = _CursorSource(self, txn.cursor(db=self.env.rows), info.dbid)
            return info, list_rows(src, params)

    def set_extra(self, updates: dict[str, Any]) -> DbInfo | None:
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None:
                return None
            info.extra.update(updates)
            self._save_info(txn, info)
            return info

    # ----- replication --------------------------------------------------------------------
    def rows_since(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Rows changed after sequence number `seq`, oldest change first (wire dicts)."""
        out: list[dict[str, Any]] = []
        with self.env.env.begin() as txn:
            info = self._info(txn)
            if info is None or limit <= 0:
                return out
            cur = txn.cursor(db=self.env.seqs)
            start = seq_key(info.dbid, seq + 1)
            prefix = dbid_prefix(info.dbid)
            if not cur.set_range(start):
                return out
            for key, nkey in cur:
                if not key.startswith(prefix) or len(out) >= limit:
                    break
                raw = txn.get(prefix + nkey, db=self.env.rows)
                assert raw is not None, "seq index points at a missing row"
                name = nkey if len(nkey) <= NAME_KEY_BYTES_MAX else self._name_of(raw)
                row, row_seq = self._decode_row(name, raw)
                out.append({"name": row.name, "seq": row_seq, **self.row_fields(row)})
        return out

    def merge_rows(
        self, rows: list[dict[str, Any]], peer_id: str | None = None, sync_to: int | None = None
    ) -> int:
        """Merge wire rows from a peer; returns how many changed. Records the peer's
        high-water mark when `peer_id` is given: `sync_to` when given (the sender vouches
        that every row of its up to that seq is here now), else the highest "seq" of the
        rows. The mark only moves forward."""
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None:
                raise LookupError("merge_rows into a database that does not exist")
            changed = 0
            for wire in rows:
                fields = {k: v for k, v in wire.items() if k not in ("name", "seq")}
                changed += self._apply_row(txn, info, self.row_from(str(wire["name"]), fields))
            high = sync_to
            if high is None and rows:
                high = max(int(r.get("seq", 0)) for r in rows)
            if peer_id is not None and high is not None:
                info.sync_points[peer_id] = max(info.sync_points.get(peer_id, 0), high)
            self._save_info(txn, info)
            return changed

    def merge_info(self, remote: DbInfo) -> DbInfo:
        """Merge a peer's database-level state (timestamps, metadata); creates if missing.

        Only the peer's account/container names, timestamps and metadata are used; its
        database id, totals and sequence numbers are local to the peer.
        """
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None:
                created = Timestamp.parse(remote.created_at)
                info = self._new_info(txn, remote.account, remote.container, created)
                info.put_timestamp = ZERO_TS
            self.merge_info_fields(info, remote)
            self._save_info(txn, info)
            return info

    def merge_info_fields(self, info: DbInfo, remote: DbInfo) -> None:
        """Merge a peer's put/delete timestamps and metadata into `info` (in memory)."""
        was_deleted = self.is_deleted(info)
        for attr in ("put_timestamp", "delete_timestamp"):
            theirs = remote.ts(attr)
            if theirs > info.ts(attr):
                setattr(info, attr, theirs.internal)
        if self.is_deleted(info) != was_deleted:
            latest = max(info.ts("put_timestamp"), info.ts("delete_timestamp"))
            info.status_changed_at = latest.internal
        merge_metadata(info.metadata, remote.metadata)

    def sync_point(self, peer_id: str) -> int:
        info = self.get_info()
        return info.sync_points.get(peer_id, 0) if info is not None else 0

    def reclaim(self, cutoff: Timestamp, batch_rows_max: int = 10_000) -> tuple[int, bool]:
        """Drop tombstone rows and deleted metadata keys older than `cutoff`, and the whole
        database when it was deleted before `cutoff`. Returns (rows removed, db removed).

        Rows are examined `batch_rows_max` at a time in a read transaction and deleted in a
        short write transaction, so other writers on the device wait for one batch at most.
        """
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None:
                return 0, False
            if self.is_deleted(info) and info.ts("delete_timestamp") < cutoff:
                dropped = self._drop_all(txn, info)
                txn.delete(self.key, db=self.env.info)
                return dropped, True
            md = {k: v for k, v in info.metadata.items() if v[0] or Timestamp.parse(v[1]) >= cutoff}
            if md != info.metadata:
                info.metadata = md
                self._save_info(txn, info)
        removed = 0
        start: bytes | None = b""
        while start is not None:
            doomed, start = self._find_reclaimable(info.dbid, start, cutoff, batch_rows_max)
            if doomed:
                removed += self._delete_rows(doomed, cutoff)
        return removed, False

    def destroy(self) -> int:
        """Remove the database entirely (a handoff copy after it reached its primaries).
        Returns the number of rows removed."""
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None:
                return 0
            removed = self._drop_all(txn, info)
            txn.delete(self.key, db=self.env.info)
            return removed

    def destroy_if_unchanged(self, seen: DbInfo) -> bool:
        """Remove the database only if nothing changed since `seen` was read (a handoff
        copy must not lose a row written to it while it was being pushed)."""
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None:
                return True
            same = (info.max_seq, info.put_timestamp, info.delete_timestamp, info.metadata) == (
                seen.max_seq,
                seen.put_timestamp,
                seen.delete_timestamp,
                seen.metadata,
            )
            if not same:
                return False
            self._drop_all(txn, info)
            txn.delete(self.key, db=self.env.info)
            return True

    def _find_reclaimable(
        self, dbid: int, start: bytes, cutoff: Timestamp, examine_max: int
    ) -> tuple[list[bytes], bytes | None]:
        """Names of reclaimable rows among the next `examine_max` rows from `start`, and
        where to continue (None at the end)."""
        doomed: list[bytes] = []
        with self.env.env.begin(db=self.env.rows) as txn:
            rows = iter_forward(txn.cursor(db=self.env.rows), dbid, start, self._name_of)
            for examined, (name, raw) in enumerate(rows, 1):
                if self.row_reclaimable(self._decode_row(name, raw)[0], cutoff):
                    doomed.append(name)
                if examined >= examine_max:
                    return doomed, name + b"\x00"
        return doomed, None

    def _delete_rows(self, names: list[bytes], cutoff: Timestamp) -> int:
        """Delete rows that are (still) reclaimable, with their seq entries."""
        removed = 0
        with self.env.env.begin(write=True) as txn:
            info = self._info(txn)
            if info is None:
                return 0
            prefix = dbid_prefix(info.dbid)
            for name in names:
                held = self._get_row(txn, info, name.decode())
                if held is None or not self.row_reclaimable(held[0], cutoff):
                    continue  # changed since it was examined
                txn.delete(prefix + name_key(name), db=self.env.rows)
                txn.delete(seq_key(info.dbid, held[1]), db=self.env.seqs)
                self._rehash(info, self.row_digest(held[0]))
                removed += 1
            if removed:
                self._save_info(txn, info)
        return removed

    def _drop_all(self, txn: Txn, info: DbInfo) -> int:
        prefix = dbid_prefix(info.dbid)
        count = 0
        for db in (self.env.rows, self.env.seqs):
            cur = txn.cursor(db=db)
            if not cur.set_range(prefix):
                continue
            while cur.key().startswith(prefix):
                count += db is self.env.rows
                if not cur.delete():
                    break
        return count


class _CursorSource(Generic[R]):
    """Live rows of one database through an LMDB cursor, for the listing algorithm."""

    def __init__(self, broker: Broker[R], cur: Any, dbid: int) -> None:
        self.broker = broker
        self.cur = cur
        self.dbid = dbid

    def _live(self, it: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, R]]:
        for name, raw in it:
            row, _seq = self.broker._decode_row(name, raw)
            if self.broker.row_is_live(row):
                yield name, row

    def forward(self, start: bytes) -> Iterator[tuple[bytes, R]]:
        return self._live(iter_forward(self.cur, self.dbid, start, self.broker._name_of))

    def reverse(self, before: bytes | None) -> Iterator[tuple[bytes, R]]:
        return self._live(iter_reverse(self.cur, self.dbid, before, self.broker._name_of))


def put_rows_batch(env: ListingEnv, items: Sequence[tuple[Broker[Any], Any]]) -> list[bool | None]:
    """`Broker.put_row` for many (broker, row) pairs of one environment in ONE write
    transaction (group commit: one commit, so one fsync, for the lot). Blocking.

    Returns what `put_row` would have returned for each pair, in order, as if they had been
    applied one after another: True (changed), False (older or same), None (database
    missing or deleted). Several rows for the same database see each other's effects. Any
    exception aborts the transaction and nothing of the batch is stored; callers that must
    isolate one bad row from the others retry the rows one by one.
    """
    out: list[bool | None] = []
    infos: dict[bytes, DbInfo | None] = {}
    dirty: dict[bytes, tuple[Broker[Any], DbInfo]] = {}
    with env.env.begin(write=True) as txn:
        for broker, row in items:
            assert broker.env is env, "a batch holds rows of one environment"
            if broker.key not in infos:
                infos[broker.key] = broker._info(txn)
            info = infos[broker.key]
            if info is None or broker.is_deleted(info):
                out.append(None)
                continue
            changed = broker._apply_row(txn, info, row)
            if changed:
                dirty[broker.key] = (broker, info)
            out.append(changed)
        for broker, info in dirty.values():
            broker._save_info(txn, info)
    return out


def list_databases(env: ListingEnv, partition: int | None = None) -> list[tuple[int, str]]:
    """(partition, hash) of every database in the environment, or in one partition.
    Databases still being copied in (STAGING_PARTITION) are listed only when asked for."""
    out: list[tuple[int, str]] = []
    prefix = b"" if partition is None else partition.to_bytes(4, "big")
    staging = STAGING_PARTITION.to_bytes(4, "big")
    with env.env.begin(db=env.info) as txn:
        cur = txn.cursor()
        if not cur.set_range(prefix):
            return out
        for key in cur.iternext(keys=True, values=False):
            if not key.startswith(prefix) or (partition is None and key.startswith(staging)):
                break
            out.append(parse_info_key(key))
    return out


def reclaim_all(
    env: ListingEnv,
    make_broker: Callable[[ListingEnv, int, str], Broker[Any]],
    cutoff: Timestamp,
) -> tuple[int, int]:
    """Reclaim every database of an environment (blocking; run it on the env's executor).
    Returns (rows removed, databases removed)."""
    rows = dbs = 0
    for part, hash_hex in list_databases(env):
        removed, dropped = make_broker(env, part, hash_hex).reclaim(cutoff)
        rows += removed
        dbs += dropped
    return rows, dbs
