"""PUT, POST and DELETE of objects, plus the container updates and async pendings they cause."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from common.log import get_logger, request_id
from common.timestamps import Timestamp
from objectd.asyncpending import AsyncPending, ContainerTarget, write_pending
from objectd.conf import STATE, ServerState
from objectd.container_update import TargetParseError, parse_targets, send_updates
from objectd.devices import DeviceBusy, DeviceUnavailable
from objectd.diskfile import (
    Deleted,
    DiskFile,
    DiskFull,
    Lookup,
    Missing,
    ObjectInfo,
    ObjectWriter,
    RealDiskFile,
)
from objectd.expirer import ExpiryEntry, write_entry
from objectd.fileformat import ObjectMetadata
from objectd.headers import persisted_from_request, postable_from_request
from objectd.putbody import (
    WriteInFlight,
    finish_trailed,
    read_body,
    status,
    trailed_body_length,
)
from objectd.request import (
    BadRequest,
    ObjectPath,
    parse_content_type,
    parse_delete_at,
    parse_object_path,
    parse_timestamp,
)
from objectd.smallwrite import SMALL_WRITE_BYTES_MAX, write_small_data

__all__ = [
    "SMALL_BODY_BYTES_MAX",
    "WriteInFlight",
    "expect_handler",
    "guarded",
    "handle_delete",
    "handle_post",
    "handle_put",
    "status",
]

log = get_logger("cairn.object-server")

# Bodies up to this size, sent without Expect: 100-continue, are read whole and stored in one
# pool step (the proxy sends PUTs of at most 64 KiB that way: proxy/objput.py put_buffered).
SMALL_BODY_BYTES_MAX = SMALL_WRITE_BYTES_MAX


class _GaveUp:
    """Set (on the event loop) when a PUT stops waiting for its pool step; the step reads it
    before committing. A plain attribute: one writer, and the GIL orders the two threads'
    accesses (a threading.Event would add a lock and a condition per PUT)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False


def _conflict(existing: Timestamp) -> web.Response:
    return status(
        409, "timestamp older than what is stored", {"X-Backend-Timestamp": existing.internal}
    )


async def expect_handler(request: web.Request) -> None:
    """Accept Expect: 100-continue without answering; the handler sends 100 after its checks."""
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {expect}\n")


def _send_continue(request: web.Request) -> None:
    if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
        transport = request.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def _existing_timestamp(
    found: ObjectInfo | Deleted | Missing, include_meta: bool
) -> Timestamp | None:
    if isinstance(found, Deleted):
        return found.timestamp
    if isinstance(found, ObjectInfo):
        return found.timestamp if include_meta else found.data.timestamp
    return None


class LengthProblem(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


def _content_length(request: web.Request, limit: int) -> int | None:
    """The declared body length, or None for chunked; raises for what we cannot accept."""
    te = request.headers.get("Transfer-Encoding", "").lower()
    raw = request.headers.get("Content-Length")
    if "chunked" in te:
        return None
    if raw is None:
        raise LengthProblem(411, "Content-Length or chunked transfer encoding required")
    if not raw.isdigit():
        raise BadRequest("invalid Content-Length")
    length = int(raw)
    if length > limit:
        raise LengthProblem(413, f"Content-Length {length} is more than {limit}")
    return length


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Handler) -> Handler:
    """Turn device trouble into its status code, and never drain a refused request body."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except DeviceUnavailable as e:
            resp = status(507, str(e))
        except DiskFull as e:
            resp = status(507, str(e))
        except DeviceBusy as e:
            resp = status(503, str(e))
        if not resp.prepared and resp.status >= 300 and not request.content.is_eof():
            await _close_after(request, resp)
        return resp

    return wrapper


async def _close_after(request: web.Request, resp: web.StreamResponse) -> None:
    # The body was refused or cut short: send the answer, then close the connection rather
    # than let aiohttp wait (up to its lingering time) for the rest of the body.
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()


async def handle_put(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    try:
        path = parse_object_path(request.rel_url.raw_path)
        ts = parse_timestamp(request.headers)
        assert ts is not None
        length = _content_length(request, st.conf.object_bytes_max)
        trailed = trailed_body_length(request.headers, length)
        ctype = parse_content_type(request.headers)
        parse_delete_at(request.headers, st.clock.time())
        targets = parse_targets(request.headers)
    except (BadRequest, TargetParseError) as e:
        return status(400, str(e))
    except LengthProblem as e:
        return status(e.code, str(e))
    # (a trailed PUT always streams: the small path would store the trailer as body bytes)
    small = trailed is None and not _expects_continue(request)
    if small and length is not None and length <= SMALL_BODY_BYTES_MAX:
        return await _put_small(request, st, path, ts, ctype, length, targets)
    try:
        df = st.devices.diskfile(
            path.device, path.partition, path.account, path.container, path.obj
        )
        opened = await st.devices.run(
            path.device,
            _open_for_put,
            st,
            path.device,
            df,
            ts,
            request.headers.get("If-None-Match") == "*",
            length if trailed is None else trailed,
            trailed is None,
        )
    except DeviceUnavailable as e:
        return status(507, str(e))
    except DiskFull as e:
        return status(507, str(e))
    if isinstance(opened, web.Response):
        return opened
    writer = opened
    _send_continue(request)
    return await _receive(request, st, path, df, writer, ts, ctype, length, targets, trailed)


def _open_for_put(
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
    st.devices.check(device)
    found = df.lookup()
    refusal = _refusal(found, ts, if_none_match)
    if refusal is not None:
        return refusal
    return df.writer(length, st.conf.fallocate_reserve_bytes, md5=md5)


def _refusal(found: Lookup, ts: Timestamp, if_none_match: bool) -> web.Response | None:
    """409 when what is stored is as new as `ts`, 412 for If-None-Match: * on an object."""
    existing = _existing_timestamp(found, include_meta=False)
    if existing is not None and existing >= ts:
        return _conflict(existing)
    if if_none_match and isinstance(found, ObjectInfo):
        return status(412, "object exists", {"X-Backend-Timestamp": found.timestamp.internal})
    return None


def _finish(
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


async def _receive(
    request: web.Request,
    st: ServerState,
    path: ObjectPath,
    df: DiskFile,
    writer: ObjectWriter,
    ts: Timestamp,
    ctype: str,
    length: int | None,
    targets: tuple[ContainerTarget, ...],
    trailed: int | None = None,
) -> web.StreamResponse:
    """Receive the body and commit; `trailed` is the body length of a PUT whose MD5 comes
    in an ETag trailer after the body (objectd/putbody.py), None for a plain PUT."""
    committed = False
    try:
        got = await read_body(request, st, path.device, writer, length, trailed)
        if isinstance(got, web.StreamResponse):
            return got
        tail, trailer = got
        expected = request.headers.get("ETag", "").strip().strip('"').lower()
        md = ObjectMetadata(
            kind="data",
            name=path.name,
            timestamp=ts,
            content_type=ctype,
            headers=persisted_from_request(request.headers),
        )
        if trailed is not None:
            outcome = await st.devices.run(
                path.device, finish_trailed, writer, tail, trailer, trailed, expected, md
            )
            if isinstance(outcome, web.Response):
                return outcome
            committed, etag = True, outcome
        else:
            committed = await st.devices.run(path.device, _finish, writer, tail, expected, md)
            if not committed:
                return status(422, "ETag does not match the body's MD5")
            etag = writer.etag()
    except DiskFull as e:
        return status(507, str(e))
    finally:
        if not committed:
            # Not awaited on purpose: this also runs when the handler is being cancelled.
            with contextlib.suppress(RuntimeError):
                _ = asyncio.get_running_loop().run_in_executor(None, writer.abort)
    return await _acknowledge(
        request, st, path, df.hash_hex, ts, ctype, etag, writer.bytes_written, targets
    )


async def _acknowledge(
    request: web.Request,
    st: ServerState,
    path: ObjectPath,
    hash_hex: str,
    ts: Timestamp,
    ctype: str,
    etag: str,
    size: int,
    targets: tuple[ContainerTarget, ...],
) -> web.StreamResponse:
    """After the commit: expiry queue, container updates (or async pendings), then 201."""
    update = {"X-Timestamp": ts.internal, "X-Size": str(size), "X-Content-Type": ctype}
    update["X-Etag"] = etag
    await _queue_expiry(request, st, path, hash_hex, ts)
    await _update_containers(st, path, hash_hex, "PUT", ts, update, targets)
    return status(201, headers={"ETag": etag})


def _expects_continue(request: web.Request) -> bool:
    return request.headers.get("Expect", "").lower() == "100-continue"


async def _put_small(
    request: web.Request,
    st: ServerState,
    path: ObjectPath,
    ts: Timestamp,
    ctype: str,
    length: int,
    targets: tuple[ContainerTarget, ...],
) -> web.StreamResponse:
    """A PUT of at most SMALL_BODY_BYTES_MAX declared bytes sent without Expect: the whole
    body is read first (it is on its way anyway), then device check, lookup, temp file,
    write, ETag check and commit (fsync of file and directories) run as ONE pool step
    instead of two. The same checks, in the same order, on the same durable commit."""
    try:
        async with asyncio.timeout(st.conf.node_timeout_s):
            # (aiohttp's empty body reader refuses even readexactly(0))
            body = await request.content.readexactly(length) if length else b""
    except TimeoutError:
        return status(408, "timed out reading the request body")
    except asyncio.IncompleteReadError:
        return status(499, "client disconnected before sending the whole body")
    except (HttpProcessingError, ConnectionError):
        return status(499, "client disconnected")
    st.metrics.bytes_in.inc(length)
    df = st.devices.diskfile(path.device, path.partition, path.account, path.container, path.obj)
    md = ObjectMetadata(
        kind="data",
        name=path.name,
        timestamp=ts,
        content_type=ctype,
        headers=persisted_from_request(request.headers),
    )
    gave_up = _GaveUp()
    step = functools.partial(
        _store_small,
        st,
        path.device,
        df,
        ts,
        request.headers.get("If-None-Match") == "*",
        body,
        request.headers.get("ETag", "").strip().strip('"').lower(),
        md,
        gave_up,
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
    etag, size = stored
    return await _acknowledge(request, st, path, df.hash_hex, ts, ctype, etag, size, targets)


def _store_small(
    st: ServerState,
    device: str,
    df: DiskFile,
    ts: Timestamp,
    if_none_match: bool,
    body: bytes,
    expected_etag: str,
    md: ObjectMetadata,
    gave_up: _GaveUp,
) -> tuple[str, int] | web.Response:
    """`_open_for_put` and `_finish` back to back (blocking): (etag, size) once committed,
    or the refusal (409, 412, 422). The temp file is removed on any failure, and nothing is
    committed once the request has given up waiting (`gave_up`). A real disk file takes the
    short path of objectd/smallwrite.py (the same checks and the same durable commit)."""
    if isinstance(df, RealDiskFile):
        st.devices.check(device)
        found = df.lookup()
        refusal = _refusal(found, ts, if_none_match)
        if refusal is not None:
            return refusal
        etag = write_small_data(
            df,
            body,
            md,
            st.conf.fallocate_reserve_bytes,
            expected_etag,
            lambda: gave_up.value,
            cleanup=not isinstance(found, Missing),
        )
        if etag is None:
            return status(422, "ETag does not match the body's MD5")
        return etag, len(body)
    opened = _open_for_put(st, device, df, ts, if_none_match, len(body))
    if isinstance(opened, web.Response):
        return opened
    committed = False
    try:
        if body:
            opened.write(body)
        if not gave_up.value:
            committed = _finish(opened, b"", expected_etag, md)
    finally:
        if not committed:
            opened.abort()
    if not committed:
        return status(422, "ETag does not match the body's MD5")
    return opened.etag(), opened.bytes_written


async def _update_containers(
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


async def _queue_expiry(
    request: web.Request, st: ServerState, path: ObjectPath, hash_hex: str, ts: Timestamp
) -> None:
    """Record an X-Delete-At in the device's expirer queue (validated by the handler)."""
    raw = request.headers.get("X-Delete-At", "").strip()
    if not raw.isdigit():
        return
    entry = ExpiryEntry(int(raw), path.account, path.container, path.obj, hash_hex, ts)
    layout = st.devices.layout(path.device)
    await st.devices.run(path.device, write_entry, layout.root, entry)


async def _prepare(
    request: web.Request,
) -> tuple[ServerState, ObjectPath, Timestamp, DiskFile] | web.Response:
    st = request.app[STATE]
    try:
        path = parse_object_path(request.rel_url.raw_path)
        ts = parse_timestamp(request.headers)
        assert ts is not None
    except BadRequest as e:
        return status(400, str(e))
    try:
        await st.devices.run(path.device, st.devices.check, path.device)
    except DeviceUnavailable as e:
        return status(507, str(e))
    df = st.devices.diskfile(path.device, path.partition, path.account, path.container, path.obj)
    return st, path, ts, df


def _expired(st: ServerState, info: ObjectInfo) -> bool:
    at = info.delete_at
    return at is not None and at <= st.clock.time()


async def handle_post(request: web.Request) -> web.StreamResponse:
    prepared = await _prepare(request)
    if isinstance(prepared, web.Response):
        return prepared
    st, path, ts, df = prepared
    try:
        parse_delete_at(request.headers, st.clock.time())
    except BadRequest as e:
        return status(400, str(e))
    found = await st.devices.run(path.device, df.lookup)
    if not isinstance(found, ObjectInfo) or _expired(st, found):
        headers = (
            {"X-Backend-Timestamp": found.timestamp.internal} if isinstance(found, Deleted) else {}
        )
        return status(404, headers=headers)
    if found.timestamp >= ts:
        return _conflict(found.timestamp)
    await st.devices.run(path.device, df.put_meta, ts, postable_from_request(request.headers))
    await _queue_expiry(request, st, path, df.hash_hex, ts)
    return status(202)


async def handle_delete(request: web.Request) -> web.StreamResponse:
    prepared = await _prepare(request)
    if isinstance(prepared, web.Response):
        return prepared
    st, path, ts, df = prepared
    try:
        targets = parse_targets(request.headers)
    except TargetParseError as e:
        return status(400, str(e))
    found = await st.devices.run(path.device, df.lookup)
    existing = _existing_timestamp(found, include_meta=True)
    if existing is not None and existing >= ts:
        return _conflict(existing)
    if_delete_at = request.headers.get("X-If-Delete-At")
    live = isinstance(found, ObjectInfo)
    if if_delete_at is not None:
        if not isinstance(found, ObjectInfo):
            return status(404)
        if str(found.delete_at) != if_delete_at.strip():
            return status(412, "X-If-Delete-At does not match")
    elif isinstance(found, ObjectInfo) and _expired(st, found):
        live = False
    await st.devices.run(path.device, df.put_tombstone, ts)
    await _update_containers(
        st, path, df.hash_hex, "DELETE", ts, {"X-Timestamp": ts.internal}, targets
    )
    return status(204 if live else 404, headers={"X-Backend-Timestamp": ts.internal})
