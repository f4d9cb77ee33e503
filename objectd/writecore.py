"""What the object write handlers share (objectd/writes.py, objectd/smallput.py): the
refusals (409, 412), opening and finishing a PUT's temp file, and what follows a commit: the
expiry queue, the container updates (or async pendings) and the 201."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from common.log import get_logger, request_id
from common.timestamps import Timestamp
from objectd.asyncpending import AsyncPending, ContainerTarget, write_pending
from objectd.conf import ServerState
from objectd.container_update import send_updates
from objectd.diskfile import (
    Deleted,
    DiskFile,
    Lookup,
    Missing,
    ObjectInfo,
    ObjectWriter,
    RealDiskFile,
)
from objectd.expirer import ExpiryEntry, write_entry
from objectd.fileformat import ObjectMetadata
from objectd.putbody import status
from objectd.request import ObjectPath

__all__ = [
    "acknowledge",
    "conflict",
    "existing_timestamp",
    "finish_put",
    "lookup_unless_refused",
    "open_for_put",
    "queue_expiry",
    "refusal",
    "update_containers",
]

log = get_logger("cairn.object-server")


def existing_timestamp(
    found: ObjectInfo | Deleted | Missing, include_meta: bool
) -> Timestamp | None:
    if isinstance(found, Deleted):
        return found.timestamp
    if isinstance(found, ObjectInfo):
        return found.timestamp if include_meta else found.data.timestamp
    return None


def conflict(existing: Timestamp) -> web.Response:
    return status(
        409, "timestamp older than what is stored", {"X-Backend-Timestamp": existing.internal}
    )


def refusal(found: Lookup, ts: Timestamp, if_none_match: bool) -> web.Response | None:
    """409 when what is stored is as new as `ts`, 412 for If-None-Match: * on an object."""
    existing = existing_timestamp(found, include_meta=False)
    if existing is not None and existing >= ts:
        return conflict(existing)
    if if_none_match and isinstance(found, ObjectInfo):
        return status(412, "object exists", {"X-Backend-Timestamp": found.timestamp.internal})
    return None


def lookup_unless_refused(
    st: ServerState, device: str, df: DiskFile, ts: Timestamp, if_none_match: bool
) -> bool | web.Response:
    """The device check, then whether anything is stored (older files the commit may make
    obsolete), or the refusal what is stored calls for (409 older timestamp, 412
    If-None-Match: *); the prologue of every PUT path (blocking).

    Without If-None-Match a real disk file is first judged by its file names alone
    (`RealDiskFile.stored_base`): when the newest .data or .ts is older than `ts`, or there
    is none, no footer is read. Only a name as new as `ts` (a 409 in the making) is looked up
    in full, so a damaged file is still quarantined, and the answer is the full lookup's. A
    damaged older file is not quarantined here: the commit makes it obsolete and removes it."""
    st.devices.check(device)
    if not if_none_match and isinstance(df, RealDiskFile):
        base = df.stored_base()
        if base is None or base < ts:
            return base is not None
    found = df.lookup()
    refused = refusal(found, ts, if_none_match)
    return not isinstance(found, Missing) if refused is None else refused


def open_for_put(
    st: ServerState,
    device: str,
    df: DiskFile,
    ts: Timestamp,
    if_none_match: bool,
    length: int | None,
    md5: bool = True,
) -> ObjectWriter | web.Response:
    """Device check, lookup and the temp file in one pool step (blocking).

    Returns the writer (computing the body's MD5, or with `md5=False` its xxh3-128 for a PUT
    with an ETag trailer), or the refusal (409 older timestamp, 412 If-None-Match: *).
    """
    found = lookup_unless_refused(st, device, df, ts, if_none_match)
    if isinstance(found, web.Response):
        return found
    return df.writer(length, st.conf.fallocate_reserve_bytes, md5=md5)


def finish_put(
    writer: ObjectWriter, tail: bytes | bytearray, expected_etag: str, md: ObjectMetadata
) -> bool:
    """Write the last bytes, check the ETag and commit, in one pool step (blocking).

    False (nothing committed) if the body's MD5 is not `expected_etag`.
    """
    if tail:
        writer.write(tail)
    if expected_etag and expected_etag != writer.etag():
        return False
    writer.commit(md)
    return True


async def acknowledge(
    headers: Mapping[str, str],
    st: ServerState,
    path: ObjectPath,
    hash_hex: str,
    ts: Timestamp,
    ctype: str,
    etag: str,
    size: int,
    targets: tuple[ContainerTarget, ...],
) -> web.Response:
    """After the commit: expiry queue, container updates (or async pendings), then 201."""
    update = {"X-Timestamp": ts.internal, "X-Size": str(size), "X-Content-Type": ctype}
    update["X-Etag"] = etag
    await queue_expiry(headers, st, path, hash_hex, ts)
    await update_containers(st, path, hash_hex, "PUT", ts, update, targets)
    return status(201, headers={"ETag": etag})


async def update_containers(
    st: ServerState,
    path: ObjectPath,
    hash_hex: str,
    op: str,
    ts: Timestamp,
    headers: dict[str, str],
    targets: tuple[ContainerTarget, ...],
) -> None:
    if not targets:
        return
    headers = {**headers, "X-Trans-Id": request_id.get(), "User-Agent": "cairn-object-server"}
    if st.batcher is not None:
        failed = await st.batcher.send_updates(
            op, targets, path.account, path.container, path.obj, headers
        )
    else:
        failed = await send_updates(
            st.client(),
            op,
            targets,
            path.account,
            path.container,
            path.obj,
            headers,
            st.conf.container_update_timeout_s,
        )
    if not failed:
        return
    pending = AsyncPending(
        op, path.account, path.container, path.obj, ts, headers, failed, hash_hex
    )
    layout = st.devices.layout(path.device)
    await st.devices.run(path.device, write_pending, layout.root, pending)
    st.metrics.async_pendings.inc()
    log.warning(
        "container update failed; saved async pending",
        extra={"fields": {"object": path.name, "op": op, "failed": len(failed)}},
    )


async def queue_expiry(
    headers: Mapping[str, str], st: ServerState, path: ObjectPath, hash_hex: str, ts: Timestamp
) -> None:
    """Record an X-Delete-At in the device's expirer queue (validated by the handler)."""
    raw = headers.get("X-Delete-At", "").strip()
    if not raw.isdigit():
        return
    entry = ExpiryEntry(int(raw), path.account, path.container, path.obj, hash_hex, ts)
    layout = st.devices.layout(path.device)
    await st.devices.run(path.device, write_entry, layout.root, entry)
