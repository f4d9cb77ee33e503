"""The Swift API v1 front: `/v1/{account}[/{container}[/{object}]]` over proxy/ops.py.

This module turns HTTP into calls on `Ops`, after proxy/authz.py has decided who may do what.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from common.deploy import ProxyConfig
from common.server import body_chunks
from proxy import largeobj
from proxy.auth import Decision, PathParts, client_response_headers
from proxy.constraints import LIMITS, check_metadata, check_name, check_object_put
from proxy.ops import Ops, Result, WholeBody
from proxy.s3.objmeta import split_content_type

__all__ = ["SwiftPath", "gatekeep_request", "handle_swift", "parse_swift_path", "text"]

# A streamed body of at most this many declared bytes is gathered first and sent with the
# status line and headers in one write (one syscall, one aiohttp response) instead of two.
_GATHER_BYTES_MAX = 64 * 1024
_MANIFEST_BYTES_MAX = 8 << 20
_COPY_HEADERS = ("Destination", "Destination-Account")


class SwiftPath:
    __slots__ = ("account", "container", "obj", "version")

    def __init__(self, version: str, account: str, container: str | None, obj: str | None):
        self.version = version
        self.account = account
        self.container = container
        self.obj = obj


def text(status: int, message: str = "", headers: CIMultiDict[str] | None = None) -> web.Response:
    """A Swift-style plain-text response."""
    if not message:
        message = {
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            405: "Method Not Allowed",
            409: "Conflict",
            411: "Length Required",
            412: "Precondition Failed",
            413: "Request Entity Too Large",
            416: "Requested Range Not Satisfiable",
            422: "Unprocessable Entity",
            499: "Client Disconnect",
            501: "Not Implemented",
            503: "Service Unavailable",
        }.get(status, "")
    h = CIMultiDict(headers or {})
    h["Content-Type"] = "text/html; charset=UTF-8"
    body = f"<html><h1>{message}</h1></html>" if status >= 400 and status != 499 else message
    return web.Response(
        status=status, body=body.encode() if status not in (204, 304) else None, headers=h
    )


def parse_swift_path(raw_path: str) -> SwiftPath | web.Response:
    """Split and validate `/v1/a[/c[/o]]` (percent-decoded, object names keep their slashes)."""
    parts = raw_path.lstrip("/").split("/", 3)
    if len(parts) < 2 or parts[0] not in ("v1", "v1.0") or not parts[1]:
        return text(412, "Invalid path")
    try:
        decoded = [unquote(p, errors="strict") for p in parts]
    except UnicodeDecodeError:
        return text(412, "Invalid UTF8 or contains NULL")
    account = decoded[1]
    container = decoded[2] if len(decoded) > 2 else None
    obj = decoded[3] if len(decoded) > 3 else None
    if container == "":
        if obj:
            return text(412, "Invalid path")
        container = None
    if obj == "":
        obj = None
    for kind, name in (("account", account), ("container", container), ("object", obj)):
        if name is None:
            continue
        problem = check_name(kind, name)
        if problem:
            return text(*problem)
    if account.startswith("."):
        return text(412, "Account names starting with '.' are reserved")
    return SwiftPath(parts[0], account, container, obj)


async def _body_iter(request: web.Request) -> AsyncIterator[bytes]:
    expected = request.content_length
    got = 0
    async for chunk in body_chunks(request.content):
        got += len(chunk)
        yield chunk
    if expected is not None and got != expected:
        from proxy.objput import ClientBodyError

        raise ClientBodyError(499, "Client disconnected before sending the whole body")


async def to_response(request: web.Request, res: Result) -> web.StreamResponse:
    """Send an ops Result to the client, streaming its body if it has one."""
    if res.stream is None:
        h = CIMultiDict(res.headers)
        if res.status in (204, 304) or request.method == "HEAD":
            h.popall("Content-Type", None) if res.status == 204 else None
            resp = web.StreamResponse(status=res.status, headers=h)
            if request.method == "HEAD" and "Content-Length" in h:
                resp.content_length = int(h["Content-Length"])
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        if res.status >= 400 and not res.body:
            return text(res.status, headers=h)
        h.popall("Content-Length", None)
        return web.Response(status=res.status, body=res.body, headers=h)
    if (
        isinstance(res.stream, WholeBody)
        and request.method == "GET"
        and "Content-Length" in res.headers
    ):
        # Read whole from the object server already: the answer at once (as `_gather` does
        # for a small streamed body; one without a Content-Length, a 304, streams below).
        h = CIMultiDict(res.headers)
        h.popall("Content-Length", None)
        return web.Response(status=res.status, body=res.stream.body, headers=h)
    length = res.headers.get("Content-Length")
    small = length is not None and length.isdigit() and int(length) <= _GATHER_BYTES_MAX
    if request.method == "GET" and small:
        assert length is not None
        gathered = await _gather(request, res, int(length))
        if gathered is not None:
            return gathered
    resp = web.StreamResponse(status=res.status, headers=res.headers)
    if length is not None:
        resp.content_length = int(length)
    try:
        await resp.prepare(request)
        if request.method != "HEAD":
            async for chunk in res.stream:
                await resp.write(chunk)
        await resp.write_eof()
    except (largeobj.SegmentError, aiohttp.ClientError, TimeoutError, ConnectionError):
        # A segment vanished, or the storage node cut its stream (it found a corrupt block,
        # or died). The status line is gone already: the only honest signal left is a cut
        # connection, never a short body that looks complete and never a hang.
        if request.transport is not None:
            request.transport.close()
    finally:
        await res.close()
    return resp


async def _gather(request: web.Request, res: Result, length: int) -> web.StreamResponse | None:
    """The whole answer at once for a small streamed body; None (nothing sent, the stream
    still open) when the body turns out longer than declared, so the caller streams it.
    A stream that fails or ends short gets what streaming it would get: the status line,
    then a cut connection."""
    assert res.stream is not None
    parts: list[bytes] = []
    got = 0
    try:
        async for chunk in res.stream:
            parts.append(chunk)
            got += len(chunk)
            if got > length:
                break
    except (largeobj.SegmentError, aiohttp.ClientError, TimeoutError, ConnectionError):
        got = -1
    if got > length:
        res.stream = _replay(parts, res.stream)
        return None
    if got != length:
        await res.close()
        resp = web.StreamResponse(status=res.status, headers=res.headers)
        resp.content_length = length
        await resp.prepare(request)
        if request.transport is not None:
            request.transport.close()
        return resp
    await res.close()
    h = CIMultiDict(res.headers)
    h.popall("Content-Length", None)
    return web.Response(status=res.status, body=b"".join(parts), headers=h)


async def _replay(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


def _clean_object_type(res: Result) -> Result:
    """Hide the S3 front's private Content-Type parameters from Swift clients, as Swift does."""
    ct = res.headers.get("Content-Type", "")
    if "swift_bytes=" in ct or "s3_etag=" in ct:
        res.headers["Content-Type"] = split_content_type(ct)[0]
    return res


_XML_TYPE_PARAMS = re.compile(rb";(?:swift_bytes|s3_etag)=[^;<]*")


def _clean_listing(res: Result, fmt: str) -> Result:
    """Listings show a large object's real size, and no private type parameters."""
    if b"swift_bytes=" not in res.body and b"s3_etag=" not in res.body:
        return res
    if fmt == "json":
        rows = json.loads(res.body)
        for row in rows:
            if "content_type" in row:
                row["content_type"], params = split_content_type(row["content_type"])
                if "swift_bytes" in params and params["swift_bytes"].isdigit():
                    row["bytes"] = int(params["swift_bytes"])
        res.body = json.dumps(rows).encode()
    elif fmt == "xml":
        res.body = _XML_TYPE_PARAMS.sub(b"", res.body)
    return res


def _listing_query(request: web.Request, limit_max: int) -> dict[str, str] | web.Response:
    """The listing parameters to pass on; without a client limit the storage server is asked
    for exactly `limit_max` rows (the configured listing limit, as Swift's proxy does)."""
    q: dict[str, str] = {}
    for key in ("prefix", "delimiter", "marker", "end_marker", "limit", "reverse", "path"):
        if key in request.query:
            q[key] = request.query[key]
    if "limit" in q:
        if not q["limit"].isdigit():
            return text(412, "Value of limit must be a positive integer")
        if int(q["limit"]) > limit_max:
            return text(412, f"Maximum limit is {limit_max}")
    else:
        q["limit"] = str(limit_max)
    if "delimiter" in q and len(q["delimiter"]) > 1:
        return text(412, "Bad delimiter")
    fmt = request.query.get("format", "").lower()
    if not fmt:
        accept = request.headers.get("Accept", "")
        if "application/json" in accept:
            fmt = "json"
        elif "xml" in accept:
            fmt = "xml"
        else:
            fmt = "plain"
    if fmt not in ("json", "xml", "plain"):
        fmt = "plain"
    q["format"] = fmt
    return q


def _user_headers(request: Mapping[str, str], target: str) -> CIMultiDict[str]:
    """Client headers for metadata updates of an account or container."""
    out: CIMultiDict[str] = CIMultiDict()
    prefixes = (f"x-{target}-meta-", f"x-remove-{target}-meta-")
    extra = {
        "container": (
            "x-container-read",
            "x-container-write",
            "x-versions-location",
            "x-history-location",
            "x-remove-container-read",
            "x-remove-container-write",
            "x-container-sync-to",
            "x-container-sync-key",
        ),
        "account": ("x-account-sysmeta-core-access-control",),
    }[target]
    for k, v in request.items():
        lk = k.lower()
        if lk.startswith(f"x-remove-{target}-meta-"):
            out[f"X-{target.capitalize()}-Meta-" + k[len(f"x-remove-{target}-meta-") :]] = ""
        elif lk.startswith(prefixes[0]) or lk in extra:
            if lk.startswith("x-remove-"):
                out[k[len("x-remove-") :]] = ""
            else:
                out[k] = v
    return out


def gatekeep_request(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Client headers minus what only cairn itself may set (system metadata)."""
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in headers.items():
        lk = k.lower()
        if "-sysmeta-" in lk or lk.startswith("x-backend-") or lk == "x-static-large-object":
            continue
        out.add(k, v)
    return out


Visible = Callable[[Result], Result]


async def handle_swift(
    request: web.Request,
    ops: Ops,
    path: SwiftPath,
    decision: Decision,
    headers: Mapping[str, str],
    cfg: ProxyConfig,
) -> web.StreamResponse:
    """Dispatch an authorized Swift request.

    `headers` are the client's headers after the gatekeeper and the auth layer cleaned them
    (ACLs validated, owner-only headers dropped for non-owners); `cfg` gives the listing limits.
    """
    parts = PathParts(path.version, path.account, path.container, path.obj)

    def visible(res: Result) -> Result:
        shown = client_response_headers(parts, res.headers, decision)
        res.headers = CIMultiDict((k, v) for k, v in shown.items() if "-sysmeta-" not in k.lower())
        return res

    if path.obj is not None:
        assert path.container is not None
        return await _object(request, ops, path.account, path.container, path.obj, headers)
    if path.container is not None:
        limit = cfg.container_listing_limit
        return await _container(request, ops, path.account, path.container, headers, visible, limit)
    return await _account(request, ops, path.account, headers, visible, cfg.account_listing_limit)


async def _account(
    request: web.Request,
    ops: Ops,
    account: str,
    headers: Mapping[str, str],
    visible: Visible,
    limit_max: int,
) -> web.StreamResponse:
    m = request.method
    if m in ("GET", "HEAD"):
        if m == "HEAD":
            res = await ops.head_account(account)
        else:
            q = _listing_query(request, limit_max)
            if isinstance(q, web.Response):
                return q
            res = await ops.get_account(account, q)
        return await to_response(request, visible(res))
    if m == "POST":
        problem = check_metadata(headers, "account")
        if problem:
            return text(*problem)
        res = await ops.post_account(account, _user_headers(headers, "account"))
        return await to_response(request, res)
    if m in ("PUT", "DELETE"):
        # Creating and deleting accounts is for reseller admins (authz has checked it).
        problem = check_metadata(headers, "account")
        if problem:
            return text(*problem)
        hdrs = _user_headers(headers, "account")
        res = await (
            ops.put_account(account, hdrs) if m == "PUT" else ops.delete_account(account, hdrs)
        )
        return await to_response(request, res)
    return text(405, headers=CIMultiDict({"Allow": "GET, HEAD, POST, PUT, DELETE"}))


async def _container(
    request: web.Request,
    ops: Ops,
    account: str,
    container: str,
    headers: Mapping[str, str],
    visible: Visible,
    limit_max: int,
) -> web.StreamResponse:
    m = request.method
    if m in ("GET", "HEAD"):
        if m == "HEAD":
            res = await ops.head_container(account, container)
        else:
            q = _listing_query(request, limit_max)
            if isinstance(q, web.Response):
                return q
            res = _clean_listing(await ops.get_container(account, container, q), q["format"])
        return await to_response(request, visible(res))
    if m in ("PUT", "POST"):
        problem = check_metadata(headers, "container")
        if problem:
            return text(*problem)
        hdrs = _user_headers(headers, "container")
        res = await (
            ops.put_container(account, container, hdrs)
            if m == "PUT"
            else ops.post_container(account, container, hdrs)
        )
        return await to_response(request, res)
    if m == "DELETE":
        return await to_response(request, await ops.delete_container(account, container, {}))
    return text(405, headers=CIMultiDict({"Allow": "GET, HEAD, POST, PUT, DELETE"}))


def _delete_at(headers: Mapping[str, str], ops: Ops) -> CIMultiDict[str] | web.Response:
    h = CIMultiDict(headers)
    if "X-Delete-After" in h:
        v = h.popone("X-Delete-After")
        if not v.strip().isdigit():
            return text(400, "Non-integer X-Delete-After")
        h["X-Delete-At"] = str(int(ops.clock.time()) + int(v))
    if "X-Delete-At" in h:
        v = h["X-Delete-At"]
        if not v.strip().isdigit():
            return text(400, "Non-integer X-Delete-At")
        if int(v) <= int(ops.clock.time()):
            return text(400, "X-Delete-At in past")
    # Only the SLO machinery may mark a manifest; clients can't set sysmeta.
    for k in list(h.keys()):
        if k.lower().startswith("x-object-sysmeta-") or k.lower() == "x-static-large-object":
            h.popall(k, None)
    return h


async def _object(
    request: web.Request,
    ops: Ops,
    account: str,
    container: str,
    obj: str,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    m = request.method
    mm = request.query.get("multipart-manifest", "")
    if m in ("GET", "HEAD"):
        hdrs = {
            k: v
            for k, v in request.headers.items()
            if k.lower()
            in ("range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
        }
        if mm == "get":
            res = await ops.get_object_raw(account, container, obj, hdrs)
        else:
            res = await ops.get_object(account, container, obj, hdrs)
        if m == "HEAD" and res.stream is not None:
            await res.close()
            res.stream = None
        return await to_response(request, _clean_object_type(res))
    if m == "PUT":
        return await _object_put(request, ops, account, container, obj, mm, headers)
    if m == "POST":
        problem = check_metadata(headers, "object")
        if problem:
            return text(*problem)
        h = _delete_at(headers, ops)
        if isinstance(h, web.Response):
            return h
        return await to_response(request, await ops.post_object(account, container, obj, h))
    if m == "DELETE":
        if mm == "delete":
            return await to_response(
                request, await largeobj.delete_slo(ops, account, container, obj)
            )
        return await to_response(request, await ops.delete_object(account, container, obj))
    if m == "COPY":
        return await _object_copy(request, ops, account, container, obj, headers)
    return text(405, headers=CIMultiDict({"Allow": "GET, HEAD, POST, PUT, DELETE, COPY"}))


async def _object_put(
    request: web.Request,
    ops: Ops,
    account: str,
    container: str,
    obj: str,
    mm: str,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    problem = check_object_put(headers, request.content_length)
    if problem:
        return text(*problem)
    h = _delete_at(headers, ops)
    if isinstance(h, web.Response):
        return h
    if mm == "put":
        if (request.content_length or 0) > _MANIFEST_BYTES_MAX:
            return text(413, "Manifest File > 8388608 bytes")
        body = await request.content.read(_MANIFEST_BYTES_MAX + 1)
        if len(body) > _MANIFEST_BYTES_MAX:
            return text(413, "Manifest File > 8388608 bytes")
        res = await largeobj.put_slo_manifest(ops, account, container, obj, h, body)
        return await to_response(request, res)
    if "X-Copy-From" in h:
        src = _split_copy(h.popone("X-Copy-From"))
        if src is None:
            return text(
                412, "X-Copy-From header must be of the form <container name>/<object name>"
            )
        src_account = unquote(h.popone("X-Copy-From-Account", account))
        res = await ops.copy_object(
            (src_account, *src),
            (account, container, obj),
            h,
            fresh_metadata=h.get("X-Fresh-Metadata", "").lower() in ("true", "1", "yes"),
            manifest=request.query.get("multipart-manifest") == "get",
        )
        return await to_response(request, res)
    res = await ops.put_object(account, container, obj, h, _body_iter(request))
    return await to_response(request, res)


def _split_copy(value: str) -> tuple[str, str] | None:
    v = unquote(value).lstrip("/")
    if "/" not in v:
        return None
    c, o = v.split("/", 1)
    if not c or not o:
        return None
    return c, o


async def _object_copy(
    request: web.Request,
    ops: Ops,
    account: str,
    container: str,
    obj: str,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    dest = headers.get("Destination")
    if not dest:
        return text(412, "You must provide a Destination header")
    split = _split_copy(dest)
    if split is None:
        return text(412, "Destination header must be of the form <container name>/<object name>")
    dst_account = unquote(headers.get("Destination-Account", account))
    h = CIMultiDict({k: v for k, v in headers.items() if k not in _COPY_HEADERS})
    res = await ops.copy_object(
        (account, container, obj),
        (dst_account, *split),
        h,
        fresh_metadata=h.get("X-Fresh-Metadata", "").lower() in ("true", "1", "yes"),
        manifest=request.query.get("multipart-manifest") == "get",
    )
    return await to_response(request, res)


def info_document(cfg: ProxyConfig, s3_enabled: bool = False) -> bytes:
    """The `/info` capabilities; the listing limits are the configured ones."""
    doc: dict[str, object] = {
        "swift": {
            "version": "cairn-0.1.0",
            **LIMITS,
            "container_listing_limit": cfg.container_listing_limit,
            "account_listing_limit": cfg.account_listing_limit,
            "strict_cors_mode": True,
            "policies": [{"name": "Policy-0", "default": True}],
            "allow_account_management": True,
            "account_autocreate": True,
        },
        "slo": {
            "max_manifest_segments": largeobj.MAX_SEGMENTS,
            "max_manifest_size": _MANIFEST_BYTES_MAX,
            "min_segment_size": 1,
            "yield_frequency": 10,
        },
        "dlo": {"max_get_time": 86400},
        "tempauth": {"account_acls": True},
    }
    if s3_enabled:
        doc["s3api"] = {
            "max_bucket_listing": 1000,
            "max_parts_listing": 1000,
            "max_upload_part_num": 10000,
            "max_multi_delete_objects": 1000,
            "s3_acl": False,
            "version": "cairn",
        }
    return json.dumps(doc).encode()
