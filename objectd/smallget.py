"""Object GETs and HEADs on the fast lane (common/leanserver, docs/lean-http-server.md).

The lane's read routes take object HEADs and the GETs that say how long a body they take
whole (`BODY_MAX_HEADER`: the proxy's reads, proxy/backend.py `read_object`), with no Range
or a single byte range. Every answer is planned by the same code as the aiohttp handler's
(objectd/reads.py `check_and_open`, `plan_answer`, `withheld`, `loaded_response`), so the
two lanes answer alike: 404 (with X-Backend-Timestamp for a tombstone or an expired object),
304/412, 416, 200/206 with the object's headers, or 204 with WITHHELD_HEADER for a body
longer than the client takes. Multi-range GETs, GETs without BODY_MAX_HEADER and requests
with a body go to aiohttp (the lane's hand-over).
"""

from __future__ import annotations

from aiohttp import web

from common.leanserver import FastRequest, FastRoute, RequestHead
from common.log import get_logger
from objectd.conf import ServerState
from objectd.devices import DeviceBusy, DeviceUnavailable
from objectd.diskfile import ChecksumMismatch, Deleted, Missing, ObjectInfo, ObjectReader
from objectd.putbody import status
from objectd.ranges import ByteRange
from objectd.reads import (
    SMALL_READ_BYTES_MAX,
    WHOLE_READ_BYTES_MAX,
    Corrupt,
    Loaded,
    body_bytes_max,
    check_and_open,
    loaded_response,
    plan_answer,
    withheld,
)
from objectd.request import BadRequest, ObjectPath, parse_object_path

__all__ = ["fast_read_routes", "read_fast"]

log = get_logger("cairn.object-server")


async def read_fast(st: ServerState, req: FastRequest) -> web.Response:
    """`GET` or `HEAD /device/partition/account/container/object` on the fast lane: the
    aiohttp handler's steps (objectd/reads.py `handle_get`, `guarded`) in the same order."""
    try:
        path = parse_object_path(req.path)
    except BadRequest as e:
        return status(400, str(e))
    try:
        return await _read(st, req, path)
    except DeviceUnavailable as e:
        return status(507, str(e))
    except DeviceBusy as e:
        return status(503, str(e))


async def _read(st: ServerState, req: FastRequest, path: ObjectPath) -> web.Response:
    df = st.devices.diskfile(path.device, path.partition, path.account, path.container, path.obj)
    opened = await st.devices.run(
        path.device,
        check_and_open,
        st,
        path.device,
        df,
        req.method == "GET",
        SMALL_READ_BYTES_MAX if "Range" in req.headers else WHOLE_READ_BYTES_MAX,
    )
    if isinstance(opened, Deleted):
        return status(404, headers={"X-Backend-Timestamp": opened.timestamp.internal})
    if isinstance(opened, Missing):
        return status(404)
    if isinstance(opened, Corrupt):
        log.error("checksum mismatch; quarantined", extra={"fields": {"error": opened.error}})
        return status(404)
    if isinstance(opened, Loaded):
        return await _answer(st, req, path, opened)
    try:
        return await _answer(st, req, path, opened)
    finally:
        await st.devices.run(path.device, opened.close)


async def _answer(
    st: ServerState, req: FastRequest, path: ObjectPath, reader: ObjectReader | Loaded
) -> web.Response:
    info = reader.info
    planned = plan_answer(req.method, req.headers, st, info)
    if isinstance(planned, web.Response):
        return planned
    headers, resolved = planned
    # The route takes no Range with more than one spec ("," in the header).
    assert resolved is None or len(resolved) == 1, "a multi-range request on the fast lane"
    byte_range = resolved[0] if resolved else None
    held = withheld(req.method, req.headers, info, byte_range)
    if held is not None:
        return held
    if req.method == "HEAD":
        return _head_answer(info, headers, byte_range)
    if isinstance(reader, Loaded):
        return loaded_response(st, reader, headers, byte_range)
    length = info.data.content_length
    r = byte_range or (ByteRange(0, length - 1) if length else None)
    body = b""
    if r is not None:
        try:
            body = await st.devices.run(path.device, reader.read, r.first, r.length)
        except ChecksumMismatch as e:  # nothing sent yet: the object is quarantined
            log.error("checksum mismatch; quarantined", extra={"fields": {"error": str(e)}})
            return status(404)
    if byte_range:
        headers["Content-Range"] = byte_range.content_range(length)
    st.metrics.bytes_out.inc(len(body))
    return web.Response(status=206 if byte_range else 200, headers=headers, body=body)


def _head_answer(
    info: ObjectInfo, headers: dict[str, str], byte_range: ByteRange | None
) -> web.Response:
    """A HEAD's answer: a GET's status and headers, its Content-Length, no body (the lane's
    serializer sends a HEAD answer's Content-Length as given)."""
    length = info.data.content_length
    if byte_range:
        headers["Content-Range"] = byte_range.content_range(length)
    headers["Content-Length"] = str(byte_range.length if byte_range else length)
    return web.Response(status=206 if byte_range else 200, headers=headers)


def _read_head(head: RequestHead) -> bool:
    path = head.path
    if head.content_length or path.count("/") < 5 or path.startswith("/_"):
        return False
    headers = head.headers
    rng = headers.get("Range")
    if rng is not None and "," in rng:
        return False
    # A GET only with a well-formed limit: without one the whole body would be read into
    # memory here (aiohttp streams it instead).
    return head.method == "HEAD" or body_bytes_max(headers) is not None


def fast_read_routes(st: ServerState) -> list[FastRoute]:
    """The object server's fast routes for GET and HEAD (see the module's docstring)."""

    async def handler(req: FastRequest) -> web.Response:
        return await read_fast(st, req)

    timeout_s = st.conf.node_timeout_s
    return [
        FastRoute("GET", _read_head, handler, 0, timeout_s),
        FastRoute("HEAD", _read_head, handler, 0, timeout_s),
    ]
