"""MemoryOps: an in-memory twin of proxy.ops.Ops, covering the calls the S3 front makes.

It lets the S3 front be driven by real boto3 over real loopback sockets without a storage
cluster. It mirrors Ops' observable contract (statuses, which headers are kept, sysmeta
hidden from object reads but visible in container_info, SLO expansion through the real
proxy/largeobj.py); tests against the real cluster live with the integration tests.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from multidict import CIMultiDict

from common.clock import Clock
from proxy import largeobj
from proxy.ranges import parse_single_range

_PERSIST = (
    "content-type", "content-encoding", "content-disposition", "content-language",
    "cache-control", "expires", "x-static-large-object",
)  # fmt: skip


@dataclass
class MemResult:
    status: int
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None

    async def close(self) -> None:
        self.stream = None

    async def read_all(self, limit_bytes: int = 64 << 20) -> bytes:
        if self.stream is None:
            return self.body
        out = bytearray()
        async for chunk in self.stream:
            out += chunk
            if len(out) > limit_bytes:
                raise ValueError("too big")
        return bytes(out)


@dataclass(frozen=True)
class MemContainerInfo:
    status: int
    read_acl: str = ""
    write_acl: str = ""
    object_count: int = 0
    bytes_used: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MemAccountInfo:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Obj:
    data: bytes
    headers: CIMultiDict[str]
    etag: str
    when: float


@dataclass
class _Container:
    headers: CIMultiDict[str]
    when: float
    objects: dict[str, _Obj] = field(default_factory=dict)


async def _stream(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 65536):
        yield data[i : i + 65536]


def _http_date(when: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(when) + 1, UTC), usegmt=True)


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


class MemoryOps:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.containers: dict[tuple[str, str], _Container] = {}
        self.puts_aborted = 0

    def invalidate(self, account: str, container: str | None = None) -> None:
        return None

    # -- accounts and containers ------------------------------------------------------
    async def account_info(self, account: str) -> MemAccountInfo:
        return MemAccountInfo(200)

    async def get_account(self, account: str, query: Mapping[str, str]) -> MemResult:
        names = sorted(c for a, c in self.containers if a == account)
        marker = query.get("marker", "")
        rows = [
            {"name": n, "count": len(self.containers[(account, n)].objects), "bytes": 0,
             "last_modified": _iso(self.containers[(account, n)].when)}
            for n in names if n > marker
        ][: int(query.get("limit", "10000"))]  # fmt: skip
        return MemResult(200, CIMultiDict(), json.dumps(rows).encode())

    async def container_info(
        self, account: str, container: str, *, fresh: bool = False
    ) -> MemContainerInfo:
        del fresh  # nothing is cached here: every read is fresh
        c = self.containers.get((account, container))
        if c is None:
            return MemContainerInfo(404)
        return MemContainerInfo(
            200,
            read_acl=c.headers.get("X-Container-Read", ""),
            write_acl=c.headers.get("X-Container-Write", ""),
            object_count=len(c.objects),
            headers=dict(c.headers),
        )

    async def head_container(self, account: str, container: str) -> MemResult:
        return MemResult(204 if (account, container) in self.containers else 404)

    async def put_container(
        self, account: str, container: str, headers: Mapping[str, str]
    ) -> MemResult:
        existing = self.containers.get((account, container))
        if existing is None:
            self.containers[(account, container)] = _Container(
                CIMultiDict(headers), self.clock.time()
            )
            return MemResult(201)
        existing.headers.update(headers)
        return MemResult(202)

    async def post_container(
        self, account: str, container: str, headers: Mapping[str, str]
    ) -> MemResult:
        existing = self.containers.get((account, container))
        if existing is None:
            return MemResult(404)
        existing.headers.update(headers)
        return MemResult(204)

    async def delete_container(
        self, account: str, container: str, headers: Mapping[str, str]
    ) -> MemResult:
        existing = self.containers.get((account, container))
        if existing is None:
            return MemResult(404)
        if existing.objects:
            return MemResult(409)
        del self.containers[(account, container)]
        return MemResult(204)

    async def get_container(
        self, account: str, container: str, query: Mapping[str, str]
    ) -> MemResult:
        c = self.containers.get((account, container))
        if c is None:
            return MemResult(404)
        prefix, delim = query.get("prefix", ""), query.get("delimiter", "")
        marker, limit = query.get("marker", ""), int(query.get("limit", "10000"))
        rows: list[dict[str, object]] = []
        for name in sorted(c.objects, key=lambda n: n.encode()):
            if not name.startswith(prefix) or name.encode() <= marker.encode():
                continue
            rest = name[len(prefix) :]
            if delim and delim in rest:
                sub = prefix + rest[: rest.index(delim) + len(delim)]
                if sub.encode() <= marker.encode() or (rows and rows[-1].get("subdir") == sub):
                    continue
                rows.append({"subdir": sub})
            else:
                o = c.objects[name]
                rows.append({"name": name, "bytes": len(o.data), "hash": o.etag,
                             "last_modified": _iso(o.when),
                             "content_type": o.headers.get("Content-Type", "")})  # fmt: skip
            if len(rows) >= limit:
                break
        return MemResult(200, CIMultiDict(), json.dumps(rows).encode())

    # -- objects ----------------------------------------------------------------------
    def _obj(self, account: str, container: str, obj: str) -> _Obj | None:
        c = self.containers.get((account, container))
        return None if c is None else c.objects.get(obj)

    def _headers(self, o: _Obj) -> CIMultiDict[str]:
        h: CIMultiDict[str] = CIMultiDict()
        for k, v in o.headers.items():
            if not k.lower().startswith("x-object-sysmeta-"):
                h.add(k, v)
        h["Content-Length"] = str(len(o.data))
        h["Etag"] = f'"{o.etag}"'
        h["Last-Modified"] = _http_date(o.when)
        return h

    async def head_object(
        self, account: str, container: str, obj: str, headers: Mapping[str, str] | None = None
    ) -> MemResult:
        o = self._obj(account, container, obj)
        return MemResult(404) if o is None else MemResult(200, self._headers(o))

    async def get_object_raw(
        self, account: str, container: str, obj: str, headers: Mapping[str, str] | None = None
    ) -> MemResult:
        o = self._obj(account, container, obj)
        if o is None:
            return MemResult(404)
        h = self._headers(o)
        rng = (headers or {}).get("Range")
        if rng:
            r = parse_single_range(rng, len(o.data))
            if r is None:
                h["Content-Range"] = f"bytes */{len(o.data)}"
                return MemResult(416, h)
            h["Content-Range"] = f"bytes {r[0]}-{r[1]}/{len(o.data)}"
            h["Content-Length"] = str(r[1] - r[0] + 1)
            return MemResult(206, h, b"", _stream(o.data[r[0] : r[1] + 1]))
        return MemResult(200, h, b"", _stream(o.data))

    async def get_object(
        self,
        account: str,
        container: str,
        obj: str,
        headers: Mapping[str, str] | None = None,
        manifest: bool = False,
    ) -> MemResult:
        if manifest:
            return await self.get_object_raw(account, container, obj, headers)
        res = await largeobj.get_with_manifests(self, account, container, obj, headers or {})  # type: ignore[arg-type]
        return res  # type: ignore[return-value]

    async def put_object(
        self,
        account: str,
        container: str,
        obj: str,
        headers: Mapping[str, str],
        body: AsyncIterator[bytes],
    ) -> MemResult:
        c = self.containers.get((account, container))
        if c is None:
            return MemResult(404)
        data = bytearray()
        try:
            async for chunk in body:
                data += chunk
        except BaseException:
            self.puts_aborted += 1
            raise
        kept: CIMultiDict[str] = CIMultiDict()
        for k, v in headers.items():
            lk = k.lower()
            if lk in _PERSIST or lk.startswith(("x-object-meta-", "x-object-sysmeta-")):
                kept[k] = v
        if "Content-Type" not in kept:
            kept["Content-Type"] = mimetypes.guess_type(obj)[0] or "application/octet-stream"
        etag = hashlib.md5(data).hexdigest()
        when = self.clock.time()
        c.objects[obj] = _Obj(bytes(data), kept, etag, when)
        return MemResult(201, CIMultiDict({"Etag": etag, "Last-Modified": _http_date(when)}))

    async def delete_object(
        self, account: str, container: str, obj: str, headers: Mapping[str, str] | None = None
    ) -> MemResult:
        c = self.containers.get((account, container))
        if c is None or obj not in c.objects:
            return MemResult(404)
        del c.objects[obj]
        return MemResult(204)

    async def copy_object(
        self,
        src: tuple[str, str, str],
        dst: tuple[str, str, str],
        headers: Mapping[str, str],
        *,
        fresh_metadata: bool = False,
        manifest: bool = False,
        src_headers: Mapping[str, str] | None = None,
    ) -> MemResult:
        source = await self.get_object(*src)
        if source.status >= 300 or source.stream is None:
            return MemResult(source.status)
        h: CIMultiDict[str] = CIMultiDict()
        if not fresh_metadata:
            for k, v in source.headers.items():
                if k.lower().startswith("x-object-meta-") or k.lower() in _PERSIST[:6]:
                    h[k] = v
        h.update(headers)
        return await self.put_object(*dst, headers=h, body=source.stream)
