"""The sending side of SSYNC: push one partition's differing suffixes to one peer.

One HTTP request per partition and peer: the request body streams our offers and then the
files the peer asked for; the response streams the peer's wants and its result. The wire
format is objectd/ssync_proto.py (docs/object-replication.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from common.log import get_logger
from objectd.diskfile import load_metadata
from objectd.fileformat import FileFormatError
from objectd.layout import DeviceLayout
from objectd.partition import hash_dir_files, list_offers
from objectd.ratelimit import RateLimiter
from objectd.ssync_proto import (
    DATA_BYTES_MAX,
    ENTRIES_PER_FRAME_MAX,
    ETAG_ALGS_HEADER,
    PREAMBLE,
    Data,
    End,
    FileEnd,
    FileStart,
    Offer,
    OfferEnd,
    OfferEntry,
    ProtocolError,
    RemoteError,
    Result,
    SenderParser,
    Want,
    WantEnd,
    WantEntry,
    encode,
)

__all__ = ["SSYNC_CONTENT_TYPE", "SyncError", "SyncResult", "ssync_push"]

SSYNC_CONTENT_TYPE = "application/x-cairn-ssync"
WANTS_MAX = 1_000_000
T = TypeVar("T")
log = get_logger("cairn.object-replicator")


class SyncError(Exception):
    """The exchange failed (peer status, protocol error, stall, transport)."""


@dataclass
class SyncResult:
    offered: int = 0
    wanted: int = 0  # files the peer asked for
    sent: int = 0  # files streamed
    sent_bytes: int = 0
    written: int = 0  # as reported by the peer
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    # Wanted files kept back: their ETag algorithm is one the peer does not take (an older
    # receiver, which would refuse them); they stay here until it does.
    held_back: int = 0

    @property
    def in_sync(self) -> bool:
        """Every file the peer wanted was sent and stored (or superseded there)."""
        return self.failed == 0 and self.held_back == 0 and self.sent == self.wanted


class _Progress:
    """When bytes last moved; the watchdog ends an exchange that stalls."""

    def __init__(self) -> None:
        self.last_s = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.last_s = asyncio.get_running_loop().time()


async def _watchdog(progress: _Progress, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(min(1.0, timeout_s / 4))
        if loop.time() - progress.last_s > timeout_s:
            raise SyncError(f"no progress for {timeout_s}s")


async def _guarded(coro: Awaitable[T], progress: _Progress, timeout_s: float) -> T:
    work = asyncio.ensure_future(coro)
    dog = asyncio.ensure_future(_watchdog(progress, timeout_s))
    try:
        done, _ = await asyncio.wait({work, dog}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        dog.result()  # raises SyncError
        raise AssertionError("unreachable")
    finally:
        for t in (work, dog):
            t.cancel()


def _file_for(layout: DeviceLayout, part: int, hash_hex: str, kind: str) -> Path | None:
    hash_dir = layout.hash_dir(part, hash_hex)
    files = hash_dir_files(hash_dir)
    if kind == "meta":
        name = files.meta_name()
    elif files.base is not None and files.base[1] == kind:
        name = files.file_name()
    else:
        name = None
    return hash_dir / name if name else None


def _pread(path: Path, offset: int, count: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, count, offset)
    finally:
        os.close(fd)


@dataclass
class _Exchange:
    layout: DeviceLayout
    part: int
    offers: list[OfferEntry]
    limiter: RateLimiter
    progress: _Progress
    result: SyncResult
    wants: asyncio.Future[list[WantEntry]]
    # ETag algorithms of the files the peer takes (its answer's ETAG_ALGS_HEADER).
    peer_etag_algs: frozenset[str] = frozenset({"md5"})

    @property
    def chunk_bytes(self) -> int:
        rate = self.limiter.bytes_per_s
        return DATA_BYTES_MAX if rate == 0 else min(DATA_BYTES_MAX, max(4096, rate // 4))

    async def body(self) -> AsyncIterator[bytes]:
        yield PREAMBLE
        for i in range(0, len(self.offers), ENTRIES_PER_FRAME_MAX):
            yield encode(Offer(tuple(self.offers[i : i + ENTRIES_PER_FRAME_MAX])))
            self.progress.touch()
        yield encode(OfferEnd())
        for want in await self.wants:
            for kind in want.kinds:
                async for chunk in self._send_file(want.hash_hex, kind):
                    yield chunk
                    self.progress.touch()
        yield encode(End())

    async def _send_file(self, hash_hex: str, kind: str) -> AsyncIterator[bytes]:
        path = await asyncio.to_thread(_file_for, self.layout, self.part, hash_hex, kind)
        if path is None:
            return  # changed since the offer; counted as not sent, so not in sync
        try:
            md = await asyncio.to_thread(load_metadata, path)
        except (FileNotFoundError, FileFormatError):
            return  # gone or damaged: the auditor's job; the next pass retries
        if md.etag_alg not in self.peer_etag_algs:
            self.result.held_back += 1  # kept here, not in sync: the peer would refuse it
            return
        yield encode(FileStart(hash_hex, md))
        step = self.chunk_bytes
        for offset in range(0, md.content_length, step):
            count = min(step, md.content_length - offset)
            buf = await asyncio.to_thread(_pread, path, offset, count)
            if len(buf) != count:
                raise SyncError(f"{path}: short read")
            await self.limiter.consume(count)
            self.result.sent_bytes += count
            yield encode(Data(buf))
        yield encode(FileEnd())
        self.result.sent += 1

    def on_event(self, ev: object, wanted: list[WantEntry]) -> None:
        if isinstance(ev, Want):
            wanted.extend(ev.entries)
            if len(wanted) > WANTS_MAX:
                raise ProtocolError("peer wants too many objects")
        elif isinstance(ev, WantEnd):
            self.result.wanted = sum(len(w.kinds) for w in wanted)
            self.wants.set_result(wanted)
        elif isinstance(ev, Result):
            self.result.written, self.result.skipped = ev.written, ev.skipped
            self.result.failed = ev.failed
            self.result.errors = list(ev.errors)
        elif isinstance(ev, RemoteError):
            raise SyncError(f"peer: {ev.message}")


async def _converse(
    session: aiohttp.ClientSession, url: str, ex: _Exchange, conn_timeout_s: float
) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=conn_timeout_s, sock_read=None)
    headers = {"Content-Type": SSYNC_CONTENT_TYPE}
    async with session.request(
        "POST", URL(url, encoded=True), data=ex.body(), headers=headers, timeout=timeout
    ) as resp:
        if resp.status != 200:
            raise SyncError(f"SSYNC answered {resp.status}")
        algs = resp.headers.get(ETAG_ALGS_HEADER, "").split()
        ex.peer_etag_algs = frozenset({"md5", *algs})
        parser = SenderParser()
        wanted: list[WantEntry] = []
        while not parser.done:
            chunk = await resp.content.readany()
            ex.progress.touch()
            if not chunk:
                parser.end_of_stream()
            for ev in parser.feed(chunk):
                ex.on_event(ev, wanted)


async def ssync_push(
    session: aiohttp.ClientSession,
    node_url: str,
    remote_device: str,
    layout: DeviceLayout,
    part: int,
    suffixes: list[str],
    limiter: RateLimiter,
    *,
    conn_timeout_s: float = 0.5,
    node_timeout_s: float = 10.0,
) -> SyncResult:
    """Offer every object in `suffixes` of our partition; send what the peer wants."""
    offers = await asyncio.to_thread(list_offers, layout, part, suffixes)
    result = SyncResult(offered=len(offers))
    progress = _Progress()
    wants: asyncio.Future[list[WantEntry]] = asyncio.get_running_loop().create_future()
    ex = _Exchange(layout, part, offers, limiter, progress, result, wants)
    url = f"{node_url.rstrip('/')}/_ssync/{quote(remote_device, safe='')}/{part}"
    try:
        await _guarded(_converse(session, url, ex, conn_timeout_s), progress, node_timeout_s)
    except ProtocolError as e:
        raise SyncError(f"protocol error from peer: {e}") from None
    except (aiohttp.ClientError, OSError) as e:
        raise SyncError(f"SSYNC transport: {e!r}") from None
    finally:
        if not wants.done():
            wants.cancel()
    if result.held_back:
        log.warning(
            "peer takes no files of this ETag algorithm: kept here",
            extra={"fields": {"peer": node_url, "part": part, "held_back": result.held_back}},
        )
    return result
