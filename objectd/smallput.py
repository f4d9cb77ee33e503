"""Small object PUTs: a whole body of at most SMALL_BODY_BYTES_MAX bytes stored in one pool
step, shared by the aiohttp handler (objectd/writes.py) and the fast lane's PUT route
(common/leanserver, docs/lean-http-server.md), which takes plain inputs: headers, the raw
path and the body bytes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping

from aiohttp import web

from common.leanserver import FastRequest, FastRoute, RequestHead
from common.log import get_logger
from common.puttrailer import TRAILER_HEADER
from common.timestamps import Timestamp
from objectd.asyncpending import ContainerTarget
from objectd.conf import ServerState
from objectd.container_update import TargetParseError, parse_targets
from objectd.devices import DeviceBusy, DeviceUnavailable
from objectd.diskfile import DiskFile, DiskFull, RealDiskFile
from objectd.fileformat import ObjectMetadata
from objectd.groupsync import GroupSync, GroupSyncs, syncfs_reports_errors
from objectd.headers import persisted_from_request
from objectd.putbody import status
from objectd.request import (
    BadRequest,
    ObjectPath,
    parse_content_type,
    parse_delete_at,
    parse_object_path,
    parse_timestamp,
)
from objectd.smallwrite import (
    SMALL_WRITE_BYTES_MAX,
    SmallCommit,
    open_small_tmp,
    prepare_small_data,
    write_small_data,
)
from objectd.splitwrite import Commit, commit_split
from objectd.writecore import (
    acknowledge,
    finish_put,
    lookup_unless_refused,
    open_for_put,
)

log = get_logger("cairn.object-server")

# Group commit needs a syncfs(2) that reports write-back errors (Linux >= 5.8).
SYNCFS_OK = syncfs_reports_errors()

__all__ = ["SMALL_BODY_BYTES_MAX", "GaveUp", "fast_put_route", "put_fast", "store_small"]

# Bodies up to this size, sent without Expect: 100-continue, are read whole and stored in one
# pool step (the proxy sends PUTs of at most 64 KiB that way: proxy/objput.py put_buffered).
SMALL_BODY_BYTES_MAX = SMALL_WRITE_BYTES_MAX


class GaveUp:
    """Set (on the event loop) when a PUT stops waiting for its pool step; the step reads it
    before committing. A plain attribute: one writer, and the GIL orders the two threads'
    accesses (a threading.Event would add a lock and a condition per PUT)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


async def store_small(
    headers: Mapping[str, str],
    st: ServerState,
    path: ObjectPath,
    ts: Timestamp,
    ctype: str,
    body: bytes,
    targets: tuple[ContainerTarget, ...],
) -> web.Response:
    """Store a PUT's whole small body (at most SMALL_BODY_BYTES_MAX bytes, read already):
    device check, lookup, temp file, write, ETag check and commit (fsync of file and
    directories) run as ONE pool step; then the expiry queue, the container updates and the
    201. With group commit (`group_syncs`) the pool step writes the temp file unsynced and the
    rename goes to the file system's group committer, which makes the temp files durable,
    renames and syncs again for a whole batch at once (objectd/groupsync.py); the 201 waits
    for that. The aiohttp handler and the fast route both end here: the same checks, in the
    same order, on the same durable commit."""
    st.metrics.bytes_in.inc(len(body))
    df = st.devices.diskfile(path.device, path.partition, path.account, path.container, path.obj)
    md = ObjectMetadata(
        kind="data",
        name=path.name,
        timestamp=ts,
        content_type=ctype,
        headers=persisted_from_request(headers),
    )
    expected_etag = headers.get("ETag", "").strip().strip('"').lower()
    if_none_match = headers.get("If-None-Match") == "*"
    if isinstance(df, RealDiskFile) and group_syncs(st) is None and st.devices.healthy(path.device):
        split = await store_small_split(
            st, path.device, df, ts, if_none_match, body, expected_etag, md
        )
        if isinstance(split, web.Response):
            return split
        return await acknowledge(
            headers, st, path, df.hash_hex, ts, ctype, split, len(body), targets
        )
    gave_up = GaveUp()
    step = functools.partial(
        store_small_step,
        st,
        path.device,
        df,
        ts,
        if_none_match,
        body,
        expected_etag,
        md,
        gave_up,
        group_syncs(st),
    )
    try:
        stored = await st.devices.run(path.device, step)
    except (DeviceUnavailable, DiskFull) as e:
        return status(507, str(e))
    except BaseException:
        # Timed out (DeviceBusy -> 503) or cancelled: a step still running in the pool
        # must not commit an object whose PUT was not acknowledged (as with two steps,
        # where the commit step is never started once the write step has timed out).
        gave_up.value = True
        raise
    if isinstance(stored, web.Response):
        return stored
    etag, size, pending = stored
    if pending is not None:
        refused = await _group_commit(st, path.device, df, pending, gave_up)
        if refused is not None:
            return refused
    return await acknowledge(headers, st, path, df.hash_hex, ts, ctype, etag, size, targets)


def group_syncs(st: ServerState) -> GroupSyncs | None:
    """The server's group committers when small PUTs use them (`[[nodes]] group_sync` and a
    kernel whose syncfs reports write-back errors), else None (per-file fsyncs)."""
    if not (st.conf.group_sync and SYNCFS_OK):
        return None
    if st.syncs is None:
        st.syncs = GroupSyncs(on_call=st.metrics.group_syncs.inc)
    return st.syncs


async def _group_commit(
    st: ServerState, device: str, df: DiskFile, pending: _Pending, gave_up: GaveUp
) -> web.Response | None:
    """Hand the rename to the file system's group committer and wait until it is durable
    (objectd/groupsync.py); then remove obsolete files if the lookup found any. None when
    committed, else the refusal: 503 when a sync failed or took longer than a disk step."""
    st.metrics.group_sync_waits.inc()
    try:
        await asyncio.wait_for(pending.sync.commit(pending.job), st.conf.disk_timeout_s)
    except TimeoutError:
        gave_up.value = True  # not renamed yet: it never will be
        return status(503, f"device {device}: sync took over {st.conf.disk_timeout_s}s")
    except BaseException as e:
        gave_up.value = True
        if not isinstance(e, OSError):
            raise
        log.error("group commit failed", extra={"fields": {"device": device, "error": str(e)}})
        return status(503, f"device {device}: commit failed")
    if pending.cleanup and isinstance(df, RealDiskFile):
        await st.devices.run(device, df._cleanup)
    return None


class _Pending:
    """A small PUT's temp file, written, and the rename still to be group-committed."""

    __slots__ = ("cleanup", "job", "sync")

    def __init__(self, sync: GroupSync, job: SmallCommit, cleanup: bool) -> None:
        self.sync = sync
        self.job = job
        self.cleanup = cleanup


async def store_small_split(
    st: ServerState,
    device: str,
    df: RealDiskFile,
    ts: Timestamp,
    if_none_match: bool,
    body: bytes,
    expected_etag: str,
    md: ObjectMetadata,
) -> str | web.Response:
    """`store_small_step` for a real disk file with its commit split between the event loop
    and the pool (objectd/splitwrite.py): the same checks in the same order and the same
    durable commit. The ETag once committed, or the refusal (409, 412, 422)."""
    found = lookup_unless_refused(st, device, df, ts, if_none_match)
    if isinstance(found, web.Response):
        return found
    reserve = st.conf.fallocate_reserve_bytes
    made = open_small_tmp(df, body, md, reserve, expected_etag)
    if made is None:
        return status(422, "ETag does not match the body's MD5")
    etag, md, tmp, fd = made
    final_name = f"{md.timestamp.internal}.data"
    cleanup = found
    c = Commit(tmp, fd)
    return await commit_split(
        st.devices,
        device,
        df,
        c,
        final_name,
        len(body),
        lambda: etag,
        cleanup=cleanup,
        prepare_on_loop=True,
    )


def store_small_step(
    st: ServerState,
    device: str,
    df: DiskFile,
    ts: Timestamp,
    if_none_match: bool,
    body: bytes,
    expected_etag: str,
    md: ObjectMetadata,
    gave_up: GaveUp,
    syncs: GroupSyncs | None = None,
) -> tuple[str, int, _Pending | None] | web.Response:
    """`open_for_put` and `_finish` back to back (blocking): (etag, size, pending) once
    committed, or the refusal (409, 412, 422). The temp file is removed on any failure, and
    nothing is committed once the request has given up waiting (`gave_up`). A real disk
    file takes the short path of objectd/smallwrite.py (the same checks and the same durable
    commit); with `syncs` its file is renamed into place unsynced and `pending` names the
    barrier the caller must pass before acknowledging (objectd/groupsync.py)."""
    if isinstance(df, RealDiskFile):
        found = lookup_unless_refused(st, device, df, ts, if_none_match)
        if isinstance(found, web.Response):
            return found
        cleanup = found
        reserve = st.conf.fallocate_reserve_bytes
        if syncs is not None:
            made = prepare_small_data(df, body, md, reserve, expected_etag, lambda: gave_up.value)
            if made is None:
                return status(422, "ETag does not match the body's MD5")
            etag, job = made
            if gave_up.value:  # the request stopped waiting: nobody would commit it
                job.abort()
                return status(503, "gave up")
            return etag, len(body), _Pending(syncs.for_path(df.layout.root), job, cleanup)
        durable = write_small_data(
            df, body, md, reserve, expected_etag, lambda: gave_up.value, cleanup=cleanup
        )
        if durable is None:
            return status(422, "ETag does not match the body's MD5")
        return durable, len(body), None
    opened = open_for_put(st, device, df, ts, if_none_match, len(body))
    if isinstance(opened, web.Response):
        return opened
    committed = False
    try:
        if body:
            opened.write(body)
        if not gave_up.value:
            committed = finish_put(opened, b"", expected_etag, md)
    finally:
        if not committed:
            opened.abort()
    if not committed:
        return status(422, "ETag does not match the body's MD5")
    return opened.etag(), opened.bytes_written, None


async def put_fast(st: ServerState, req: FastRequest) -> web.Response:
    """`PUT /device/partition/account/container/object` on the fast lane: the checks of the
    aiohttp handler (objectd/writes.py handle_put, `guarded`) in the same order, then
    `store_small`. The route (`fast_put_route`) admits only a Content-Length body of at most
    SMALL_BODY_BYTES_MAX bytes, without Expect and without an ETag trailer."""
    headers = req.headers
    try:
        path = parse_object_path(req.path)
        ts = parse_timestamp(headers)
        assert ts is not None
        limit = st.conf.object_bytes_max
        if len(req.body) > limit:
            return status(413, f"Content-Length {len(req.body)} is more than {limit}")
        ctype = parse_content_type(headers)
        parse_delete_at(headers, st.clock.time())
        targets = parse_targets(headers)
    except (BadRequest, TargetParseError) as e:
        return status(400, str(e))
    try:
        # Only a PUT with a row to come counts for the batcher's linger (blockd's: none).
        with (
            st.batcher.writing() if st.batcher is not None and targets else contextlib.nullcontext()
        ):
            return await store_small(headers, st, path, ts, ctype, req.body, targets)
    except (DeviceUnavailable, DiskFull) as e:
        return status(507, str(e))
    except DeviceBusy as e:
        return status(503, str(e))


def _small_put_head(head: RequestHead) -> bool:
    headers = head.headers
    return (
        "Content-Length" in headers
        and TRAILER_HEADER not in headers
        and head.path.count("/") >= 5
        and not head.path.startswith("/_")
    )


def fast_put_route(st: ServerState) -> FastRoute:
    """The object server's fast route for small whole-body PUTs."""

    async def handler(req: FastRequest) -> web.Response:
        return await put_fast(st, req)

    return FastRoute("PUT", _small_put_head, handler, SMALL_BODY_BYTES_MAX, st.conf.node_timeout_s)
