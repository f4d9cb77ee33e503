"""A database copied in whole by replication, installed only once it is complete.

When a peer holds no copy of a database, the replicator sends it every row (Swift sends the
whole SQLite file by rsync and renames it into place). Rows arrive in batches, so a copy
could be half done when the sender dies. Until it is complete it lives under
``STAGING_PARTITION`` with a hash derived from the real hash and the sender's instance id,
where no listing, HEAD or replication pass sees it. ``commit`` moves the info record to the
real key in one transaction (rows are keyed by database id, not by name, so nothing else
moves). A sender that comes back resumes from the staged copy's sync point; staged copies
nobody finished are removed after ``stage_ttl_s`` by ``reap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import xxhash

from common.listingdb.broker import STAGING_PARTITION, Broker, list_databases
from common.listingdb.env import ListingEnv
from common.listingdb.records import ZERO_TS, DbInfo
from common.timestamps import Timestamp

__all__ = ["begin", "commit", "reap", "staged_broker", "staging_hash"]

MakeBroker = Callable[[ListingEnv, int, str], Broker[Any]]
_STAGED_AT = "staged_at"


def staging_hash(hash_hex: str, sender_id: str) -> str:
    return xxhash.xxh3_128_hexdigest(f"stage/{hash_hex}/{sender_id}".encode())


def staged_broker(real: Broker[Any], sender_id: str) -> Broker[Any]:
    """The broker of the staged copy of `real` that `sender_id` is sending."""
    return type(real)(real.env, STAGING_PARTITION, staging_hash(real.hash_hex, sender_id))


def begin(real: Broker[Any], remote: DbInfo, sender_id: str, now: Timestamp) -> int | None:
    """Start (or resume) a staged copy; the sender's sync point in it, or None when the
    real database exists (the sender should sync rows instead)."""
    stage = staged_broker(real, sender_id)
    with real.env.env.begin(write=True) as txn:
        if real._info(txn) is not None:
            return None
        held = stage._info(txn)
        if held is not None:
            return int(held.sync_points.get(sender_id, 0))
        info = stage._new_info(
            txn, remote.account, remote.container, Timestamp.parse(remote.created_at)
        )
        info.put_timestamp = ZERO_TS
        info.extra[_STAGED_AT] = now.internal
        stage._save_info(txn, info)
        return 0


def commit(real: Broker[Any], remote: DbInfo, sender_id: str) -> str:
    """Install the staged copy: "created", "exists" (a real database appeared meanwhile;
    the staged copy is dropped and the sender syncs rows instead) or "missing"."""
    stage = staged_broker(real, sender_id)
    with real.env.env.begin(write=True) as txn:
        info = stage._info(txn)
        if info is None:
            return "missing"
        if real._info(txn) is not None:
            stage._drop_all(txn, info)
            txn.delete(stage.key, db=real.env.info)
            return "exists"
        real.merge_info_fields(info, remote)
        info.extra.pop(_STAGED_AT, None)
        txn.delete(stage.key, db=real.env.info)
        real._save_info(txn, info)
        return "created"


def reap(env: ListingEnv, make_broker: MakeBroker, cutoff: Timestamp) -> int:
    """Remove staged copies begun before `cutoff` (their sender gave up). Blocking."""
    removed = 0
    for part, hash_hex in list_databases(env, STAGING_PARTITION):
        broker = make_broker(env, part, hash_hex)
        info = broker.get_info()
        if info is None:
            continue
        started = Timestamp.parse(str(info.extra.get(_STAGED_AT, ZERO_TS)))
        if started < cutoff and broker.destroy_if_unchanged(info):
            removed += 1
    return removed
