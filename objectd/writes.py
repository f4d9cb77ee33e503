"""PUT, POST and DELETE of objects, plus the container updates and async pendings they cause."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from common.timestamps import Timestamp
from objectd.asyncpending import ContainerTarget
from objectd.conf import STATE, ServerState
from objectd.container_update import TargetParseError, parse_targets
from objectd.devices import DeviceBusy, DeviceUnavailable
from objectd.diskfile import Deleted, DiskFile, DiskFull, ObjectInfo, ObjectWriter
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
from objectd.smallput import SMALL_BODY_BYTES_MAX, store_small
from objectd.writecore import (
    acknowledge,
    conflict,
    existing_timestamp,
    finish_put,
    open_for_put,
    queue_expiry,
    update_containers,
)

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
            open_for_put,
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
            committed = await st.devices.run(path.device, finish_put, writer, tail, expected, md)
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
    return await acknowledge(
        request.headers, st, path, df.hash_hex, ts, ctype, etag, writer.bytes_written, targets
    )


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
    body is read first (it is on its way anyway), then stored by objectd/smallput.py."""
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
    return await store_small(request.headers, st, path, ts, ctype, body, targets)


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
        return conflict(found.timestamp)
    await st.devices.run(path.device, df.put_meta, ts, postable_from_request(request.headers))
    await queue_expiry(request.headers, st, path, df.hash_hex, ts)
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
    existing = existing_timestamp(found, include_meta=True)
    if existing is not None and existing >= ts:
        return conflict(existing)
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
    await update_containers(
        st, path, df.hash_hex, "DELETE", ts, {"X-Timestamp": ts.internal}, targets
    )
    return status(204 if live else 404, headers={"X-Backend-Timestamp": ts.internal})
