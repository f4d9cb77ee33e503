"""Receiving a streamed PUT body: the write pipeline, and the ETag-trailer mode.

A PUT body streams into the device's pool one `write_chunk_bytes` piece at a time
(`WriteInFlight`); a piece is the list of chunks the HTTP parser made, written by one writev,
so the body's bytes are not copied again between the parser and the page cache. For a large
PUT the proxy may have computed the MD5 once for all replicas and sent it after the body in
a trailer (common/puttrailer.py, docs/object-format.md): then the writer computes the body's
xxh3-128 instead of its MD5, and the object is committed only if the trailer is well formed,
says commit, and its length and xxh3-128 match what arrived. A version 2 trailer (blockd's
chunk objects) carries no MD5: the ETag stored is its xxh3-128 (docs/object-format.md,
"ETag algorithms").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from common.puttrailer import (
    BODY_LENGTH_HEADER,
    TRAILER_BYTES,
    TRAILER_HEADER,
    TRAILER_VERSIONS,
    TrailerError,
    decode_trailer,
)
from common.server import body_chunks
from objectd.conf import ServerState
from objectd.devices import Devices
from objectd.diskfile import Buffer, ObjectWriter, write_chunks
from objectd.fileformat import EtagAlg, ObjectMetadata
from objectd.request import BadRequest

__all__ = [
    "Received",
    "WriteInFlight",
    "check_trailer",
    "finish_trailed",
    "read_body",
    "status",
    "trailed_body_length",
]


_VERSION_TEXTS = frozenset(map(str, TRAILER_VERSIONS))


def status(code: int, text: str = "", headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=code, text=(text + "\n") if text else None, headers=headers)


def trailed_body_length(headers: Mapping[str, str], content_length: int | None) -> int | None:
    """The body length of a PUT sent with an ETag trailer, None for a plain PUT.

    Raises BadRequest for an unknown trailer version, a bad X-Backend-Body-Length, or a
    Content-Length that is not the body length plus the trailer's size.
    """
    version = headers.get(TRAILER_HEADER)
    if version is None:
        return None
    if version.strip() not in _VERSION_TEXTS:
        raise BadRequest(f"unsupported {TRAILER_HEADER}: {version!r}")
    raw = headers.get(BODY_LENGTH_HEADER, "")
    if not raw.isdigit():
        raise BadRequest(f"invalid or missing {BODY_LENGTH_HEADER}")
    body_len = int(raw)
    if content_length is None or content_length != body_len + TRAILER_BYTES:
        raise BadRequest(f"Content-Length must be {BODY_LENGTH_HEADER} + {TRAILER_BYTES}")
    return body_len


class WriteInFlight:
    """At most one `writer.write` running in the device's pool while the body streams in."""

    def __init__(self, devices: Devices, device: str, writer: ObjectWriter) -> None:
        self._devices = devices
        self._device = device
        self._writer = writer
        self._task: asyncio.Task[None] | None = None
        self.received = 0

    async def wait(self) -> None:
        """Wait for the write in flight (its exception, e.g. DiskFull, is raised here)."""
        task, self._task = self._task, None
        if task is not None:
            await task

    async def submit(self, chunks: Sequence[Buffer]) -> None:
        """Start writing `chunks` (in order, without joining them) once the last write is done."""
        await self.wait()
        self._task = asyncio.ensure_future(
            self._devices.run(self._device, write_chunks, self._writer, chunks)
        )

    def settle(self) -> None:
        """On the way out after a failure, leave a write still running to finish on its own
        (the writer's lock makes the abort that follows wait for it) with its outcome read,
        so it is never reported as an unretrieved exception."""
        task, self._task = self._task, None
        if task is not None:
            task.add_done_callback(_observe)


def _observe(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


# (the body's last piece, not yet written; the trailer's bytes, empty for a plain PUT)
Received = tuple[bytes, bytearray]


async def read_body(
    request: web.Request,
    st: ServerState,
    device: str,
    writer: ObjectWriter,
    length: int | None,
    body_len: int | None = None,
) -> web.StreamResponse | Received:
    """Stream the body to `writer`; a response if the body could not be fully read.

    Full `write_chunk_bytes` pieces go to the pool as they fill, and the next piece is
    received while the last one is hashed and written (one write in flight: the writer is
    sequential, and hashing and os.writev release the GIL, so the two overlap). The last,
    shorter piece is returned, joined, for the commit step to write; by then every earlier write has
    finished. With `body_len` (ETag-trailer mode) only that many bytes go to the writer and
    the rest of the request (`length` - `body_len` bytes) is returned as the trailer.
    """
    limit = st.conf.object_bytes_max if length is None else length
    flight = WriteInFlight(st.devices, device, writer)
    trailer = bytearray()
    try:
        rest = await _receive_into(request, st, flight, limit, body_len, trailer)
        await flight.wait()
    except TimeoutError:
        return status(408, "timed out reading the request body")
    except (HttpProcessingError, ConnectionError):
        return status(499, "client disconnected")
    finally:
        flight.settle()
    if isinstance(rest, web.StreamResponse):
        return rest
    st.metrics.bytes_in.inc(flight.received)
    if length is not None and flight.received < length:
        return status(499, "client disconnected before sending the whole body")
    return b"".join(rest), trailer


async def _receive_into(
    request: web.Request,
    st: ServerState,
    flight: WriteInFlight,
    limit: int,
    body_len: int | None,
    trailer: bytearray,
) -> web.StreamResponse | list[Buffer]:
    """Receive the body chunk by chunk as the HTTP parser made them (no joining of buffered
    chunks) and hand each `write_chunk_bytes` worth to the pool as a list of chunks
    (written by one writev, never copied into one buffer). Returns the chunks not written."""
    pending: list[Buffer] = []
    pending_bytes = 0
    batch = st.conf.write_chunk_bytes
    loop = asyncio.get_running_loop()
    # One timer for the whole body, pushed back after each chunk (a stall of node_timeout_s
    # between chunks fails the PUT); cheaper than wait_for, which makes a task per chunk.
    async with asyncio.timeout(st.conf.node_timeout_s) as stall:
        async for chunk in body_chunks(request.content):
            start = flight.received
            flight.received += len(chunk)
            if flight.received > limit:
                return status(413, "body larger than allowed")
            piece: Buffer = chunk
            if body_len is not None and flight.received > body_len:
                keep = max(0, body_len - start)  # the rest of the chunk is the trailer's
                trailer += memoryview(chunk)[keep:]
                piece = memoryview(chunk)[:keep]
            if piece:
                pending.append(piece)
                pending_bytes += len(piece)
            if pending_bytes >= batch:
                full, pending, pending_bytes = pending, [], 0  # hand over the list: no copy
                stall.reschedule(None)  # waiting on the disk: disk_timeout_s applies
                await flight.submit(full)
            stall.reschedule(loop.time() + st.conf.node_timeout_s)
    return pending


def check_trailer(
    trailer: bytes | bytearray | memoryview,
    body_len: int,
    received: int,
    body_xxh3_128: Callable[[], str],
    header_etag: str,
) -> tuple[str, EtagAlg] | web.Response:
    """The ETag a trailed body may be committed with and its algorithm (the trailer's MD5,
    or for a version 2 trailer its xxh3-128), or its refusal (nothing committed): 400 for a
    garbled trailer or a length that does not add up (`body_len` announced, `received`
    bytes stored), 422 for a cancelled PUT, a body whose xxh3-128 (computed by
    `body_xxh3_128`, only once the cheaper checks passed) differs from the sender's (bytes
    changed between sender and disk), or an ETag header that is not the trailer's ETag."""
    try:
        t = decode_trailer(trailer)
    except TrailerError as e:
        return status(400, f"bad ETag trailer: {e}")
    if t.action == "cancel":
        return status(422, "the proxy cancelled this PUT: the body does not match its ETag")
    if t.body_length != body_len or received != body_len:
        return status(400, "ETag trailer body length does not match the body")
    if body_xxh3_128() != t.xxh3_128_hex:
        return status(422, "body xxh3-128 differs from the proxy's: changed in transit")
    if header_etag and header_etag != t.etag:
        return status(422, f"ETag does not match the body's {t.etag_alg}")
    return t.etag, t.etag_alg


def finish_trailed(
    writer: ObjectWriter,
    tail: bytes | bytearray,
    trailer: bytearray,
    body_len: int,
    header_etag: str,
    md: ObjectMetadata,
) -> str | web.Response:
    """Write the last bytes, check the trailer (`check_trailer`) and commit, in one pool
    step (blocking). Returns the ETag once committed, or the refusal (nothing committed;
    the caller removes the temp file)."""
    if tail:
        writer.write(tail)
    checked = check_trailer(
        trailer, body_len, writer.bytes_written, writer.body_xxh3_128, header_etag
    )
    if isinstance(checked, web.Response):
        return checked
    etag, alg = checked
    writer.commit(replace(md, etag_alg=alg), etag)
    return etag
