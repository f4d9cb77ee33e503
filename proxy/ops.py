"""The proxy's internal operations layer. INTERFACE READY.

Account, container and object operations on the cluster, with Swift's semantics (quorum
writes, handoffs, container updates, account autocreate). The Swift front (proxy/swift.py)
and the S3 front (proxy/s3/) both translate their HTTP requests into these calls, so a bucket
written by S3 is a container readable by Swift and back.

Every call takes already-authorized names (no auth here) and returns a `Result`:
  status, headers (client-facing, backend-internal ones removed), body bytes, and for object
  GETs an open `stream` (async iterator of bytes) that the caller must consume or `close()`.

Large objects: `get_object` expands SLO and DLO manifests unless `manifest=True`
(see proxy/largeobj.py); `put_object` stores what it is given.

Calls:
  head_account(a) / get_account(a, query) / put_account(a, headers) / post_account(a, headers)
  delete_account(a, headers)
  head_container(a, c) / get_container(a, c, query) / put_container(a, c, headers)
  post_container(a, c, headers) / delete_container(a, c, headers)
  container_info(a, c) -> ContainerInfo (cached a few seconds per worker)
  account_info(a) -> AccountInfo
  head_object(a, c, o, headers) / get_object(a, c, o, headers, manifest=False)
  put_object(a, c, o, headers, body: AsyncIterator[bytes]) / post_object(a, c, o, headers)
  delete_object(a, c, o, headers)
  copy_object(src_a, src_c, src_o, dst_a, dst_c, dst_o, headers)
Listing queries are Swift's (prefix, delimiter, marker, end_marker, limit, reverse, format);
ask for format=json to get parseable listings.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator, Mapping, Sequence

import aiohttp
from multidict import CIMultiDict

from common.clock import Clock
from common.timestamps import Timestamp
from proxy.backend import (
    Backend,
    Resp,
    backend_path,
    best_status,
    open_stream,
    quorum_size,
    read_object,
)
from proxy.objput import SMALL_PUT_BYTES_MAX, ClientBodyError, put_buffered, stream_put
from proxy.opstypes import (
    AccountInfo,
    ContainerInfo,
    Result,
    client_headers,
)
from proxy.resume import resuming_body
from ring import Device

__all__ = ["AccountInfo", "ContainerInfo", "Ops", "Result", "WholeBody"]


class WholeBody:
    """The stream of an object GET's body that was read whole (`Result.stream`): yields
    `body` once. Callers that stream take it like any stream; the Swift front answers with
    `body` at once (proxy/swift.py `to_response`)."""

    __slots__ = ("_done", "body")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._done = False

    def __aiter__(self) -> WholeBody:
        return self

    async def __anext__(self) -> bytes:
        if self._done or not self.body:
            raise StopAsyncIteration
        self._done = True
        return self.body


def _small_length(headers: Mapping[str, str]) -> int | None:
    """The declared body length if it is small enough to send without 100-continue."""
    raw = headers.get("Content-Length")
    if raw is None or not raw.isdigit() or "Transfer-Encoding" in headers:
        return None
    n = int(raw)
    return n if n <= SMALL_PUT_BYTES_MAX else None


_CACHE_TTL_S = 3.0

# Headers a client may set on an object and that the object server keeps.
_OBJECT_PERSIST = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-delete-at",
    "x-object-manifest",
    "etag",
)


class Ops:
    def __init__(self, backend: Backend, clock: Clock, *, account_autocreate: bool = True) -> None:
        self.backend = backend
        self.rings = backend.rings
        self.clock = clock
        self.account_autocreate = account_autocreate
        self._cinfo: dict[tuple[str, str], tuple[float, ContainerInfo]] = {}
        self._ainfo: dict[str, tuple[float, AccountInfo]] = {}
        self._last_ts = Timestamp(0)

    # -- helpers -----------------------------------------------------------------------
    def timestamp(self) -> Timestamp:
        """A fresh timestamp, strictly increasing within this worker."""
        ts = Timestamp.from_float(self.clock.time())
        if ts <= self._last_ts:
            ts = Timestamp(self._last_ts.ticks + 1)
        self._last_ts = ts
        return ts

    def _headers(self, extra: Mapping[str, str] | None = None) -> CIMultiDict[str]:
        h = self.backend.base_headers()
        if extra:
            h.update(extra)
        return h

    def invalidate(self, account: str, container: str | None = None) -> None:
        if container is None:
            self._ainfo.pop(account, None)
        else:
            self._cinfo.pop((account, container), None)

    async def _write(
        self,
        kind: str,
        method: str,
        account: str,
        container: str | None,
        obj: str | None,
        headers: Mapping[str, str],
        per_node: Sequence[Mapping[str, str]] | None = None,
    ) -> list[Resp]:
        ring = getattr(self.rings, kind)
        part, _ = ring.get_nodes(account, container, obj)

        def path_for(node: Device) -> str:
            return backend_path(node.device, part, account, container, obj)

        def headers_for(i: int, _node: Device) -> Mapping[str, str]:
            h = CIMultiDict(headers)
            if per_node:
                h.update(per_node[i % len(per_node)])
            return h

        return await self.backend.write_all(ring, part, method, path_for, headers_for)

    def _result_of_writes(self, resps: list[Resp], n: int) -> Result:
        status = best_status([r.status for r in resps], n)
        best = next((r for r in resps if r.status == status), None)
        headers = client_headers(best.headers) if best else CIMultiDict()
        for k in ("Content-Length", "Content-Type"):
            headers.popall(k, None)
        return Result(status, headers)

    async def _read(
        self,
        kind: str,
        method: str,
        account: str,
        container: str | None,
        obj: str | None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Resp:
        ring = getattr(self.rings, kind)
        part, _ = ring.get_nodes(account, container, obj)
        return await self.backend.read_first(
            ring,
            part,
            method,
            lambda node: backend_path(node.device, part, account, container, obj),
            self._headers(headers),
            query=query,
            tombstones_win=kind == "object",
        )

    def _update_targets(
        self, kind: str, account: str, container: str | None
    ) -> list[dict[str, str]]:
        """Per-replica headers telling a storage server which node to update after a write."""
        ring = getattr(self.rings, kind)
        part, nodes = ring.get_nodes(account, container)
        word = "Account" if kind == "account" else "Container"
        return [
            {
                f"X-{word}-Host": f"{n.ip}:{n.port}",
                f"X-{word}-Partition": str(part),
                f"X-{word}-Device": n.device,
            }
            for n in nodes
        ]

    # -- accounts ----------------------------------------------------------------------
    async def account_info(self, account: str, *, fresh: bool = False) -> AccountInfo:
        """The account's status and headers; `fresh` skips this worker's short cache."""
        now = self.clock.monotonic()
        hit = self._ainfo.get(account)
        if hit and hit[0] > now and not fresh:
            return hit[1]
        r = await self._read("account", "HEAD", account, None, None)
        info = AccountInfo(r.status if r.status != 204 else 200, dict(r.headers))
        if info.status == 200:
            self._ainfo[account] = (now + _CACHE_TTL_S, info)
        return info

    async def head_account(self, account: str) -> Result:
        r = await self._read("account", "HEAD", account, None, None)
        if r.status == 404 and self.account_autocreate:
            return Result(204, self._empty_account_headers())
        return Result(204 if r.status == 200 else r.status, client_headers(r.headers))

    def _empty_account_headers(self) -> CIMultiDict[str]:
        return CIMultiDict(
            {
                "X-Account-Container-Count": "0",
                "X-Account-Object-Count": "0",
                "X-Account-Bytes-Used": "0",
                "X-Timestamp": self.timestamp().normal,
                "X-Put-Timestamp": self.timestamp().normal,
            }
        )

    async def get_account(self, account: str, query: Mapping[str, str]) -> Result:
        r = await self._read("account", "GET", account, None, None, query=query)
        if r.status == 404 and self.account_autocreate:
            fmt = query.get("format", "plain")
            h = self._empty_account_headers()
            if fmt == "json":
                h["Content-Type"] = "application/json; charset=utf-8"
                return Result(200, h, b"[]")
            if fmt == "xml":
                h["Content-Type"] = "application/xml; charset=utf-8"
                body = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<account name="{account}"></account>'
                ).encode()
                return Result(200, h, body)
            return Result(204, h)
        return Result(r.status, client_headers(r.headers), r.body)

    async def put_account(self, account: str, headers: Mapping[str, str]) -> Result:
        h = self._headers(headers)
        h["X-Timestamp"] = self.timestamp().internal
        resps = await self._write("account", "PUT", account, None, None, h)
        self.invalidate(account)
        return self._result_of_writes(resps, len(resps))

    async def post_account(self, account: str, headers: Mapping[str, str]) -> Result:
        h = self._headers(headers)
        h["X-Timestamp"] = self.timestamp().internal
        resps = await self._write("account", "POST", account, None, None, h)
        res = self._result_of_writes(resps, len(resps))
        if res.status == 404 and self.account_autocreate:
            created = await self.put_account(account, headers)
            if created.status < 300:
                return Result(204, created.headers)
            return created
        self.invalidate(account)
        return res

    async def delete_account(self, account: str, headers: Mapping[str, str]) -> Result:
        h = self._headers(headers)
        h["X-Timestamp"] = self.timestamp().internal
        resps = await self._write("account", "DELETE", account, None, None, h)
        self.invalidate(account)
        return self._result_of_writes(resps, len(resps))

    async def ensure_account(self, account: str) -> int:
        """Status of the account, creating it when autocreate is on and it is missing."""
        info = await self.account_info(account)
        if info.status == 404 and self.account_autocreate:
            res = await self.put_account(account, {})
            return 200 if res.status < 300 else res.status
        return info.status

    # -- containers --------------------------------------------------------------------
    async def container_info(
        self, account: str, container: str, *, fresh: bool = False
    ) -> ContainerInfo:
        """The container's status, ACLs and counts.

        Cached a few seconds per worker for existence checks; `fresh` (used for ACL
        decisions) asks the container servers, so an ACL change applies at once in every
        worker.
        """
        now = self.clock.monotonic()
        hit = self._cinfo.get((account, container))
        if hit and hit[0] > now and not fresh:
            return hit[1]
        r = await self._read("container", "HEAD", account, container, None)
        h = r.headers
        info = ContainerInfo(
            200 if r.status in (200, 204) else r.status,
            read_acl=h.get("X-Container-Read", ""),
            write_acl=h.get("X-Container-Write", ""),
            object_count=int(h.get("X-Container-Object-Count", "0") or 0),
            bytes_used=int(h.get("X-Container-Bytes-Used", "0") or 0),
            headers=dict(h),
        )
        # Only existing containers are cached: a container just created through another
        # worker must not look missing here.
        if info.status == 200:
            self._cinfo[(account, container)] = (now + _CACHE_TTL_S, info)
        return info

    async def head_container(self, account: str, container: str) -> Result:
        r = await self._read("container", "HEAD", account, container, None)
        return Result(204 if r.status == 200 else r.status, client_headers(r.headers))

    async def get_container(self, account: str, container: str, query: Mapping[str, str]) -> Result:
        r = await self._read("container", "GET", account, container, None, query=query)
        return Result(r.status, client_headers(r.headers), r.body)

    async def put_container(
        self, account: str, container: str, headers: Mapping[str, str]
    ) -> Result:
        status = await self.ensure_account(account)
        if status == 404:
            return Result(404, CIMultiDict(), b"Account not found\n")
        if status >= 500:
            return Result(503, CIMultiDict(), b"Account unavailable\n")
        h = self._headers(headers)
        h["X-Timestamp"] = self.timestamp().internal
        targets = self._update_targets("account", account, None)
        resps = await self._write("container", "PUT", account, container, None, h, targets)
        self.invalidate(account, container)
        self.invalidate(account)
        return self._result_of_writes(resps, len(resps))

    async def post_container(
        self, account: str, container: str, headers: Mapping[str, str]
    ) -> Result:
        h = self._headers(headers)
        h["X-Timestamp"] = self.timestamp().internal
        resps = await self._write("container", "POST", account, container, None, h)
        self.invalidate(account, container)
        return self._result_of_writes(resps, len(resps))

    async def delete_container(
        self, account: str, container: str, headers: Mapping[str, str]
    ) -> Result:
        h = self._headers(headers)
        h["X-Timestamp"] = self.timestamp().internal
        targets = self._update_targets("account", account, None)
        resps = await self._write("container", "DELETE", account, container, None, h, targets)
        self.invalidate(account, container)
        self.invalidate(account)
        res = self._result_of_writes(resps, len(resps))
        if any(r.status == 409 for r in resps) and res.status >= 500:
            res = Result(
                409, CIMultiDict(), b"There was a conflict when trying to complete your request.\n"
            )
        elif res.status == 409:
            res.body = b"There was a conflict when trying to complete your request.\n"
        return res

    # -- objects -----------------------------------------------------------------------
    async def head_object(
        self, account: str, container: str, obj: str, headers: Mapping[str, str] | None = None
    ) -> Result:
        r = await self._read("object", "HEAD", account, container, obj, headers=headers)
        return Result(r.status, client_headers(r.headers))

    async def get_object_raw(
        self, account: str, container: str, obj: str, headers: Mapping[str, str] | None = None
    ) -> Result:
        """GET without large-object expansion; the body is an open stream."""
        ring = self.rings.object
        part, _ = ring.get_nodes(account, container, obj)
        nodes = self.backend.nodes(ring, part)

        def path_for(node: Device) -> str:
            return backend_path(node.device, part, account, container, obj)

        hdrs = self._headers(headers)
        resp, summary = await read_object(self.backend, ring, part, path_for, hdrs, nodes)
        if resp is None:
            status, whole = summary.status, summary.body
            if status < 400 or status in (412, 416):
                # A good answer read whole (proxy.backend.read_object): a stream, as an
                # answer that open_stream leaves open is, for every caller.
                return Result(status, client_headers(summary.headers), b"", WholeBody(whole))
            return Result(status, client_headers(summary.headers), whole)

        async def reopen(h: Mapping[str, str]) -> tuple[aiohttp.ClientResponse | None, Resp]:
            return await open_stream(self.backend, ring, part, "GET", path_for, h, nodes)

        body = resuming_body(self.backend, resp, summary.node, reopen, hdrs)
        return Result(resp.status, client_headers(resp.headers), b"", body, resp)

    async def get_object(
        self,
        account: str,
        container: str,
        obj: str,
        headers: Mapping[str, str] | None = None,
        manifest: bool = False,
    ) -> Result:
        from proxy import largeobj  # large objects build on the raw calls above

        if manifest:
            return await self.get_object_raw(account, container, obj, headers)
        return await largeobj.get_with_manifests(self, account, container, obj, headers or {})

    def _object_put_headers(
        self, obj: str, headers: Mapping[str, str], ts: Timestamp
    ) -> CIMultiDict[str]:
        h = self._headers()
        for k, v in headers.items():
            lk = k.lower()
            if (
                lk in _OBJECT_PERSIST
                or lk.startswith(("x-object-meta-", "x-object-sysmeta-"))
                or lk in ("x-static-large-object", "content-length", "if-none-match")
            ):
                h[k] = v
        if (
            "Content-Type" not in h
            or h.get("X-Detect-Content-Type", "").lower() == "true"
            or headers.get("X-Detect-Content-Type", "").lower() == "true"
        ):
            h["Content-Type"] = mimetypes.guess_type(obj)[0] or "application/octet-stream"
        h["X-Timestamp"] = ts.internal
        return h

    async def put_object(
        self,
        account: str,
        container: str,
        obj: str,
        headers: Mapping[str, str],
        body: AsyncIterator[bytes],
    ) -> Result:
        cinfo = await self.container_info(account, container)
        if cinfo.status != 200:
            return Result(
                404 if cinfo.status == 404 else 503,
                CIMultiDict(),
                b"Container not found\n" if cinfo.status == 404 else b"",
            )
        ts = self.timestamp()
        h = self._object_put_headers(obj, headers, ts)
        targets = self._update_targets("container", account, container)
        ring = self.rings.object
        part, _ = ring.get_nodes(account, container, obj)

        def headers_for(i: int, _node: Device) -> Mapping[str, str]:
            hh = CIMultiDict(h)
            hh.update(targets[i % len(targets)])
            return hh

        def path_for(node: Device) -> str:
            return backend_path(node.device, part, account, container, obj)

        length = _small_length(h)
        try:
            if length is not None:
                resps = await put_buffered(
                    self.backend, ring, part, path_for, headers_for, body, length
                )
            else:
                resps = await stream_put(
                    self.backend,
                    ring,
                    part,
                    path_for,
                    headers_for,
                    body,
                    connect_timeout_s=self.backend.conn_timeout_s,
                )
        except ClientBodyError as e:
            return Result(e.status, CIMultiDict(), f"{e}\n".encode())
        statuses = [r.status for r in resps]
        status = best_status(statuses, len(resps))
        if status == 201:
            etags = {r.headers.get("Etag", "").strip('"') for r in resps if r.status == 201}
            if len(etags) > 1:
                return Result(500, CIMultiDict(), b"Object servers disagree on the ETag\n")
            out = CIMultiDict(
                {"Etag": etags.pop(), "Last-Modified": ts.http_date, "X-Timestamp": ts.normal}
            )
            return Result(201, out)
        if 499 in statuses and statuses.count(499) >= quorum_size(len(statuses)):
            return Result(499)
        bad = next((r for r in resps if r.status == status), None)
        err_body = bad.body if bad is not None and status < 500 else b""
        return Result(status, CIMultiDict(), err_body)

    async def post_object(
        self, account: str, container: str, obj: str, headers: Mapping[str, str]
    ) -> Result:
        h = self._headers()
        for k, v in headers.items():
            lk = k.lower()
            if lk.startswith(("x-object-meta-", "x-object-sysmeta-")) or lk in (
                "content-type",
                "content-encoding",
                "content-disposition",
                "x-delete-at",
                "content-language",
                "cache-control",
                "expires",
                "x-object-manifest",
            ):
                h[k] = v
        h["X-Timestamp"] = self.timestamp().internal
        targets = self._update_targets("container", account, container)
        resps = await self._write("object", "POST", account, container, obj, h, targets)
        return self._result_of_writes(resps, len(resps))

    async def delete_object(
        self, account: str, container: str, obj: str, headers: Mapping[str, str] | None = None
    ) -> Result:
        cinfo = await self.container_info(account, container)
        if cinfo.status != 200:
            return Result(404 if cinfo.status == 404 else 503)
        h = self._headers(headers)
        h["X-Timestamp"] = self.timestamp().internal
        targets = self._update_targets("container", account, container)
        resps = await self._write("object", "DELETE", account, container, obj, h, targets)
        return self._result_of_writes(resps, len(resps))

    async def copy_object(
        self,
        src: tuple[str, str, str],
        dst: tuple[str, str, str],
        headers: Mapping[str, str],
        *,
        fresh_metadata: bool = False,
        manifest: bool = False,
        src_headers: Mapping[str, str] | None = None,
    ) -> Result:
        """Server-side copy: stream the source's bytes into a new PUT of the destination."""
        source = await self.get_object(*src, headers=src_headers, manifest=manifest)
        if source.status >= 300 or source.stream is None:
            await source.close()
            return Result(source.status, CIMultiDict(), source.body)
        h: CIMultiDict[str] = CIMultiDict()
        if not fresh_metadata:
            for k, v in source.headers.items():
                lk = k.lower()
                if lk.startswith("x-object-meta-") or lk in (
                    "content-type",
                    "content-encoding",
                    "content-disposition",
                    "content-language",
                    "cache-control",
                    "expires",
                ):
                    h[k] = v
        if manifest and "X-Static-Large-Object" in source.headers:
            h["X-Static-Large-Object"] = source.headers["X-Static-Large-Object"]
        if "Content-Length" in source.headers:
            h["Content-Length"] = source.headers["Content-Length"]
        else:
            h["Transfer-Encoding"] = "chunked"
        for k, v in headers.items():
            lk = k.lower()
            if lk.startswith("x-object-meta-") or lk in (
                "content-type",
                "content-encoding",
                "content-disposition",
                "x-delete-at",
            ):
                h[k] = v
        try:
            res = await self.put_object(*dst, headers=h, body=source.stream)
        finally:
            await source.close()
        if res.status == 201:
            res.headers["X-Copied-From"] = f"{src[1]}/{src[2]}"
            res.headers["X-Copied-From-Account"] = src[0]
            if "Last-Modified" in source.headers:
                res.headers["X-Copied-From-Last-Modified"] = source.headers["Last-Modified"]
        return res
