"""The object server's replication verbs: REPLICATE (suffix hashes) and SSYNC (receive files).

``REPLICATE /<device>/<partition>[/<suf>-<suf>...]`` answers the partition's suffix hashes
as msgpack ``{"v": 1, "hashes": {suffix: md5}}``, recomputing the listed suffixes first.

``SSYNC /<device>/<partition>`` runs the receiving side of objectd/ssync_proto.py: the
request body is the sender's stream, the response body ours. See docs/object-replication.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import re
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from common.log import get_logger
from objectd.conf import STATE, ServerState
from objectd.devices import DeviceBusy, DeviceUnavailable
from objectd.diskfile import DiskFile, DiskFull, ObjectWriter
from objectd.fileformat import ObjectMetadata
from objectd.hashes import encode_cache, get_hashes
from objectd.layout import DeviceLayout, valid_device_name
from objectd.partition import hash_dir_files
from objectd.ssync_proto import (
    ETAG_ALGS_HEADER,
    ETAG_ALGS_TEXT,
    PREAMBLE,
    Data,
    End,
    Event,
    FileEnd,
    FileStart,
    Offer,
    OfferEnd,
    OfferEntry,
    ProtocolError,
    ReceiverParser,
    RemoteError,
    Result,
    Want,
    WantEnd,
    WantEntry,
    encode,
    wanted_kinds,
)
from objectd.writes import status

__all__ = ["REPLICATE_CONTENT_TYPE", "SSYNC_CONTENT_TYPE", "handle_replicate", "handle_ssync"]

log = get_logger("cairn.object-server")

REPLICATE_CONTENT_TYPE = "application/x-cairn-suffix-hashes"
SSYNC_CONTENT_TYPE = "application/x-cairn-ssync"
SUFFIXES_PER_REQUEST_MAX = 4096
WANTS_MAX = 1_000_000  # objects one exchange may ask for
_SUFFIX_LIST = re.compile(r"^[0-9a-f]{3}(-[0-9a-f]{3})*$")


def _parse_partition_path(request: web.Request) -> tuple[str, int, list[str]]:
    device = request.match_info["device"]
    part = request.match_info["partition"]
    tail = request.match_info.get("suffixes", "")
    if not valid_device_name(device):
        raise ValueError(f"invalid device name {device!r}")
    if not part.isdigit() or len(part) > 10:
        raise ValueError(f"invalid partition {part!r}")
    suffixes = []
    if tail:
        if not _SUFFIX_LIST.match(tail) or tail.count("-") >= SUFFIXES_PER_REQUEST_MAX:
            raise ValueError("suffixes must be 3 hex digits joined by '-'")
        suffixes = tail.split("-")
    return device, int(part), suffixes


async def _device(st: ServerState, device: str) -> DeviceLayout:
    return await st.devices.run(device, st.devices.check, device)


async def handle_replicate(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    try:
        device, part, suffixes = _parse_partition_path(request)
    except ValueError as e:
        return status(400, str(e))
    try:
        layout = await _device(st, device)
        hashes = await st.devices.run(
            device,
            get_hashes,
            layout,
            part,
            now_s=st.clock.time(),
            reclaim_age_s=st.conf.reclaim_age_s,
            recalculate=suffixes,
        )
    except DeviceUnavailable as e:
        return status(507, str(e))
    except DeviceBusy as e:
        return status(503, str(e))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return status(507, f"device full: {e}")
        raise
    return web.Response(body=encode_cache(hashes), content_type=REPLICATE_CONTENT_TYPE)


@dataclass
class _Receiving:
    """One SSYNC exchange's receiver state (the parser checks the frame order)."""

    st: ServerState
    device: str
    layout: DeviceLayout
    partition: int
    wants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    df: DiskFile | None = None
    md: ObjectMetadata | None = None
    writer: ObjectWriter | None = None
    skipping: bool = False
    received_bytes: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failed += 1
        self.errors.append(message)


def _wants_for(layout: DeviceLayout, part: int, entries: tuple[OfferEntry, ...]) -> list[WantEntry]:
    out = []
    for e in entries:
        files = hash_dir_files(layout.hash_dir(part, e.hash_hex))
        base = (files.base[0], str(files.base[1])) if files.base else None
        kinds = wanted_kinds(base, files.meta, e)
        if kinds:
            out.append(WantEntry(e.hash_hex, kinds))
    return out


async def _on_offer(rx: _Receiving, ev: Offer) -> None:
    wants = await rx.st.devices.run(rx.device, _wants_for, rx.layout, rx.partition, ev.entries)
    if len(rx.wants) + len(wants) > WANTS_MAX:
        raise ProtocolError(f"more than {WANTS_MAX} objects offered in one exchange")
    for w in wants:
        rx.wants[w.hash_hex] = w.kinds


def _split_name(name: str) -> tuple[str, str, str]:
    parts = name.split("/", 3)
    if len(parts) != 4 or parts[0] or not all(parts[1:]):
        raise ProtocolError(f"bad object name {name[:100]!r}")
    return parts[1], parts[2], parts[3]


def _still_wanted(layout: DeviceLayout, part: int, hash_hex: str, md: ObjectMetadata) -> bool:
    """The timestamp rules again, against what is on disk right now."""
    files = hash_dir_files(layout.hash_dir(part, hash_hex))
    base = (files.base[0], str(files.base[1])) if files.base else None
    if md.kind == "meta":
        offer = OfferEntry(hash_hex, None, md.timestamp)
    else:
        offer = OfferEntry(hash_hex, (md.timestamp, md.kind), None)
    return md.kind in wanted_kinds(base, files.meta, offer)


async def _on_file_start(rx: _Receiving, ev: FileStart) -> None:
    kinds = rx.wants.get(ev.hash_hex, ())
    if ev.metadata.kind not in kinds:
        raise ProtocolError(f"{ev.hash_hex}: {ev.metadata.kind} file was not asked for")
    account, container, obj = _split_name(ev.metadata.name)
    df = rx.st.devices.diskfile(rx.device, rx.partition, account, container, obj)
    if df.hash_hex != ev.hash_hex:
        raise ProtocolError(f"{ev.hash_hex}: the name does not hash to this hash")
    rx.df, rx.md, rx.writer, rx.received_bytes = df, ev.metadata, None, 0
    rx.skipping = not await rx.st.devices.run(
        rx.device, _still_wanted, rx.layout, rx.partition, ev.hash_hex, ev.metadata
    )
    if rx.skipping or ev.metadata.kind != "data":
        return
    try:
        # The body is checked against the sent ETag: an MD5, or the xxh3-128 it names.
        writer = functools.partial(df.writer, md5=ev.metadata.etag_alg == "md5")
        rx.writer = await rx.st.devices.run(
            rx.device, writer, ev.metadata.content_length, rx.st.conf.fallocate_reserve_bytes
        )
    except DiskFull as e:
        rx.fail(f"{ev.hash_hex}: {e}")
        rx.skipping = True


async def _on_data(rx: _Receiving, ev: Data) -> None:
    assert rx.md is not None
    rx.received_bytes += len(ev.data)
    if rx.md.kind != "data" or rx.received_bytes > rx.md.content_length:
        raise ProtocolError("more body bytes than the metadata declares")
    if rx.writer is not None and not rx.skipping:
        await rx.st.devices.run(rx.device, rx.writer.write, ev.data)
    rx.st.metrics.bytes_in.inc(len(ev.data))


async def _on_file_end(rx: _Receiving) -> None:
    md, df, writer = rx.md, rx.df, rx.writer
    assert md is not None and df is not None
    rx.md, rx.df, rx.writer = None, None, None
    if md.kind == "data" and rx.received_bytes != md.content_length:
        raise ProtocolError("fewer body bytes than the metadata declares")
    if rx.skipping:
        if writer is not None:
            await rx.st.devices.run(rx.device, writer.abort)
        rx.skipped += 1
        return
    try:
        await _commit(rx, df, md, writer)
    except DiskFull as e:
        rx.fail(f"{df.hash_hex}: {e}")


async def _commit(
    rx: _Receiving, df: DiskFile, md: ObjectMetadata, writer: ObjectWriter | None
) -> None:
    run = rx.st.devices.run
    if md.kind == "ts":
        await run(rx.device, df.put_tombstone, md.timestamp)
    elif md.kind == "meta":
        await run(rx.device, df.put_meta, md.timestamp, dict(md.headers))
    else:
        assert writer is not None
        etag = writer.etag() if md.etag_alg == "md5" else writer.body_xxh3_128()
        if etag != md.etag:
            await run(rx.device, writer.abort)
            rx.fail(f"{df.hash_hex}: body {md.etag_alg} differs from the sent ETag")
            return
        clean = ObjectMetadata(
            kind="data",
            name=md.name,
            timestamp=md.timestamp,
            content_type=md.content_type,
            headers=dict(md.headers),
            etag_alg=md.etag_alg,
        )
        await run(rx.device, writer.commit, clean, etag)
    rx.written += 1


async def _dispatch(rx: _Receiving, ev: Event, resp: web.StreamResponse) -> bool:
    """Handle one event from the sender; True once the exchange is complete."""
    if isinstance(ev, Offer):
        await _on_offer(rx, ev)
    elif isinstance(ev, OfferEnd):
        items = [WantEntry(h, k) for h, k in rx.wants.items()]
        for i in range(0, len(items), 1024):
            await resp.write(encode(Want(tuple(items[i : i + 1024]))))
        await resp.write(encode(WantEnd()))
    elif isinstance(ev, FileStart):
        await _on_file_start(rx, ev)
    elif isinstance(ev, Data):
        await _on_data(rx, ev)
    elif isinstance(ev, FileEnd):
        await _on_file_end(rx)
    elif isinstance(ev, End):
        return True
    return False


async def _abort_open_writer(rx: _Receiving) -> None:
    if rx.writer is not None:
        await asyncio.to_thread(rx.writer.abort)
        rx.writer = None


async def _receive(request: web.Request, rx: _Receiving, resp: web.StreamResponse) -> None:
    parser = ReceiverParser()
    timeout_s = rx.st.conf.node_timeout_s
    while True:
        chunk = await asyncio.wait_for(request.content.readany(), timeout_s)
        if not chunk:
            parser.end_of_stream()  # raises: the sender stopped before END
            return
        for ev in parser.feed(chunk):
            if await _dispatch(rx, ev, resp):
                errors = tuple(rx.errors)
                await resp.write(encode(Result(rx.written, rx.skipped, rx.failed, errors)))
                return


async def handle_ssync(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    try:
        device, part, suffixes = _parse_partition_path(request)
        if suffixes:
            raise ValueError("SSYNC takes /device/partition only")
    except ValueError as e:
        return status(400, str(e))
    try:
        layout = await _device(st, device)
    except DeviceUnavailable as e:
        return status(507, str(e))
    except DeviceBusy as e:
        return status(503, str(e))
    rx = _Receiving(st, device, layout, part)
    resp = web.StreamResponse(
        status=200,
        headers={"Content-Type": SSYNC_CONTENT_TYPE, ETAG_ALGS_HEADER: ETAG_ALGS_TEXT},
    )
    await resp.prepare(request)
    await resp.write(PREAMBLE)
    problem = None
    try:
        await _receive(request, rx, resp)
    except ProtocolError as e:
        problem = f"protocol error: {e}"
    except TimeoutError:
        problem = "timed out waiting for the sender"
    except (DeviceBusy, DeviceUnavailable) as e:
        problem = f"device: {e}"
    except (HttpProcessingError, ConnectionError):
        log.info("ssync sender went away", extra={"fields": {"device": device, "part": part}})
    except OSError as e:  # a disk error mid-exchange: tell the sender, keep the server up
        log.warning("ssync disk error", extra={"fields": {"device": device, "error": str(e)}})
        problem = f"disk error: {e.strerror or e}"
    finally:
        await _abort_open_writer(rx)
    log.info(
        "ssync received",
        extra={
            "fields": {
                "device": device,
                "part": part,
                "written": rx.written,
                "skipped": rx.skipped,
                "failed": rx.failed,
            }
        },
    )
    with contextlib.suppress(ConnectionError):
        if problem is not None:
            await resp.write(encode(RemoteError(problem)))
        await resp.write_eof()
    return resp
