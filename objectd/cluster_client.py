"""Ring-aware client for whole, modest-sized objects, straight to object servers. INTERFACE READY.

For services that keep their own data as objects without going through the public proxy
(blockd's volume chunks, leases, records). Semantics:

* `put` writes to every replica (a failing primary is replaced by a handoff) and returns
  only when a quorum answered 201, i.e. each of them fsynced the data, and every replica that
  stored it answered the same ETag (MD5 of what it received); else it raises `QuorumError`.
  No ETag is sent unless the caller gives one: the replicas' answers are compared instead.
* `get` asks every primary at once and returns the NEWEST version among the answers (by
  X-Timestamp, a tombstone counting as a version), so a replica that missed an overwrite is
  never read alone; a quorum of primaries must answer, else `QuorumError`. If primaries fail
  it also asks handoffs. Only one node is asked for the body (GET), the others for headers
  (HEAD); if a HEAD shows a newer version, the body is then fetched from that node.
* `get` with `byte_range=(first, last)` (inclusive) asks for those bytes only (a Range
  header; the newest answer is chosen the same way); the body is shorter when the object
  ends before `last`, and empty when it ends before `first`.
* `get(..., known_version=v)`, where `v` is what `put_versioned` answered for the caller's
  own last write of the object: one node is asked first, and if it holds exactly `v` that is
  the answer (only for a single writer, e.g. blockd under its lease: nothing newer can
  exist); anything else falls back to the quorum read above.
* `delete` writes a tombstone with quorum; `head` is `get` without the body.
* `post` replaces the object's user metadata (X-Object-Meta-*).

No container updates are sent: these objects are not listed.

A GET asks for the body whole in the answer (`BODY_MAX_HEADER`, the object server's fast lane:
objectd/smallget.py); a body longer than the server answers that way (1 MiB) is withheld
(204 with `WITHHELD_HEADER`) and asked for again from the same node without the header, and
later whole-object GETs in that container ask without it at once.

Requests go over the lean HTTP client (`common.leanhttp.LeanPool`, docs/lean-http-client.md):
whole-bytes bodies both ways, keep-alive connections per object server. Connection trouble
and timeouts answer 503 (and count against the node in the error limiter).

Calls: ObjectCluster(ring, clock, conn_timeout_s=..., node_timeout_s=..., pool=None,
                    etag_xxh3=False)
  await close()  (the connections of the pools it made; not a pool given to it)
  await put(account, container, obj, data: bytes, headers=None) -> str (etag)
  await put_versioned(account, container, obj, data, headers=None) -> (etag, version)
  await get(account, container, obj, byte_range=None, known_version=None)
      -> (headers, body) | None
  await head(account, container, obj) -> headers | None
  await delete(account, container, obj) -> None
  await post(account, container, obj, headers) -> bool (False if the object is missing)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import xxhash
from multidict import CIMultiDict

from common.clock import Clock
from common.leanhttp import Body, InvalidRequest, LeanHTTPError, LeanPool
from common.log import request_id
from common.nodes import ErrorLimiter, iter_nodes, node_key
from common.puttrailer import (
    TRAILER_VERSION,
    TRAILER_VERSION_XXH3_ETAG,
    PutTrailer,
    TrailerServers,
    encode_trailer,
    trailed_headers,
)
from common.timestamps import Timestamp, TimestampError
from common.wholebody import BODY_MAX_HEADER, WHOLE_BODY_BYTES_MAX, WITHHELD_HEADER
from ring import Device, Ring

__all__ = ["ObjectCluster", "QuorumError"]


class QuorumError(Exception):
    """Too few replicas answered; the operation may or may not have taken effect."""


@dataclass
class _Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    node: Device | None
    has_body: bool = False  # a GET's answer (a HEAD's has headers only)
    # A PUT's: the ETag the trailer sent told the server to store ("": none sent, the
    # server stored the MD5 of what it received).
    trailer_etag: str = ""
    # A GET's: the body was withheld on the fast lane and asked for again without the limit.
    withheld: bool = False


# Answers that say what the newest version is: the object (whole, a range of it, or a range
# past its end) or its absence.
_FOUND = (200, 206, 416)
_DEFINITE = (*_FOUND, 404)


# Bodies of at least this many bytes are hashed here once and sent with the ETag trailer to
# the servers that take it (docs/object-format.md, "PUT ETag trailer"), instead of being
# hashed by every replica.
TRAILER_BODY_BYTES_MIN = 64 * 1024
# Requests in flight to one object server (each on its own keep-alive connection).
CONNECTIONS_PER_NODE_MAX = 64
# The longest answer body taken (a GET of a whole object); longer ones count as a failed node.
RESPONSE_BYTES_MAX = 64 * 1024 * 1024
# GETs say how long a body they take whole in the answer (BODY_MAX_HEADER, common/wholebody.py),
# so the object server answers them on its fast lane; it withholds a longer body (204 with
# WITHHELD_HEADER) and the GET is asked again without the header. The servers cap the limit
# at WHOLE_BODY_BYTES_MAX (1 MiB): a longer range is asked for without it.
# Containers whose GETs were withheld (a volume of 2 or 4 MiB chunks): later GETs there ask
# without the limit at once, saving the 204 exchange. At most this many are remembered.
WITHHELD_CONTAINERS_MAX = 4096


@dataclass(frozen=True)
class _Trailer:
    etag: str  # what a server given this trailer stores: the MD5, or the xxh3-128 (v2)
    version: int
    encoded: bytes


def _hash_body(data: bytes, *, md5: bool = True) -> _Trailer:
    """MD5 and xxh3-128 of `data` and the trailer carrying them; with `md5=False` the xxh3-128
    only, in a version 2 trailer whose ETag it is (blocking: hashlib and xxhash release the
    GIL on large buffers, so this runs in a thread). A trailed PUT sends the body and then
    the trailer as two parts: the body is never copied."""
    md5_hex = hashlib.md5(data).hexdigest() if md5 else ""
    xxh_hex = xxhash.xxh3_128_hexdigest(data)
    t = PutTrailer("commit", len(data), md5_hex, xxh_hex)
    return _Trailer(t.etag, t.version, encode_trailer(t))


async def _etags_agree(stored: list[_Answer], data: bytes, trailer: _Trailer | None) -> bool:
    """Every replica answers the ETag it stored: the MD5 of what it received (a plain PUT),
    or the trailer's after checking the xxh3-128 of what it received against the trailer's
    (a trailed one). Each must be the one expected (as Swift's proxy checks), so a body
    damaged on its way to a replica is caught: the trailer's ETag, or for a plain PUT the
    MD5 (hashed here for a version 1 trailer; computed now only if a version 2 PUT went
    plain to a server not known to take it, e.g. a handoff). Without a trailer (a small
    body) the replicas' ETags must simply agree."""
    etags = [_etag(x.headers) for x in stored]
    if "" in etags:
        return False
    if trailer is None:
        return len(set(etags)) == 1
    plain = {e for x, e in zip(stored, etags, strict=True) if not x.trailer_etag}
    if any(x.trailer_etag and x.trailer_etag != e for x, e in zip(stored, etags, strict=True)):
        return False
    if not plain:
        return True
    md5 = trailer.etag if trailer.version == TRAILER_VERSION else None
    if md5 is None:
        md5 = await asyncio.to_thread(lambda: hashlib.md5(data).hexdigest())
    return plain == {md5}


def _etag(h: Mapping[str, str]) -> str:
    return h.get("ETag", "").strip().strip('"').lower()


def _quorum(n: int) -> int:
    return n // 2 + 1


def _ts(h: Mapping[str, str]) -> Timestamp:
    for key in ("X-Backend-Timestamp", "X-Timestamp"):
        v = h.get(key)
        if v:
            try:
                return Timestamp.parse(v)
            except TimestampError:
                continue
    return Timestamp(0)


class ObjectCluster:
    def __init__(
        self,
        ring: Ring,
        clock: Clock,
        *,
        conn_timeout_s: float = 0.5,
        node_timeout_s: float = 10.0,
        limiter: ErrorLimiter | None = None,
        pool: LeanPool | None = None,
        etag_xxh3: bool = False,
    ) -> None:
        """`conn_timeout_s` bounds making a connection (the pool's, when one is given);
        `node_timeout_s` one request's exchange with a node (sending it and its whole answer).
        Without a `pool`, one is made here (and closed by `close`). With `etag_xxh3`, a PUT
        of at least TRAILER_BODY_BYTES_MIN bytes whose primaries all take version 2 trailers
        is stored with the body's xxh3-128 as its ETag and no MD5 is computed (blockd's
        chunk objects, which no client sees: docs/object-format.md, "ETag algorithms")."""
        self.ring = ring
        self.clock = clock
        self.limiter = limiter or ErrorLimiter(clock)
        self.node_timeout_s = node_timeout_s
        self._owns_pool = pool is None
        self.pool = pool or LeanPool(
            connect_timeout_s=conn_timeout_s,
            connections_per_host_max=CONNECTIONS_PER_NODE_MAX,
            body_bytes_max=RESPONSE_BYTES_MAX,
        )
        # GETs that take the body whole, and HEADs: the object server's fast lane answers
        # them, but hands a connection to aiohttp for good at its first request the lane does
        # not take (a POST, a DELETE, a streamed GET or a PUT over 1 MiB), so these keep
        # connections of their own, with the same settings, always closed by `close`.
        self.read_pool = LeanPool(
            connect_timeout_s=self.pool.connect_timeout_s,
            connections_per_host_max=self.pool.connections_per_host_max,
            idle_timeout_s=self.pool.idle_timeout_s,
            header_bytes_max=self.pool.header_bytes_max,
            body_bytes_max=self.pool.body_bytes_max,
        )
        self.etag_xxh3 = etag_xxh3
        self._last = Timestamp(0)
        # Object servers seen to take the ETag trailer.
        self.trailer_servers = TrailerServers()
        # Reads start at a random primary (spreads them over the servers); tests that need
        # to know which replica is asked first turn it off.
        self.shuffle_reads = True
        # (account, container)s whose GETs were withheld, oldest first (WITHHELD_CONTAINERS_MAX).
        self._withheld: dict[tuple[str, str], None] = {}

    async def close(self) -> None:
        """Close the connections of the pools made here (a pool given to it is the giver's)."""
        await self.read_pool.close()
        if self._owns_pool:
            await self.pool.close()

    def _timestamp(self) -> Timestamp:
        ts = Timestamp.from_float(self.clock.time())
        if ts <= self._last:
            ts = Timestamp(self._last.ticks + 1)
        self._last = ts
        return ts

    def _url(self, node: Device, part: int, a: str, c: str, o: str) -> str:
        """The request target (percent-encoded path) of the object on `node`."""
        from objectd.client import object_url

        return object_url("", node.device, part, a, c, o)

    async def _call(
        self,
        node: Device,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        trailer: _Trailer | None = None,
    ) -> _Answer:
        """One request to one node; connection trouble, a timeout or a bad answer is a 503.
        A header that cannot be sent (a control character) raises `InvalidRequest`."""
        h = CIMultiDict(headers)
        h["X-Trans-Id"] = request_id.get()
        trailer_etag = ""
        if (
            body is not None
            and trailer is not None
            and len(body) >= TRAILER_BODY_BYTES_MIN
            and self.trailer_servers.takes(node, trailer.version)
        ):
            h = trailed_headers(h, len(body), trailer.version)
            payload: Body | None = (body, trailer.encoded)
            trailer_etag = trailer.etag
        else:
            payload = body
        pool = self.read_pool if method == "HEAD" or BODY_MAX_HEADER in h else self.pool
        request = pool.request(
            node.ip, node.port, method, target, h, payload, timeout_s=self.node_timeout_s
        )
        try:
            if asyncio.current_task() is None:
                # Driven outside a task (blockd starts SCSI commands eagerly, as plain
                # coroutines): the pool's connect timeout (asyncio.timeout) needs one.
                r = await asyncio.ensure_future(request)
            else:
                r = await request
        except InvalidRequest:
            raise  # the caller's headers, not the node
        except (LeanHTTPError, TimeoutError, OSError):
            self.limiter.error(node_key(node))
            return _Answer(503, CIMultiDict(), b"", node)
        self.trailer_servers.learn(node, r.headers)
        if (
            r.status == 400
            and trailer is not None
            and trailer_etag
            and trailer.version != TRAILER_VERSION
        ):
            # A server refusing the version 2 trailer (rolled back to one taking version 1
            # only): forget that it takes it and send this replica the body plain, once.
            self.trailer_servers.forget(node, trailer.version)
            return await self._call(node, method, target, headers, body, trailer)
        if method == "GET" and r.status == 204 and WITHHELD_HEADER in r.headers:
            if BODY_MAX_HEADER not in headers:  # asked for no limit: not an answer to a GET
                self.limiter.error(node_key(node))
                return _Answer(503, CIMultiDict(), b"", node)
            rest = {k: v for k, v in headers.items() if k != BODY_MAX_HEADER}
            again = await self._call(node, method, target, rest)
            again.withheld = True
            return again
        if r.status == 507:
            self.limiter.limit_now(node_key(node))
        elif r.status >= 500:
            self.limiter.error(node_key(node))
        return _Answer(r.status, r.headers, r.body, node, method == "GET", trailer_etag)

    async def _write(
        self,
        method: str,
        a: str,
        c: str,
        o: str,
        headers: Mapping[str, str],
        body: bytes | None,
        ok: tuple[int, ...],
        trailer: _Trailer | None = None,
    ) -> list[_Answer]:
        part = self.ring.get_part(a, c, o)
        nodes = iter_nodes(self.ring, part, self.limiter)
        lock = asyncio.Lock()

        async def one() -> _Answer:
            last = _Answer(503, CIMultiDict(), b"", None)
            while True:
                async with lock:
                    node = next(nodes, None)
                if node is None:
                    return last
                url = self._url(node, part, a, c, o)
                last = await self._call(node, method, url, headers, body, trailer)
                if last.status < 500:
                    return last

        n = len(self.ring.get_part_nodes(part))
        answers = list(await asyncio.gather(*(one() for _ in range(n))))
        if sum(1 for x in answers if x.status in ok) < _quorum(n):
            codes = sorted(x.status for x in answers)
            raise QuorumError(f"{method} /{a}/{c}/{o}: replicas answered {codes}")
        return answers

    async def put(
        self,
        account: str,
        container: str,
        obj: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        etag, _ = await self.put_versioned(account, container, obj, data, headers)
        return etag

    async def put_versioned(
        self,
        account: str,
        container: str,
        obj: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[str, str]:
        """`put`, also answering the version written (its X-Timestamp, internal form), which
        a later `get(..., known_version=)` can use."""
        h = CIMultiDict(headers or {})
        h.setdefault("Content-Type", "application/octet-stream")
        h["Content-Length"] = str(len(data))
        version = self._timestamp().internal
        h["X-Timestamp"] = version
        trailer = None
        if len(data) >= TRAILER_BODY_BYTES_MIN:
            md5 = not (self.etag_xxh3 and self._all_take_xxh3(account, container, obj))
            trailer = await asyncio.to_thread(_hash_body, data, md5=md5)
        answers = await self._write("PUT", account, container, obj, h, data, (201,), trailer)
        stored = [x for x in answers if x.status == 201]
        if not await _etags_agree(stored, data, trailer):
            etags = sorted(_etag(x.headers) for x in stored)
            raise QuorumError(f"PUT /{account}/{container}/{obj}: replicas stored {etags}")
        if trailer is not None and any(x.trailer_etag for x in stored):
            return trailer.etag, version
        return _etag(stored[0].headers), version

    def _all_take_xxh3(self, account: str, container: str, obj: str) -> bool:
        """Every primary of the object is known to take version 2 trailers."""
        nodes = self.ring.get_part_nodes(self.ring.get_part(account, container, obj))
        return all(self.trailer_servers.takes(n, TRAILER_VERSION_XXH3_ETAG) for n in nodes)

    async def delete(self, account: str, container: str, obj: str) -> None:
        h = {"X-Timestamp": self._timestamp().internal}
        await self._write("DELETE", account, container, obj, h, None, (204, 404))

    async def post(
        self, account: str, container: str, obj: str, headers: Mapping[str, str]
    ) -> bool:
        h = CIMultiDict(headers)
        h["X-Timestamp"] = self._timestamp().internal
        answers = await self._write("POST", account, container, obj, h, None, (202, 404))
        return sum(1 for x in answers if x.status == 202) >= _quorum(len(answers))

    async def _read(
        self, method: str, a: str, c: str, o: str, headers: Mapping[str, str]
    ) -> _Answer | None:
        part = self.ring.get_part(a, c, o)
        n = len(self.ring.get_part_nodes(part))
        nodes = list(iter_nodes(self.ring, part, self.limiter, shuffle=self.shuffle_reads))
        answers: list[_Answer] = []
        asked = 0
        # Ask nodes in waves until a quorum gave a definite answer (2xx or 404). A GET fetches
        # the body from one node and asks the others for headers only (HEAD): the timestamps
        # still pick the newest version, without moving the body n times.
        while asked < len(nodes):
            need = _quorum(n) - sum(1 for x in answers if x.status in _DEFINITE)
            if need <= 0:
                break
            wave = nodes[asked : asked + max(need, n - asked if asked == 0 else need)]
            body_wanted = method == "GET" and not any(x.has_body for x in answers)
            asked += len(wave)
            answers += await asyncio.gather(
                *(
                    self._call(
                        node,
                        "GET" if body_wanted and i == 0 else "HEAD",
                        self._url(node, part, a, c, o),
                        headers if body_wanted and i == 0 else {},
                    )
                    for i, node in enumerate(wave)
                )
            )
        definite = [x for x in answers if x.status in _DEFINITE]
        if len(definite) < _quorum(n):
            codes = sorted(x.status for x in answers)
            raise QuorumError(f"{method} /{a}/{c}/{o}: replicas answered {codes}")
        newest = max(definite, key=lambda x: (_ts(x.headers), x.status in _FOUND, x.has_body))
        if method == "GET" and newest.status in _FOUND and not newest.has_body:
            newest = await self._fetch_newest(newest, part, a, c, o, headers)
        return newest if newest.status in _FOUND else None

    async def _fetch_newest(
        self, newest: _Answer, part: int, a: str, c: str, o: str, headers: Mapping[str, str]
    ) -> _Answer:
        """The body of the newest version, which only a HEAD answer showed: GET it there."""
        assert newest.node is not None
        ans = await self._call(newest.node, "GET", self._url(newest.node, part, a, c, o), headers)
        if ans.status not in _DEFINITE or _ts(ans.headers) < _ts(newest.headers):
            raise QuorumError(f"GET /{a}/{c}/{o}: newest replica answered {ans.status}")
        return ans

    async def get(
        self,
        account: str,
        container: str,
        obj: str,
        *,
        byte_range: tuple[int, int] | None = None,
        known_version: str | None = None,
    ) -> tuple[CIMultiDict[str], bytes] | None:
        headers: dict[str, str] = {}
        if byte_range is not None:
            first, last = byte_range
            if not 0 <= first <= last:
                raise ValueError(f"bad byte range {byte_range}")
            headers["Range"] = f"bytes={first}-{last}"
            if last - first < WHOLE_BODY_BYTES_MAX:  # else never answered whole: ask as it is
                headers[BODY_MAX_HEADER] = str(WHOLE_BODY_BYTES_MAX)
        elif (account, container) not in self._withheld:
            headers[BODY_MAX_HEADER] = str(WHOLE_BODY_BYTES_MAX)
        ans = None
        if known_version is not None:
            ans = await self._read_known(account, container, obj, headers, known_version)
        if ans is None:
            ans = await self._read("GET", account, container, obj, headers)
            if ans is None:
                return None
        if ans.withheld and byte_range is None:
            self._remember_withheld(account, container)
        if ans.status == 416:
            ans.body = b""  # the range starts past the end of the object
        return ans.headers, ans.body

    def _remember_withheld(self, account: str, container: str) -> None:
        self._withheld[(account, container)] = None
        if len(self._withheld) > WITHHELD_CONTAINERS_MAX:
            del self._withheld[next(iter(self._withheld))]

    async def _read_known(
        self, a: str, c: str, o: str, headers: Mapping[str, str], version: str
    ) -> _Answer | None:
        """Ask one node; its answer is the newest if it holds exactly `version`, the last
        version the caller itself wrote (a single writer knows nothing newer can exist).
        None: not shown, ask a quorum."""
        part = self.ring.get_part(a, c, o)
        node = next(iter_nodes(self.ring, part, self.limiter, shuffle=self.shuffle_reads), None)
        if node is None:
            return None
        ans = await self._call(node, "GET", self._url(node, part, a, c, o), headers)
        if ans.status in _FOUND and _ts(ans.headers) == Timestamp.parse(version):
            return ans
        return None

    async def head(self, account: str, container: str, obj: str) -> CIMultiDict[str] | None:
        ans = await self._read("HEAD", account, container, obj, {})
        return None if ans is None else ans.headers
