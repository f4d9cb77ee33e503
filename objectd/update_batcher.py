"""Container updates of one object-server process, batched per container server.

Each object PUT or DELETE waits for its container update (or saves an async pending when
that fails or times out). Sent one request each, every update costs this server an HTTP
client request and the container server an HTTP request; both are most of a small PUT's
cost after the fsyncs. `UpdateBatcher` keeps, per container host (ip:port), the updates
queued while a request to that host is in flight and sends them together as ONE request
(``POST /_object_rows``, common/rowupdates.py) as soon as a request slot is free: no timer,
so a lone update goes out at once, and under load the batches grow by themselves. The
container server answers a status per row, so each waiting PUT learns its own outcome.

Semantics stay those of one request per update: the caller waits at most `timeout_s` for
its own row and gets False (an async pending) when the row failed, was refused because too
many wait, or did not come back in time; a row not yet sent when its caller gives up is
taken out of the queue. A host whose answer lacks the batch version header does not know
the endpoint (an older server: 400, 404 or 405; or anything else that took the request for
something other than a batch): its updates go one request per row, as they always did, and
the endpoint is tried again after `legacy_retry_s`.

Lingering: while more small PUTs of this process are still writing (`writing()`) than rows
wait for an answer, the rows of theirs that will come next are all but certain. A request
about to leave then waits `linger_s` (a few milliseconds) and takes the rows that arrived
meanwhile, so that at high PUT rates one request carries several rows instead of one
(docs/performance.md, "Session 19 run"). A lone PUT never waits: with no other PUT writing,
its row goes at once, as before.

`BatchQueue` is the sans-IO core (what goes into the next request); `UpdateBatcher` does
the I/O.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import aiohttp

from common.clock import Clock
from common.leanhttp import ConnectionClosed, LeanHTTPError, LeanPool
from common.log import get_logger
from common.rowupdates import (
    BODY_BYTES_MAX,
    CONTENT_TYPE,
    PATH,
    ROWS_MAX,
    VERSION_HEADER,
    RowBatchError,
    RowUpdate,
    decode_response,
    encode_request,
    encode_row,
)
from objectd.asyncpending import ContainerTarget
from objectd.container_update import failed_targets, send_update

__all__ = ["QUEUED_ROWS_MAX", "BatchQueue", "UpdateBatcher"]

log = get_logger("cairn.object-server")

T = TypeVar("T")

# Rows waiting per host before new ones fail at once (and become async pendings).
QUEUED_ROWS_MAX = 4096
# Encoded rows per request: half the server's body limit, so one more row always fits.
BATCH_BYTES_MAX = BODY_BYTES_MAX // 2
# A row bigger than this (huge headers) goes alone, as a single-row request.
ROW_BYTES_MAX = BATCH_BYTES_MAX // 2
# An answer holds one small integer per row.
ANSWER_BYTES_MAX = 64 * 1024
# Headers of the whole request, not of a row.
_REQUEST_HEADERS = frozenset({"x-trans-id", "user-agent"})
_FAILED = 0  # a row status meaning "no answer" (the request failed as a whole)
# Tries of one batch request when the server closed the kept-alive connection under it.
_ATTEMPTS = 2


class BatchQueue(Generic[T]):
    """Sans-IO: rows waiting for one host, and which of them go in the next request.

    `take` hands out the next batch (up to `rows_max` rows and `bytes_max` bytes, at least
    one row) only while fewer than `in_flight_max` requests are out; `finished` says one
    came back. Items are compared by identity.
    """

    def __init__(
        self,
        rows_max: int = ROWS_MAX,
        bytes_max: int = BATCH_BYTES_MAX,
        in_flight_max: int = 1,
        queued_max: int = QUEUED_ROWS_MAX,
    ) -> None:
        assert 1 <= rows_max <= ROWS_MAX and bytes_max >= 1
        assert in_flight_max >= 1 and queued_max >= 1
        self.rows_max = rows_max
        self.bytes_max = bytes_max
        self.in_flight_max = in_flight_max
        self.queued_max = queued_max
        self.in_flight = 0
        self._queue: collections.deque[tuple[T, int]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def push(self, item: T, size_bytes: int) -> bool:
        """Queue `item`; False (not queued) when `queued_max` rows already wait."""
        if len(self._queue) >= self.queued_max:
            return False
        self._queue.append((item, size_bytes))
        return True

    def discard(self, item: T) -> bool:
        """Take a not yet sent item out of the queue; False if it is not queued."""
        for i, (queued, _size) in enumerate(self._queue):
            if queued is item:
                del self._queue[i]
                return True
        return False

    def take(self) -> list[T]:
        """The next request's rows, or [] when nothing waits or no request slot is free."""
        if not self._queue or self.in_flight >= self.in_flight_max:
            return []
        first, size = self._queue.popleft()  # taken whatever its size
        self.in_flight += 1
        return [first, *self.top_up(1, size)]

    def top_up(self, rows: int, size_bytes: int) -> list[T]:
        """More queued items for a request already taken that holds `rows` items of
        `size_bytes` bytes, within the same limits as `take` (no new request slot)."""
        more: list[T] = []
        while self._queue and rows + len(more) < self.rows_max:
            item, size = self._queue[0]
            if size_bytes + size > self.bytes_max:
                break
            self._queue.popleft()
            more.append(item)
            size_bytes += size
        return more

    def take_all(self) -> list[T]:
        """Every queued item, outside any request slot (to be sent some other way)."""
        items = [item for item, _size in self._queue]
        self._queue.clear()
        return items

    def finished(self) -> None:
        """A request handed out by `take` came back (or failed)."""
        assert self.in_flight > 0
        self.in_flight -= 1


@dataclass(eq=False)
class _Waiting:
    target: ContainerTarget
    row: RowUpdate
    encoded: bytes
    headers: Mapping[str, str]  # the single-row request's headers (for the fallback)
    done: asyncio.Future[bool]


@dataclass
class _Host:
    queue: BatchQueue[_Waiting]
    # monotonic time before which this host gets one request per row
    legacy_until: float = float("-inf")
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class UpdateBatcher:
    """Sends the container updates of this process, batched per container host."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        clock: Clock,
        timeout_s: float,
        *,
        rows_max: int = ROWS_MAX,
        in_flight_max: int = 1,
        queued_max: int = QUEUED_ROWS_MAX,
        legacy_retry_s: float = 300.0,
        on_batch: Callable[[int], None] | None = None,
        linger_s: float = 0.0,
    ) -> None:
        assert timeout_s > 0 and legacy_retry_s >= 0 and linger_s >= 0
        self.session = session  # for the one-row requests (`send_update`)
        # The batch requests go through the lean client (docs/lean-http-client.md): an
        # aiohttp client request cost this process several times the CPU of the exchange.
        self.pool = LeanPool(
            connect_timeout_s=timeout_s,
            connections_per_host_max=in_flight_max,
            body_bytes_max=ANSWER_BYTES_MAX,
        )
        self.clock = clock
        self.timeout_s = timeout_s
        self.rows_max = rows_max
        self.in_flight_max = in_flight_max
        self.queued_max = queued_max
        self.legacy_retry_s = legacy_retry_s
        self.on_batch = on_batch  # called with the rows of each batch that got an answer
        self.batches_sent = 0
        self.rows_sent = 0
        self.linger_s = linger_s
        self.writers = 0  # small PUTs of this process between `writing()` and their answer
        self._waiting = 0  # rows queued or sent, their callers waiting for the outcome
        self._hosts: dict[str, _Host] = {}
        self._closed = False

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a small PUT that will send its container updates through this batcher:
        while it writes, a batch about to leave may linger for its row."""
        self.writers += 1
        try:
            yield
        finally:
            self.writers -= 1

    async def send_updates(
        self,
        op: str,
        targets: tuple[ContainerTarget, ...],
        account: str,
        container: str,
        obj: str,
        headers: Mapping[str, str],
    ) -> tuple[ContainerTarget, ...]:
        """Tell every target; returns the targets that did not accept (as
        `objectd.container_update.send_updates` does, one request per update)."""
        return await failed_targets(
            targets, lambda t: self.update(op, t, account, container, obj, headers)
        )

    async def update(
        self,
        op: str,
        target: ContainerTarget,
        account: str,
        container: str,
        obj: str,
        headers: Mapping[str, str],
    ) -> bool:
        """True if `target` accepted the update within `timeout_s`."""
        host = self._host(target.host)
        if self._closed or host.legacy_until > self.clock.monotonic():
            return await self._single(target, op, account, container, obj, headers)
        row_headers = {k: v for k, v in headers.items() if k.lower() not in _REQUEST_HEADERS}
        row = RowUpdate(target.device, target.partition, account, container, obj, op, row_headers)
        encoded = encode_row(row)
        if len(encoded) > ROW_BYTES_MAX:
            return await self._single(target, op, account, container, obj, headers)
        waiting = _Waiting(
            target, row, encoded, headers, asyncio.get_running_loop().create_future()
        )
        if not host.queue.push(waiting, len(encoded)):
            return False
        self._waiting += 1
        self._pump(target.host, host)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await waiting.done
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1
            if not waiting.done.done() or waiting.done.cancelled():
                host.queue.discard(waiting)

    async def close(self) -> None:
        """Stop sending; requests in flight are cancelled and their rows count as failed."""
        self._closed = True
        tasks = [t for h in self._hosts.values() for t in h.tasks]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for h in self._hosts.values():
            left = h.queue.take_all()
            _resolve(left, [_FAILED] * len(left))
        await self.pool.close()

    def _host(self, name: str) -> _Host:
        host = self._hosts.get(name)
        if host is None:
            queue: BatchQueue[_Waiting] = BatchQueue(
                self.rows_max, BATCH_BYTES_MAX, self.in_flight_max, self.queued_max
            )
            host = self._hosts[name] = _Host(queue)
        return host

    def _pump(self, name: str, host: _Host) -> None:
        """Start a request for what waits, while request slots are free."""
        if self._closed:
            return
        if host.legacy_until > self.clock.monotonic():
            for w in host.queue.take_all():
                self._spawn(host, self._send_alone(w))
            return
        while batch := host.queue.take():
            self._spawn(host, self._send_batch(name, host, batch))

    def _spawn(self, host: _Host, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        host.tasks.add(task)
        task.add_done_callback(host.tasks.discard)

    async def _send_batch(self, name: str, host: _Host, batch: list[_Waiting]) -> None:
        if self.linger_s > 0 and self.writers > self._waiting:
            try:
                await asyncio.sleep(self.linger_s)
            except BaseException:  # closing: the rows taken fail like a failed request
                _resolve(batch, [_FAILED] * len(batch))
                host.queue.finished()
                raise
            batch += host.queue.top_up(len(batch), sum(len(w.encoded) for w in batch))
        live = [w for w in batch if not w.done.done()]
        if not live:  # every caller gave up meanwhile (taken, then cancelled: rare)
            host.queue.finished()
            self._pump(name, host)
            return
        try:
            statuses = await self._post(name, live)
        except BaseException:
            _resolve(live, [_FAILED] * len(live))
            host.queue.finished()
            raise
        host.queue.finished()
        if statuses is None:
            host.legacy_until = self.clock.monotonic() + self.legacy_retry_s
            log.warning(
                "container server has no batch endpoint; sending one request per update",
                extra={"fields": {"host": name}},
            )
            for w in live:
                self._spawn(host, self._send_alone(w))
        else:
            self.batches_sent += 1
            self.rows_sent += len(live)
            if self.on_batch is not None:
                self.on_batch(len(live))
            _resolve(live, statuses)
        self._pump(name, host)

    async def _post(self, name: str, batch: list[_Waiting]) -> list[int] | None:
        """Per-row statuses (_FAILED for all when the request failed as a whole), or None
        when the host does not know the batch endpoint."""
        body = encode_request([w.encoded for w in batch])
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": "cairn-object-server"}
        trans_id = batch[0].headers.get("X-Trans-Id", "")
        if trans_id:
            headers["X-Trans-Id"] = trans_id
        for attempt in range(_ATTEMPTS):
            try:
                return await self._post_once(name, body, headers, len(batch))
            except ConnectionClosed as e:
                # The server closed the connection under the request: send again on a new
                # one (the rows may have been applied already; applying them twice is
                # harmless, a row merges by its timestamp). The pool itself already sends
                # once more when a kept-alive connection was closed before any answer.
                error: Exception = e
                if attempt + 1 < _ATTEMPTS:
                    continue
            except (LeanHTTPError, TimeoutError, OSError, RowBatchError) as e:
                error = e
            log.info(
                "batched container update failed",
                extra={"fields": {"host": name, "rows": len(batch), "error": repr(error)[:200]}},
            )
            break
        return [_FAILED] * len(batch)

    async def _post_once(
        self, name: str, body: bytes, headers: dict[str, str], rows: int
    ) -> list[int] | None:
        host, _, port = name.rpartition(":")
        resp = await self.pool.request(
            host.strip("[]"), int(port), "POST", PATH, headers, body, timeout_s=self.timeout_s
        )
        if VERSION_HEADER not in resp.headers:
            return None
        if resp.status != 200:
            return [_FAILED] * rows
        return decode_response(resp.body, rows)

    async def _send_alone(self, w: _Waiting) -> None:
        if w.done.done():
            return
        try:
            ok = await self._single(
                w.target, w.row.op, w.row.account, w.row.container, w.row.obj, w.headers
            )
        except BaseException:
            _resolve([w], [_FAILED])
            raise
        _resolve([w], [200 if ok else _FAILED])

    async def _single(
        self,
        target: ContainerTarget,
        op: str,
        account: str,
        container: str,
        obj: str,
        headers: Mapping[str, str],
    ) -> bool:
        return await send_update(
            self.session, op, target, account, container, obj, headers, self.timeout_s
        )


def _resolve(items: list[_Waiting], statuses: list[int]) -> None:
    for w, s in zip(items, statuses, strict=True):
        if not w.done.done():
            w.done.set_result(200 <= s < 300)
