"""Talking to the storage servers: node choice, error limiting, fan-out and quorum.

The proxy never holds an object in memory here: bodies of object PUTs are streamed by
proxy/objput.py; this module handles the small requests (account and container writes,
HEADs, listings) and the common machinery.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from common.clock import Clock
from common.leanhttp import BodyTooLarge, LeanHTTPError, LeanPool
from common.log import get_logger, request_id
from common.nodes import ErrorLimiter, iter_nodes, node_key
from common.puttrailer import TrailerServers
from common.timestamps import Timestamp, TimestampError
from common.wholebody import BODY_MAX_HEADER, WHOLE_BODY_BYTES_MAX, WITHHELD_HEADER
from ring import Device, Ring

__all__ = [
    "Backend",
    "Resp",
    "Rings",
    "best_status",
    "node_key",
    "open_stream",
    "quorum_size",
    "read_object",
]


def _server(node: Device) -> str:
    """A storage node's server (ip:port), whatever the device: what capabilities belong to."""
    return f"{node.ip}:{node.port}"


log = get_logger("cairn.proxy.backend")

# Statuses from a node that mean "this node can't do it now", so try another one.
_RETRY_ELSEWHERE = frozenset({500, 502, 503, 504, 507})


@dataclass(frozen=True)
class Rings:
    account: Ring
    container: Ring
    object: Ring


@dataclass
class Resp:
    status: int
    headers: CIMultiDictProxy[str] | CIMultiDict[str]
    body: bytes = b""
    node: Device | None = None


def stale_connection(e: BaseException) -> bool:
    """A reused keep-alive connection that the peer had closed: worth one retry."""
    return isinstance(
        e, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
    ) and not isinstance(e, aiohttp.ClientConnectorError)


def deletion_time(r_status: int, headers: Mapping[str, str]) -> Timestamp | None:
    """The tombstone time a 404 names (its X-Backend-Timestamp), if any."""
    if r_status != 404:
        return None
    return _backend_timestamp(headers)


def stale_after(headers: Mapping[str, str], deleted: Timestamp | None) -> bool:
    """An answer whose copy is older than a deletion another node reported: a node (usually a
    handoff) that missed the DELETE. The newer tombstone wins, as in Swift's replication."""
    if deleted is None:
        return False
    ts = _backend_timestamp(headers)
    return ts is not None and ts < deleted


def _backend_timestamp(headers: Mapping[str, str]) -> Timestamp | None:
    raw = headers.get("X-Backend-Timestamp")
    if raw is None:
        return None
    try:
        return Timestamp.parse(raw)
    except TimestampError:
        return None


def quorum_size(n: int) -> int:
    """A majority of n replicas (Swift's quorum for replicated writes)."""
    return n // 2 + 1


def best_status(statuses: list[int], n: int) -> int:
    """The response class that a quorum of the n replicas agrees on, else 503.

    Classes are checked in Swift's order: success, redirection, client error, server error.
    Within the winning class the most common status wins (ties: the lowest).
    """
    q = quorum_size(n)
    for low in (200, 300, 400, 500):
        in_class = [s for s in statuses if low <= s < low + 100]
        if len(in_class) >= q:
            return min(set(in_class), key=lambda s: (-in_class.count(s), s))
    return 503


def backend_path(
    device: str, part: int, account: str, container: str | None = None, obj: str | None = None
) -> str:
    parts = [device, str(part), account]
    if container is not None:
        parts.append(container)
        if obj is not None:
            parts.append(obj)
    return "/" + "/".join(
        quote(p, safe="") if i < 3 else quote(p, safe="/") for i, p in enumerate(parts)
    )


def _object_put(method: str, path: str, body: bytes | None) -> bool:
    """A whole-body PUT to an object path (/device/part/account/container/object; `backend_path`
    quotes the first four parts whole, so the fifth "/" starts the object name)."""
    return method == "PUT" and body is not None and path.count("/") >= 5


def _object_read(method: str, path: str, body: bytes | None) -> bool:
    """A HEAD or GET of an object path: what an object server's fast lane answers."""
    return method in ("GET", "HEAD") and body is None and path.count("/") >= 5


# The proxy's whole-body object GETs (`read_object`): the object server answers a body of at
# most BODY_MAX_HEADER bytes whole, and withholds a longer one (204 with WITHHELD_HEADER),
# which is then streamed by aiohttp (common/wholebody.py).
WHOLE_GET_BYTES_MAX = WHOLE_BODY_BYTES_MAX
# An answer on the read pool: a whole GET body, its head and some slack.
READ_RESPONSE_BYTES_MAX = WHOLE_GET_BYTES_MAX + 64 * 1024

_TIMEOUTS_CACHED_MAX = 16
# Connections the lean client keeps to one storage server (as the aiohttp connector's
# limit_per_host in proxy/app.py).
CONNECTIONS_PER_NODE_MAX = 256
# A response to a small request: account and container listings are the biggest.
SMALL_RESPONSE_BYTES_MAX = 64 * 1024 * 1024
# An answer to an object PUT (a status line, headers and at most an error text).
PUT_RESPONSE_BYTES_MAX = 64 * 1024


class Backend:
    """Storage-node access shared by every controller of one proxy worker."""

    def __init__(
        self,
        rings: Rings,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        conn_timeout_s: float,
        node_timeout_s: float,
        error_limiter: ErrorLimiter,
        shuffle_reads: bool = True,
        pool: LeanPool | None = None,
    ) -> None:
        self.rings = rings
        self.shuffle_reads = shuffle_reads
        # aiohttp for the streamed requests (open_stream, large PUTs, probes); the lean
        # client (docs/lean-http-client.md) for the small whole-body ones (`call`).
        self.session = session
        self.pool = pool or LeanPool(
            connect_timeout_s=conn_timeout_s,
            connections_per_host_max=CONNECTIONS_PER_NODE_MAX,
            body_bytes_max=SMALL_RESPONSE_BYTES_MAX,
        )
        # Small object PUTs on connections of their own: an object server serves them on its
        # fast lane, which hands a connection to aiohttp for good at its first other request
        # (a HEAD, a DELETE), so the two kinds must not share connections
        # (docs/lean-http-server.md).
        self.put_pool = LeanPool(
            connect_timeout_s=conn_timeout_s,
            connections_per_host_max=CONNECTIONS_PER_NODE_MAX,
            body_bytes_max=PUT_RESPONSE_BYTES_MAX,
        )
        # Object HEADs and whole-body GETs on connections of their own too: the fast lane
        # answers them (objectd/smallget.py), and nothing else is sent on these.
        self.read_pool = LeanPool(
            connect_timeout_s=conn_timeout_s,
            connections_per_host_max=CONNECTIONS_PER_NODE_MAX,
            body_bytes_max=READ_RESPONSE_BYTES_MAX,
        )
        self.clock = clock
        self.conn_timeout_s = conn_timeout_s
        self.node_timeout_s = node_timeout_s
        self.errors = error_limiter
        # Object servers seen to take the ETag trailer, and those asked about it already
        # (`probe_trailer_support`).
        self.trailer_servers = TrailerServers()
        self._probed: set[str] = set()
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def learn(self, node: Device, headers: Mapping[str, str]) -> None:
        """Note what a storage node's response says it supports."""
        self.trailer_servers.learn(node, headers)

    def takes_trailer(self, node: Device) -> bool:
        return self.trailer_servers.takes(node)

    async def probe_trailer_support(self, nodes: list[Device]) -> None:
        """Ask the object servers among `nodes` not heard from yet (once per server and
        process) whether they take the ETag trailer: their /healthcheck answer carries the
        support header like every other answer. Without it, the first large PUT a proxy
        worker sends to a server went the plain way, and that server computed the MD5 itself
        (a fresh worker, or one that had seen no answer from that server yet). A server that
        does not answer within the connect timeout is simply not trailed."""
        todo: dict[str, Device] = {}
        for node in nodes:
            server = _server(node)
            if not self.trailer_servers.takes(node) and server not in self._probed:
                self._probed.add(server)
                todo[server] = node
        if todo:
            await asyncio.gather(*(self._probe(node) for node in todo.values()))

    async def _probe(self, node: Device) -> None:
        timeout = aiohttp.ClientTimeout(total=self.conn_timeout_s)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with self.session.get(
                self.url(node, "/healthcheck"), timeout=timeout, allow_redirects=False
            ) as r:
                self.learn(node, r.headers)

    def forget_trailer(self, node: Device) -> None:
        """The node mishandled a trailer (a downgrade): plain PUTs until it says otherwise."""
        self.trailer_servers.forget(node)

    # -- node choice -------------------------------------------------------------------
    def nodes(self, ring: Ring, part: int) -> Iterator[Device]:
        """Primaries not error-limited (by default in a random order, so reads spread over
        the replicas: [proxy] read_order), then handoffs; at most 2 x replicas nodes."""
        return iter_nodes(ring, part, self.errors, shuffle=self.shuffle_reads)

    def url(self, node: Device, path: str, query: Mapping[str, str] | None = None) -> URL:
        u = URL(f"http://{node.ip}:{node.port}{path}", encoded=True)
        return u.update_query(query) if query else u

    def _timeout(self, read_s: float | None = None) -> aiohttp.ClientTimeout:
        read_s = read_s or self.node_timeout_s
        timeout = self._timeouts.get(read_s)
        if timeout is None:  # a handful of distinct values: each built once
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.conn_timeout_s, sock_read=read_s
            )
            if len(self._timeouts) < _TIMEOUTS_CACHED_MAX:
                self._timeouts[read_s] = timeout
        return timeout

    def base_headers(self) -> CIMultiDict[str]:
        return CIMultiDict({"X-Trans-Id": request_id.get()})

    # -- one request -------------------------------------------------------------------
    async def call(
        self,
        node: Device,
        method: str,
        path: str,
        headers: Mapping[str, str],
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Resp:
        """One small request to one node; connection trouble becomes a 503 Resp.

        A pooled keep-alive connection that the node closed (it restarted) is retried once
        on a new connection (by the pool).
        """
        key = node_key(node)
        target = str(URL(path, encoded=True).update_query(query)) if query else path
        items = list(headers.items())
        if body is not None and not any(k.lower() == "content-type" for k, _v in items):
            items.append(("Content-Type", "application/octet-stream"))  # as aiohttp did
        if _object_put(method, path, body):
            pool = self.put_pool
        elif _object_read(method, path, body) and _lane_read(method, headers):
            pool = self.read_pool
        else:
            pool = self.pool
        try:
            r = await pool.request(
                node.ip, node.port, method, target, items, body, timeout_s=self.node_timeout_s
            )
        except (LeanHTTPError, TimeoutError, OSError) as e:
            if isinstance(e, BodyTooLarge) and pool is self.read_pool:
                # An object server that ignores BODY_MAX_HEADER (from before it) sent a large
                # body whole: taken as withheld, so read_object streams it from that node.
                return Resp(204, CIMultiDict({WITHHELD_HEADER: "?"}), b"", node)
            self.errors.error(key)
            log.warning(
                "node request failed",
                extra={
                    "fields": {
                        "node": f"{node.ip}:{node.port}/{node.device}",
                        "method": method,
                        "error": type(e).__name__,
                    }
                },
            )
            return Resp(503, CIMultiDict(), b"", node)
        self.learn(node, r.headers)
        if r.status == 507:
            self.errors.limit_now(key)
        elif r.status >= 500:
            self.errors.error(key)
        return Resp(r.status, r.headers, r.body, node)

    # -- fan-out -----------------------------------------------------------------------
    async def write_all(
        self,
        ring: Ring,
        part: int,
        method: str,
        path_for: Callable[[Device], str],
        headers_for: Callable[[int, Device], Mapping[str, str]],
        body: bytes | None = None,
    ) -> list[Resp]:
        """Send a write to every replica; a failing primary is replaced by the next handoff."""
        n = len(ring.get_part_nodes(part))
        node_iter = self.nodes(ring, part)
        lock = asyncio.Lock()

        async def next_node() -> Device | None:
            async with lock:
                return next(node_iter, None)

        async def one(i: int) -> Resp:
            last = Resp(503, CIMultiDict())
            while True:
                node = await next_node()
                if node is None:
                    return last
                last = await self.call(
                    node, method, path_for(node), headers_for(i, node), body=body
                )
                if last.status not in _RETRY_ELSEWHERE:
                    return last

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def read_first(
        self,
        ring: Ring,
        part: int,
        method: str,
        path_for: Callable[[Device], str],
        headers: Mapping[str, str],
        query: Mapping[str, str] | None = None,
        accept: Callable[[Resp], bool] | None = None,
        *,
        tombstones_win: bool = False,
    ) -> Resp:
        """Ask nodes one after another; the first good answer wins.

        A 404 from one primary is not final (it may have missed the write): the others are
        asked too. When none has it, the answer is 404 if any node said so, else 503. With
        `tombstones_win` (objects), a good answer older than a deletion an earlier node
        reported (404 with X-Backend-Timestamp) is stale and counts as that 404.
        """
        ok = accept or (lambda r: r.status < 400 or r.status in (412, 416))
        seen_404: Resp | None = None
        deleted: Timestamp | None = None
        primaries_asked = 0
        for node in self.nodes(ring, part):
            r = await self.call(node, method, path_for(node), headers, query=query)
            if ok(r) and not (tombstones_win and stale_after(r.headers, deleted)):
                return r
            primaries_asked += 1
            if tombstones_win:
                gone = deletion_time(r.status, r.headers)
                if gone is not None and (deleted is None or gone > deleted):
                    deleted = gone
            if r.status == 404:
                seen_404 = seen_404 or r
                # Once every primary says 404, handoffs are only worth asking if some failed.
                if primaries_asked >= len(ring.get_part_nodes(part)) and seen_404 is r:
                    continue
        if seen_404 is not None:
            return seen_404
        return Resp(503, CIMultiDict())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pool.close()
        with contextlib.suppress(Exception):
            await self.put_pool.close()
        with contextlib.suppress(Exception):
            await self.read_pool.close()
        with contextlib.suppress(Exception):
            await self.session.close()


def _lane_read(method: str, headers: Mapping[str, str]) -> bool:
    """A read the object server's fast lane takes: a HEAD, or a GET naming its body limit;
    no Range with more than one spec."""
    if "," in headers.get("Range", ""):
        return False
    return method == "HEAD" or BODY_MAX_HEADER in headers


async def read_object(
    backend: Backend,
    ring: Ring,
    part: int,
    path_for: Callable[[Device], str],
    headers: Mapping[str, str],
    nodes: Iterator[Device] | None = None,
) -> tuple[aiohttp.ClientResponse | None, Resp]:
    """An object GET as `open_stream` answers it, with the same node order, tombstone rule
    and error limiting, but a body of at most WHOLE_GET_BYTES_MAX is read whole on the lean
    read pool (the summary's body; no open response). A node that withholds a longer body
    (204 with WITHHELD_HEADER) is asked again by `open_stream`, which streams it. A GET with
    more than one range goes to `open_stream` directly."""
    node_iter = nodes if nodes is not None else backend.nodes(ring, part)
    if "," in headers.get("Range", ""):
        return await open_stream(backend, ring, part, "GET", path_for, headers, node_iter)
    whole = CIMultiDict(headers)
    whole[BODY_MAX_HEADER] = str(WHOLE_GET_BYTES_MAX)
    seen_404: Resp | None = None
    deleted: Timestamp | None = None  # the newest deletion a node reported (a 404 tombstone)
    for node in node_iter:
        r = await backend.call(node, "GET", path_for(node), whole)
        if r.status < 400 or r.status in (412, 416):
            if stale_after(r.headers, deleted):
                continue  # a copy older than a deletion another node reported
            if r.status == 204 and WITHHELD_HEADER in r.headers:
                return await open_stream(
                    backend,
                    ring,
                    part,
                    "GET",
                    path_for,
                    headers,
                    itertools.chain((node,), node_iter),
                    seen_404=seen_404,
                    deleted=deleted,
                )
            return None, r
        # (Backend.call counted a failure, 507 or 5xx against the node already.)
        if r.status == 404:
            seen_404 = seen_404 or r
            gone = deletion_time(404, r.headers)
            if gone is not None and (deleted is None or gone > deleted):
                deleted = gone
    return None, seen_404 or Resp(503, CIMultiDict())


async def open_stream(
    backend: Backend,
    ring: Ring,
    part: int,
    method: str,
    path_for: Callable[[Device], str],
    headers: Mapping[str, str],
    nodes: Iterator[Device] | None = None,
    *,
    seen_404: Resp | None = None,
    deleted: Timestamp | None = None,
) -> tuple[aiohttp.ClientResponse | None, Resp]:
    """Like read_first, but leaves a good response open so its body can be streamed.

    Returns (open response, summary); the summary's node is the one that answered. The
    caller must release the open response. `nodes` (default: the part's nodes) is left
    positioned after that node, so a caller can go on to the next replicas. `seen_404` and
    `deleted` (the newest deletion a node reported, a 404 tombstone) carry on what earlier
    nodes answered (`read_object`).
    """
    for node in nodes if nodes is not None else backend.nodes(ring, part):
        key = node_key(node)
        try:
            try:
                r = await backend.session.request(
                    method,
                    backend.url(node, path_for(node)),
                    headers=headers,
                    timeout=backend._timeout(),
                    allow_redirects=False,
                )
            except aiohttp.ClientError as e:
                if not stale_connection(e):
                    raise
                r = await backend.session.request(
                    method,
                    backend.url(node, path_for(node)),
                    headers=headers,
                    timeout=backend._timeout(),
                    allow_redirects=False,
                )
        except (aiohttp.ClientError, TimeoutError, OSError):
            backend.errors.error(key)
            continue
        backend.learn(node, r.headers)
        if r.status < 400 or r.status in (412, 416):
            if not stale_after(r.headers, deleted):
                return r, Resp(r.status, r.headers, b"", node)
            r.release()  # a copy older than a deletion another node reported: stale
            continue
        body = await r.read()
        r.release()
        if r.status == 507:
            backend.errors.limit_now(key)
        elif r.status >= 500:
            backend.errors.error(key)
        elif r.status == 404:
            seen_404 = seen_404 or Resp(404, r.headers, body, node)
            gone = deletion_time(404, r.headers)
            if gone is not None and (deleted is None or gone > deleted):
                deleted = gone
    return None, seen_404 or Resp(503, CIMultiDict())
