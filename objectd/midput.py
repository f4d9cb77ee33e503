"""Medium object PUTs on the fast lane: a whole body of up to `MID_BODY_BYTES_MAX` bytes
(plus the ETag trailer, common/puttrailer.py) stored in one pool step.

blockd writes every chunk object and journal record (1 MiB by default) through
objectd/cluster_client.py: a Content-Length body followed by the ETag trailer, three
replicas each. On aiohttp such a PUT is streamed (objectd/putbody.py): the request machinery,
a pool step to open the temp file, one to write and commit, a ``posix_fallocate``, a joined
copy of the body. Here the lean server (common/leanserver, docs/lean-http-server.md) reads
the whole request first (kept as the pieces it arrived in, never joined: hashed piece by
piece and written by one writev) and the checks, the trailer's verdict, the write and the
durable commit run as ONE pool step (objectd/wholewrite.py), with the same answers in the same order
as the streamed path: 400 for bad headers or a garbled trailer, 409/412 from what is stored,
422 for a cancelled PUT or a body that does not match its checksums, 507 for a full or
missing device, 201 once the data file and its directory are fsynced.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import xxhash
from aiohttp import web

from common.leanserver import FastRequest, FastRoute, RequestHead
from common.puttrailer import TRAILER_BYTES, TRAILER_HEADER
from common.timestamps import Timestamp
from objectd.asyncpending import ContainerTarget
from objectd.conf import ServerState
from objectd.container_update import TargetParseError, parse_targets
from objectd.devices import DeviceBusy, DeviceUnavailable
from objectd.diskfile import DiskFile, DiskFull, RealDiskFile
from objectd.fileformat import EtagAlg, ObjectMetadata, encode_footer
from objectd.headers import persisted_from_request
from objectd.putbody import check_trailer, status, trailed_body_length
from objectd.request import (
    BadRequest,
    ObjectPath,
    parse_content_type,
    parse_delete_at,
    parse_object_path,
    parse_timestamp,
)
from objectd.smallput import SMALL_BODY_BYTES_MAX, GaveUp
from objectd.smallwrite import check_space, create_tmp
from objectd.splitwrite import Commit, commit_split
from objectd.wholewrite import MID_BODY_BYTES_MAX, whole_metadata, write_parts, write_whole_data
from objectd.writecore import acknowledge, lookup_unless_refused

__all__ = ["MID_BODY_BYTES_MAX", "mid_put_route", "put_mid", "store_whole_step"]

# A request body as the pieces it arrived in (common/leanserver: `FastRequest.parts`).
Parts = Sequence[memoryview]
# The route's Content-Length limit: the largest body and its trailer.
MID_REQUEST_BYTES_MAX = MID_BODY_BYTES_MAX + TRAILER_BYTES


def _accept(head: RequestHead) -> bool:
    """A trailed PUT of at most MID_BODY_BYTES_MAX body bytes, or a plain one of at most that
    and larger than the small route takes (objectd/smallput.py), on an object path."""
    headers = head.headers
    if "Content-Length" not in headers:
        return False
    if TRAILER_HEADER in headers:
        if head.content_length > MID_REQUEST_BYTES_MAX:
            return False
    elif not SMALL_BODY_BYTES_MAX < head.content_length <= MID_BODY_BYTES_MAX:
        return False
    return head.path.count("/") >= 5 and not head.path.startswith("/_")


def mid_put_route(st: ServerState) -> FastRoute:
    """The object server's fast route for medium whole-body PUTs (register it after
    `objectd.smallput.fast_put_route`)."""

    async def handler(req: FastRequest) -> web.Response:
        return await put_mid(st, req)

    return FastRoute(
        "PUT", _accept, handler, MID_REQUEST_BYTES_MAX, st.conf.node_timeout_s, body_parts=True
    )


async def put_mid(st: ServerState, req: FastRequest) -> web.Response:
    """`PUT /device/partition/account/container/object` on the fast lane: the checks of the
    aiohttp handler (objectd/writes.py handle_put, `guarded`) in the same order, then
    `store_whole`."""
    headers = req.headers
    parts = req.parts or (memoryview(req.body),)
    size = sum(len(p) for p in parts)
    try:
        path = parse_object_path(req.path)
        ts = parse_timestamp(headers)
        assert ts is not None
        limit = st.conf.object_bytes_max
        if size > limit:
            return status(413, f"Content-Length {size} is more than {limit}")
        body_len = trailed_body_length(headers, size)
        ctype = parse_content_type(headers)
        parse_delete_at(headers, st.clock.time())
        targets = parse_targets(headers)
    except (BadRequest, TargetParseError) as e:
        return status(400, str(e))
    try:
        return await store_whole(headers, st, path, ts, ctype, parts, body_len, targets)
    except (DeviceUnavailable, DiskFull) as e:
        return status(507, str(e))
    except DeviceBusy as e:
        return status(503, str(e))


async def store_whole(
    headers: Mapping[str, str],
    st: ServerState,
    path: ObjectPath,
    ts: Timestamp,
    ctype: str,
    request_body: Parts,
    body_len: int | None,
    targets: tuple[ContainerTarget, ...],
) -> web.Response:
    """Store a PUT's whole request body (in the parts it arrived in: its first `body_len`
    bytes and the ETag trailer after them; all of it when `body_len` is None) in one pool
    step, then the expiry queue, the container updates and the 201."""
    st.metrics.bytes_in.inc(sum(len(p) for p in request_body))
    df = st.devices.diskfile(path.device, path.partition, path.account, path.container, path.obj)
    md = ObjectMetadata(
        kind="data",
        name=path.name,
        timestamp=ts,
        content_type=ctype,
        headers=persisted_from_request(headers),
    )
    if_none_match = headers.get("If-None-Match") == "*"
    header_etag = headers.get("ETag", "").strip().strip('"').lower()
    checks = (ts, if_none_match, request_body, body_len, header_etag, md)
    if isinstance(df, RealDiskFile) and st.devices.healthy(path.device):
        split = await store_whole_split(st, path.device, df, *checks)
        if isinstance(split, web.Response):
            return split
        etag, size = split
        return await acknowledge(headers, st, path, df.hash_hex, ts, ctype, etag, size, targets)
    gave_up = GaveUp()
    step = functools.partial(store_whole_step, st, path.device, df, *checks, gave_up)
    try:
        stored = await st.devices.run(path.device, step)
    except (DeviceUnavailable, DiskFull) as e:
        return status(507, str(e))
    except BaseException:
        # Timed out (DeviceBusy -> 503) or cancelled: a step still running in the pool
        # must not commit an object whose PUT was not acknowledged.
        gave_up.value = True
        raise
    if isinstance(stored, web.Response):
        return stored
    etag, size = stored
    return await acknowledge(headers, st, path, df.hash_hex, ts, ctype, etag, size, targets)


def _split(parts: Parts, n: int | None) -> tuple[list[memoryview], bytes | None]:
    """The first `n` bytes of `parts` (as views) and the rest (joined: the trailer); with no
    `n` (a PUT without a trailer), all of `parts` and None."""
    if n is None:
        return list(parts), None
    head: list[memoryview] = []
    tail: list[memoryview] = []
    left = n
    for p in parts:
        if left >= len(p):
            head.append(p)
            left -= len(p)
        else:
            if left:
                head.append(p[:left])
            tail.append(p[left:])
            left = 0
    return head, b"".join(tail)


def _digest(parts: Parts, hasher: Any) -> str:
    for p in parts:
        hasher.update(p)
    hexdigest: str = hasher.hexdigest()
    return hexdigest


def _checked_etag(
    body: Parts, trailer: bytes | None, body_len: int | None, header_etag: str
) -> tuple[str, EtagAlg] | web.Response:
    """The body's ETag and its algorithm (the trailer's ETag once the body matches it, else
    the MD5 computed here; `trailer` is None for a PUT without one) or the refusal, exactly
    as the streamed path decides (objectd/putbody.py)."""
    if trailer is None or body_len is None:
        etag = _digest(body, hashlib.md5())
        if header_etag and header_etag != etag:
            return status(422, "ETag does not match the body's MD5")
        return etag, "md5"
    received = sum(len(p) for p in body)
    return check_trailer(
        trailer, body_len, received, lambda: _digest(body, xxhash.xxh3_128()), header_etag
    )


def store_whole_step(
    st: ServerState,
    device: str,
    df: DiskFile,
    ts: Timestamp,
    if_none_match: bool,
    request_body: Parts,
    body_len: int | None,
    header_etag: str,
    md: ObjectMetadata,
    gave_up: GaveUp,
) -> tuple[str, int] | web.Response:
    """Device check, lookup, refusals (409, 412), the body's checks (400, 422), then the
    write and the durable commit (blocking): (etag, size) once committed, or the refusal.
    Nothing is committed once the request has given up waiting (`gave_up`)."""
    found = lookup_unless_refused(st, device, df, ts, if_none_match)
    if isinstance(found, web.Response):
        return found
    if not isinstance(df, RealDiskFile):
        return _store_streamed(st, df, request_body, body_len, header_etag, md, gave_up)
    body, trailer = _split(request_body, body_len)
    checked = _checked_etag(body, trailer, body_len, header_etag)
    if isinstance(checked, web.Response):
        return checked
    etag, alg = checked
    reserve = st.conf.fallocate_reserve_bytes
    cleanup = found
    md = replace(md, etag=etag, etag_alg=alg)
    if not write_whole_data(df, body, md, reserve, gave_up, cleanup=cleanup):
        return status(503, "gave up waiting for the disk")
    return etag, sum(len(p) for p in body)


async def store_whole_split(
    st: ServerState,
    device: str,
    df: RealDiskFile,
    ts: Timestamp,
    if_none_match: bool,
    request_body: Parts,
    body_len: int | None,
    header_etag: str,
    md: ObjectMetadata,
) -> tuple[str, int] | web.Response:
    """`store_whole_step` for a real disk file with its commit split between the event loop
    and the kernel or the pool (objectd/splitwrite.py): the device check, lookup and
    refusals (409, 412) and the temp file's creation on the loop; then the body's checks
    (400, 422) and its write, and the durable commit.

    Where the devices have an io_uring, the checks and the write run on the loop too (at
    most MID_BODY_BYTES_MAX: two hash passes and a copy into the page cache, ~0.3 ms for
    1 MiB) and the fsyncs in the kernel, with no pool step: the thread hand-offs cost more
    (object servers' CPU per chunk PUT 5-7% lower, docs/iscsi.md "Seventeenth pass").
    Without a ring, or on a device that timed out lately (`store_whole`), all of it runs in
    one pool step."""
    found = lookup_unless_refused(st, device, df, ts, if_none_match)
    if isinstance(found, web.Response):
        return found
    body, trailer = _split(request_body, body_len)
    size = sum(len(p) for p in body)
    assert size <= MID_BODY_BYTES_MAX
    check_space(df, size, st.conf.fallocate_reserve_bytes)
    tmp, fd = create_tmp(df)
    c = Commit(tmp, fd)

    def prepare() -> tuple[str, int] | web.Response:  # in the pool: hashing and the write
        checked = _checked_etag(body, trailer, body_len, header_etag)
        if isinstance(checked, web.Response):
            return checked
        etag, alg = checked
        filled = whole_metadata(replace(md, etag=etag, etag_alg=alg), body)
        assert c.fd is not None
        write_parts(c.fd, [*body, memoryview(encode_footer(filled))])
        return etag, size

    final_name = f"{md.timestamp.internal}.data"
    cleanup = found
    return await commit_split(
        st.devices, device, df, c, final_name, size, prepare, cleanup=cleanup, prepare_on_loop=True
    )


def _store_streamed(
    st: ServerState,
    df: DiskFile,
    parts: Parts,
    body_len: int | None,
    header_etag: str,
    md: ObjectMetadata,
    gave_up: GaveUp,
) -> tuple[str, int] | web.Response:
    """Any DiskFile but a real one (a fault-injecting twin in tests): through its streaming
    writer, whose own hashes of what it was given decide, as on the streamed path."""
    request_body = b"".join(parts)
    size = len(request_body) if body_len is None else body_len
    writer = df.writer(size, st.conf.fallocate_reserve_bytes, md5=body_len is None)
    committed = False
    try:
        writer.write(request_body[:size])
        if body_len is None:
            etag = writer.etag()
            if header_etag and header_etag != etag:
                return status(422, "ETag does not match the body's MD5")
            checked: tuple[str, EtagAlg] | web.Response = (etag, "md5")
        else:
            trailer = memoryview(request_body)[body_len:]
            checked = check_trailer(
                trailer, body_len, writer.bytes_written, writer.body_xxh3_128, header_etag
            )
        if isinstance(checked, web.Response):
            return checked
        if gave_up():
            return status(503, "gave up waiting for the disk")
        etag, alg = checked
        writer.commit(replace(md, etag_alg=alg), etag)
        committed = True
    finally:
        if not committed:
            writer.abort()
    return etag, writer.bytes_written
