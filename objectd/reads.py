"""GET and HEAD: conditional checks, ranges, and sending only verified bytes.

Each step verifies the checksums of the blocks it is about to send (in the device's thread
pool), then sends exactly those bytes, by sendfile when allowed. A mismatch quarantines the
object and aborts the connection, so the client sees a short body, never a wrong one.

The answer before any body byte (404, 304/412, 416, the headers, the ranges, a withheld
body) is planned by `plan_answer` and `withheld`, which the fast lane's read routes
(objectd/smallget.py) use too, so both sides answer alike.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import secrets
from collections.abc import Mapping

from aiohttp import web

from common.log import get_logger
from common.wholebody import BODY_MAX_HEADER, WHOLE_BODY_BYTES_MAX, WITHHELD_HEADER
from objectd.conditional import evaluate
from objectd.conf import STATE, ServerState
from objectd.devices import DeviceUnavailable
from objectd.diskfile import (
    ChecksumMismatch,
    Deleted,
    DiskFile,
    Missing,
    ObjectInfo,
    ObjectReader,
)
from objectd.ranges import (
    ByteRange,
    MultipartPlan,
    Unsatisfiable,
    parse_range_header,
    resolve_ranges,
)
from objectd.request import BadRequest, ObjectPath, parse_object_path
from objectd.writes import status

__all__ = [
    "BODY_MAX_HEADER",
    "SMALL_READ_BYTES_MAX",
    "WHOLE_BODY_BYTES_MAX",
    "WHOLE_READ_BYTES_MAX",
    "WITHHELD_HEADER",
    "Corrupt",
    "Loaded",
    "body_bytes_max",
    "check_and_open",
    "handle_get",
    "loaded_response",
    "object_headers",
    "plan_answer",
    "withheld",
]

log = get_logger("cairn.object-server")

# An object body up to this size (and up to read_chunk_bytes) is read, verified and its file
# closed in the same pool step that opens it: one round trip per GET or HEAD instead of
# three (open, read, close). A GET with a Range header takes that path only for bodies up to
# SMALL_READ_BYTES_MAX (reading a whole 1 MiB body for a 4 KiB range costs more than the
# round trips it saves); one without reads bodies up to WHOLE_READ_BYTES_MAX that way
# (blockd's 512 KiB chunks, 1 MiB objects).
SMALL_READ_BYTES_MAX = 64 * 1024
# A GET carrying BODY_MAX_HEADER (the proxy's and blockd's whole-body reads) takes a body of
# at most that many bytes (capped at WHOLE_BODY_BYTES_MAX) in the answer; a longer one is
# withheld (common/wholebody.py).
WHOLE_READ_BYTES_MAX = WHOLE_BODY_BYTES_MAX


class Loaded:
    """A small object already read whole and verified (its file is closed)."""

    __slots__ = ("body", "info")

    def __init__(self, info: ObjectInfo, body: bytes) -> None:
        self.info = info
        self.body = body  # b"" for a HEAD


class Corrupt:
    """A small object whose body failed its checksum while being read (now quarantined)."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def object_headers(info: ObjectInfo) -> dict[str, str]:
    h = dict(info.headers)
    h.update(
        {
            "Content-Type": info.data.content_type,
            "ETag": info.data.etag,
            "Last-Modified": info.timestamp.http_date,
            "X-Timestamp": info.timestamp.normal,
            "X-Backend-Timestamp": info.timestamp.internal,
            "X-Backend-Data-Timestamp": info.data.timestamp.internal,
            "Accept-Ranges": "bytes",
        }
    )
    return h


async def handle_get(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    try:
        path = parse_object_path(request.rel_url.raw_path)
    except BadRequest as e:
        return status(400, str(e))
    try:
        df = st.devices.diskfile(
            path.device, path.partition, path.account, path.container, path.obj
        )
        opened = await st.devices.run(
            path.device,
            check_and_open,
            st,
            path.device,
            df,
            request.method == "GET",
            SMALL_READ_BYTES_MAX if "Range" in request.headers else WHOLE_READ_BYTES_MAX,
        )
    except DeviceUnavailable as e:
        return status(507, str(e))
    if isinstance(opened, Deleted):
        return status(404, headers={"X-Backend-Timestamp": opened.timestamp.internal})
    if isinstance(opened, Missing):
        return status(404)
    if isinstance(opened, Corrupt):
        # Found before a byte was sent: the object is quarantined, so it is not here.
        log.error("checksum mismatch; quarantined", extra={"fields": {"error": opened.error}})
        return status(404)
    if isinstance(opened, Loaded):
        return await _respond(request, st, path, opened)
    try:
        return await _respond(request, st, path, opened)
    finally:
        await st.devices.run(path.device, opened.close)


def check_and_open(
    st: ServerState, device: str, df: DiskFile, want_body: bool, whole_bytes_max: int
) -> ObjectReader | Loaded | Corrupt | Deleted | Missing:
    """Device check and open in one pool step (blocking); an object of at most
    `whole_bytes_max` is also read whole (for a GET), verified and closed in the same step.
    Such a whole read of over 256 KiB leaves the page cache (objectd/pagecache.py drop_read:
    the object was dropped when written too); streamed ranges of larger objects keep theirs."""
    st.devices.check(device)
    opened = df.open()
    if isinstance(opened, (Deleted, Missing)):
        return opened
    length = opened.info.data.content_length
    if length > min(whole_bytes_max, st.conf.read_chunk_bytes):
        return opened
    try:
        body = opened.read(0, length, drop=True) if want_body and length else b""
    except ChecksumMismatch as e:  # the reader quarantined the object
        return Corrupt(str(e))
    finally:
        opened.close()
    return Loaded(opened.info, body)


async def _respond(
    request: web.Request, st: ServerState, path: ObjectPath, reader: ObjectReader | Loaded
) -> web.StreamResponse:
    info = reader.info
    planned = plan_answer(request.method, request.headers, st, info)
    if isinstance(planned, web.Response):
        return planned
    headers, resolved = planned
    length = info.data.content_length
    if resolved and len(resolved) > 1:
        return await _send_multipart(request, st, path, reader, headers, resolved)
    byte_range = resolved[0] if resolved else None
    held = withheld(request.method, request.headers, info, byte_range)
    if held is not None:
        return held
    if isinstance(reader, Loaded) and request.method == "GET":
        return loaded_response(st, reader, headers, byte_range)
    resp = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    if byte_range:
        resp.headers["Content-Range"] = byte_range.content_range(length)
    resp.content_length = byte_range.length if byte_range else length
    await resp.prepare(request)
    if request.method == "GET" and length:
        await _send_range(request, st, path, reader, resp, byte_range or ByteRange(0, length - 1))
    await resp.write_eof()
    return resp


def plan_answer(
    method: str, req_headers: Mapping[str, str], st: ServerState, info: ObjectInfo
) -> web.Response | tuple[dict[str, str], list[ByteRange] | None]:
    """What a GET or HEAD of a live object gets, before any body byte: an answer without a
    body (404 expired, 304/412, 416), or the object's headers and the ranges to send (None:
    the whole object). Both lanes (aiohttp here, the fast lane in objectd/smallget.py) plan
    with this, so their answers agree."""
    replication = req_headers.get("X-Backend-Replication", "").lower() == "true"
    delete_at = info.delete_at
    if delete_at is not None and delete_at <= st.clock.time() and not replication:
        return status(404, headers={"X-Backend-Timestamp": info.timestamp.internal})
    headers = object_headers(info)
    last_modified_s = math.ceil(info.timestamp.seconds)
    cond = evaluate(method, req_headers, info.data.etag, last_modified_s)
    if cond is not None:
        keep = ("ETag", "Last-Modified", "X-Timestamp", "X-Backend-Timestamp")
        return web.Response(status=cond, headers={k: headers[k] for k in keep})
    length = info.data.content_length
    specs = parse_range_header(req_headers.get("Range", ""))
    resolved = resolve_ranges(specs, length) if specs is not None else None
    if isinstance(resolved, Unsatisfiable):
        headers = {"Content-Range": f"bytes */{length}", "X-Timestamp": headers["X-Timestamp"]}
        return status(416, "requested range not satisfiable", headers)
    return headers, resolved


def body_bytes_max(req_headers: Mapping[str, str]) -> int | None:
    """The longest body the client takes in one answer (BODY_MAX_HEADER, capped at
    WHOLE_BODY_BYTES_MAX), or None: no such limit (a malformed value is ignored)."""
    raw = req_headers.get(BODY_MAX_HEADER)
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > 18:
        return None
    return min(int(raw), WHOLE_BODY_BYTES_MAX)


def withheld(
    method: str,
    req_headers: Mapping[str, str],
    info: ObjectInfo,
    body_bytes: ByteRange | int | None,
) -> web.Response | None:
    """The answer to a GET whose body would be longer than the client's BODY_MAX_HEADER:
    204 with WITHHELD_HEADER (the body's length) and X-Backend-Timestamp, no body; the client
    asks again without the header to stream it. None: answer as usual."""
    if method != "GET":
        return None
    limit = body_bytes_max(req_headers)
    if limit is None:
        return None
    if body_bytes is None:
        n = info.data.content_length
    elif isinstance(body_bytes, ByteRange):
        n = body_bytes.length
    else:
        n = body_bytes
    if n <= limit:
        return None
    return web.Response(
        status=204,
        headers={WITHHELD_HEADER: str(n), "X-Backend-Timestamp": info.timestamp.internal},
    )


def loaded_response(
    st: ServerState, loaded: Loaded, headers: dict[str, str], byte_range: ByteRange | None
) -> web.Response:
    """The whole answer to a GET of a small object at once (status, headers and body)."""
    body = loaded.body
    if byte_range:
        headers["Content-Range"] = byte_range.content_range(len(body))
        body = body[byte_range.first : byte_range.last + 1]
    st.metrics.bytes_out.inc(len(body))
    return web.Response(status=206 if byte_range else 200, headers=headers, body=body)


async def _send_multipart(
    request: web.Request,
    st: ServerState,
    path: ObjectPath,
    reader: ObjectReader | Loaded,
    headers: dict[str, str],
    ranges: list[ByteRange],
) -> web.StreamResponse:
    plan = MultipartPlan(
        boundary=secrets.token_hex(16),
        content_type=reader.info.data.content_type,
        total=reader.info.data.content_length,
        ranges=tuple(ranges),
    )
    held = withheld(request.method, request.headers, reader.info, plan.content_length)
    if held is not None:
        return held
    resp = web.StreamResponse(status=206, headers=headers)
    resp.content_type = plan.response_content_type
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = plan.response_content_type
    resp.content_length = plan.content_length
    await resp.prepare(request)
    if request.method == "GET":
        for head, r, tail in plan.parts():
            await resp.write(head)
            await _send_range(request, st, path, reader, resp, r, allow_sendfile=False)
            await resp.write(tail)
    await resp.write_eof()
    return resp


# Event loop types whose loop.sendfile raised NotImplementedError (uvloop's has none).
_sendfile_missing: frozenset[type] = frozenset()


async def _send_range(
    request: web.Request,
    st: ServerState,
    path: ObjectPath,
    reader: ObjectReader | Loaded,
    resp: web.StreamResponse,
    r: ByteRange,
    allow_sendfile: bool = True,
) -> None:
    if isinstance(reader, Loaded):  # read and verified already
        await resp.write(reader.body[r.first : r.last + 1])
        st.metrics.bytes_out.inc(r.length)
        return
    transport = request.transport
    loop = asyncio.get_running_loop()
    use_sendfile = (
        allow_sendfile
        and st.conf.use_sendfile
        and transport is not None
        and type(loop) not in _sendfile_missing
    )
    try:
        pos = r.first
        if use_sendfile:
            pos = await _sendfile_range(request, st, path, reader, r)
        if pos <= r.last:
            await _write_range(st, path, reader, resp, pos, r.last + 1)
    except ChecksumMismatch as e:
        log.error("checksum mismatch; quarantined", extra={"fields": {"error": str(e)}})
        if transport is not None:
            transport.abort()
        raise ConnectionResetError("aborted: object failed its checksum") from None


async def _sendfile_range(
    request: web.Request, st: ServerState, path: ObjectPath, reader: ObjectReader, r: ByteRange
) -> int:
    """Verify and sendfile each step; returns where it stopped (the end, or the first byte
    not sent when this loop type turned out to have no sendfile)."""
    global _sendfile_missing
    transport = request.transport
    loop = asyncio.get_running_loop()
    step = st.conf.read_chunk_bytes
    pos, end = r.first, r.last + 1
    with io.FileIO(os.dup(reader.fileno()), "rb") as fobj:
        while pos < end:
            n = min(step, end - pos)
            await st.devices.run(path.device, reader.verify, pos, n)
            assert transport is not None
            try:
                await loop.sendfile(transport, fobj, pos, n)
            except NotImplementedError:  # uvloop has no loop.sendfile: nothing sent
                # Remembered per loop type, so later requests skip the extra verify.
                _sendfile_missing = _sendfile_missing | {type(loop)}
                return pos
            st.metrics.bytes_out.inc(n)
            pos += n
    return pos


async def _write_range(
    st: ServerState,
    path: ObjectPath,
    reader: ObjectReader,
    resp: web.StreamResponse,
    pos: int,
    end: int,
) -> None:
    """Read, verify and send [pos, end) a step at a time, reading the next step in the pool
    while the last one goes out (one read ahead; the reader is closed only after it)."""
    step = st.conf.read_chunk_bytes

    def read_at(p: int) -> asyncio.Future[bytes]:
        return asyncio.ensure_future(
            st.devices.run(path.device, reader.read, p, min(step, end - p))
        )

    ahead: asyncio.Future[bytes] | None = read_at(pos)
    try:
        while ahead is not None:
            data = await ahead
            ahead = None
            nxt = pos + len(data)
            if nxt < end:
                ahead = read_at(nxt)
            await resp.write(data)
            st.metrics.bytes_out.inc(len(data))
            pos = nxt
    finally:
        if ahead is not None:  # the send failed: let the read finish before the close
            await asyncio.wait([ahead])
            if not ahead.cancelled():
                ahead.exception()
