"""S3 object operations on top of proxy.ops: put, get, head, delete, copy, ACL, tagging."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict

from common.log import get_logger
from proxy import largeobj
from proxy.s3 import xml as x
from proxy.s3.access import authorize, resolve_bucket, unavailable
from proxy.s3.acl import check_object_acl, container_to_grants
from proxy.s3.body import UploadBody, read_small_body
from proxy.s3.context import S3Context, empty_response, xml_response
from proxy.s3.errors import S3Error
from proxy.s3.h_bucket import SMALL_BODY_BYTES_MAX, delete_one
from proxy.s3.headers import HeaderMap
from proxy.s3.multipart import SEGMENTS_SUFFIX
from proxy.s3.objmeta import (
    CONTENT_HEADERS,
    RESPONSE_OVERRIDES,
    copy_source_conditions,
    evaluate_conditions,
    object_response_headers,
    parse_http_time,
    swift_object_headers,
)
from proxy.s3.request import check_version_id
from proxy.s3.xmlparse import parse_access_control_policy, parse_tagging

if TYPE_CHECKING:
    from proxy.ops import Result

__all__ = ["OBJECT_HANDLERS", "parse_copy_source", "send_result", "stored_segments"]

MANIFEST_BYTES_MAX = 8 << 20
log = get_logger("cairn.proxy.s3")


def _hmap(ctx: S3Context) -> HeaderMap:
    return HeaderMap(ctx.request.headers)


def no_such_key(ctx: S3Context, bucket: str, key: str) -> S3Error:
    return S3Error("NoSuchKey", resource=f"/{bucket}/{key}", extra=[("Key", key)])


def backend_failure(res: Result) -> S3Error:
    """An ops status that is not success, as the S3 error a client should see."""
    if res.status == 413:
        return S3Error("EntityTooLarge")
    if res.status == 422:
        return S3Error("BadDigest")
    if res.status == 499:
        return S3Error("IncompleteBody")
    if res.status == 404:
        return S3Error("NoSuchBucket")
    return unavailable()


async def stored_segments(ctx: S3Context, account: str, bucket: str, key: str) -> list[str]:
    """Names of the segments an existing S3 multipart object holds in `<bucket>+segments`."""
    raw = await ctx.ops.get_object_raw(account, bucket, key)
    if raw.status != 200 or raw.headers.get("X-Static-Large-Object", "").lower() != "true":
        await raw.close()
        return []
    try:
        items = json.loads(await raw.read_all(MANIFEST_BYTES_MAX))
    except ValueError:
        return []
    prefix = f"/{bucket}{SEGMENTS_SUFFIX}/"
    return [
        str(i["name"])[len(prefix) :] for i in items if str(i.get("name", "")).startswith(prefix)
    ]


async def drop_segments(ctx: S3Context, account: str, bucket: str, names: list[str]) -> None:
    for name in names:
        await ctx.ops.delete_object(account, bucket + SEGMENTS_SUFFIX, name)


async def _put_preconditions(ctx: S3Context, account: str, hmap: HeaderMap) -> Result:
    head = await ctx.ops.head_object(account, ctx.bucket, ctx.key)
    if head.status >= 500:
        raise unavailable()
    exists = head.status < 300
    if_none, if_match = hmap.get("if-none-match"), hmap.get("if-match")
    if if_none is not None and if_none.strip() == "*" and exists:
        raise S3Error("PreconditionFailed", extra=[("Condition", "If-None-Match")])
    if if_match is not None:
        _, etag = object_response_headers(head.headers)
        if not exists:
            raise no_such_key(ctx, ctx.bucket, ctx.key)
        if evaluate_conditions(HeaderMap([("if-match", if_match)]), etag, None) is not None:
            raise S3Error("PreconditionFailed", extra=[("Condition", "If-Match")])
    return head


async def put_object(ctx: S3Context) -> web.StreamResponse:
    hmap = _hmap(ctx)
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "PUT", account, ctx.bucket, ctx.key)
    check_object_acl(hmap)
    headers = swift_object_headers(hmap)
    body = UploadBody(ctx.request, ctx.verified, hmap, bytes_max=ctx.settings.put_bytes_max)
    old = await _put_preconditions(ctx, account, hmap)
    old_segments: list[str] = []
    if old.headers.get("X-Static-Large-Object", "").lower() == "true":
        old_segments = await stored_segments(ctx, account, ctx.bucket, ctx.key)
    if body.length is not None:
        headers["Content-Length"] = str(body.length)
    else:
        headers["Transfer-Encoding"] = "chunked"
    res = await ctx.ops.put_object(account, ctx.bucket, ctx.key, headers, body.chunks())
    if res.status != 201:
        raise backend_failure(res)
    await drop_segments(ctx, account, ctx.bucket, old_segments)
    assert body.digests is not None
    out = [("ETag", f'"{body.digests.md5_hex}"')]
    if body.digests.checksum is not None:
        algorithm, value = body.digests.checksum
        out.append((algorithm.header, value))
    return empty_response(200, out)


def _range_error(hmap: HeaderMap, result: Result) -> S3Error:
    total = (result.headers.get("Content-Range") or "*/").rpartition("/")[2]
    return S3Error(
        "InvalidRange",
        extra=[("RangeRequested", hmap.get("range") or ""), ("ActualObjectSize", total)],
    )


async def _fetch(ctx: S3Context, account: str, head: bool) -> web.StreamResponse:
    hmap = _hmap(ctx)
    check_version_id(ctx.s3.query)
    if "partNumber" in ctx.s3.query:
        raise S3Error("NotImplemented", "GetObject by partNumber is not implemented.")
    meta = await ctx.ops.head_object(account, ctx.bucket, ctx.key)
    if meta.status == 404:
        raise no_such_key(ctx, ctx.bucket, ctx.key)
    if meta.status >= 300:
        raise unavailable()
    headers, etag = object_response_headers(meta.headers)
    condition = evaluate_conditions(hmap, etag, parse_http_time(meta.headers.get("Last-Modified")))
    if condition == 412:
        raise S3Error("PreconditionFailed", extra=[("Condition", "If-Match")])
    if condition == 304:
        kept = [(k, v) for k, v in headers.items() if k in ("ETag", "Last-Modified")]
        return empty_response(304, kept)
    range_header = hmap.get("range")
    large = "x-static-large-object" in meta.headers or "x-object-manifest" in meta.headers
    if head and not range_header and not large:
        # A plain object's HEAD says all there is; no need to open its body.
        return await send_result(ctx.request, ctx.request_id, 200, _overridden(ctx, headers), meta)
    wanted = {"Range": range_header} if range_header else {}
    result = await ctx.ops.get_object(account, ctx.bucket, ctx.key, wanted)
    if result.status == 416:
        await result.close()
        raise _range_error(hmap, result)
    if result.status not in (200, 206):
        await result.close()
        raise no_such_key(ctx, ctx.bucket, ctx.key) if result.status == 404 else unavailable()
    sent, _ = object_response_headers(result.headers)
    sent["ETag"] = f'"{etag}"'
    sent = _overridden(ctx, sent)
    if head:
        await result.close()
        result.stream = None
    return await send_result(ctx.request, ctx.request_id, result.status, sent, result)


def _overridden(ctx: S3Context, headers: CIMultiDict[str]) -> CIMultiDict[str]:
    """Apply the response-* query parameters (response-content-type, ...)."""
    for param, name in RESPONSE_OVERRIDES.items():
        if param in ctx.s3.query:
            headers[name] = ctx.s3.query[param]
    return headers


async def send_result(
    request: web.Request, trans_id: str, status: int, headers: Mapping[str, str], result: Result
) -> web.StreamResponse:
    """Stream an ops Result's body (if any) with the given status and headers."""
    sent: CIMultiDict[str] = CIMultiDict(headers)
    sent["x-amz-request-id"] = trans_id
    resp = web.StreamResponse(status=status, headers=sent)
    if "Content-Length" in headers:
        resp.content_length = int(headers["Content-Length"])
    await resp.prepare(request)
    try:
        if result.stream is not None and request.method != "HEAD":
            async for chunk in result.stream:
                await resp.write(chunk)
        await resp.write_eof()
    except (largeobj.SegmentError, OSError, TimeoutError) as exc:
        # Headers are sent: a cut connection is the only honest signal left.
        log.warning("S3 GET body failed", extra={"fields": {"error": str(exc)}})
        if request.transport is not None:
            request.transport.close()
    finally:
        await result.close()
    return resp


async def get_object(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "GET", account, ctx.bucket, ctx.key)
    return await _fetch(ctx, account, head=False)


async def head_object(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "HEAD", account, ctx.bucket, ctx.key)
    return await _fetch(ctx, account, head=True)


async def delete_object(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "DELETE", account, ctx.bucket, ctx.key)
    check_version_id(ctx.s3.query)
    status = await delete_one(ctx, account, ctx.key)
    if status >= 300 and status != 404:
        raise unavailable()
    return empty_response(204)


def parse_copy_source(value: str) -> tuple[str, str]:
    """x-amz-copy-source ('/bucket/key' or 'bucket/key', URL-encoded, ?versionId=null)."""
    path, _, query = value.partition("?")
    if query and query not in ("versionId=null",):
        raise S3Error("InvalidArgument", "Invalid version id specified")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            extra=[("ArgumentName", "x-amz-copy-source")],
        )
    return bucket, key


async def copy_source(ctx: S3Context, hmap: HeaderMap) -> tuple[str, str, str, Result]:
    """Resolve, authorize and HEAD the copy source; check its x-amz-copy-source-if-*."""
    bucket, key = parse_copy_source(hmap.get("x-amz-copy-source") or "")
    account = await resolve_bucket(ctx, bucket)
    await authorize(ctx, "GET", account, bucket, key)
    head = await ctx.ops.head_object(account, bucket, key)
    if head.status == 404:
        raise no_such_key(ctx, bucket, key)
    if head.status >= 300:
        raise unavailable()
    _, etag = object_response_headers(head.headers)
    copy_source_conditions(hmap, etag, parse_http_time(head.headers.get("Last-Modified")))
    return account, bucket, key, head


async def copy_object(ctx: S3Context) -> web.StreamResponse:
    hmap = _hmap(ctx)
    src_account, src_bucket, src_key, head = await copy_source(ctx, hmap)
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "PUT", account, ctx.bucket, ctx.key)
    check_object_acl(hmap)
    directive = (hmap.get("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.")
    same = (src_account, src_bucket, src_key) == (account, ctx.bucket, ctx.key)
    if same and directive == "COPY":
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes.",
        )
    source_headers, _ = object_response_headers(head.headers)
    if directive == "REPLACE":
        headers = swift_object_headers(hmap)
    else:
        headers = CIMultiDict((k, v) for k, v in source_headers.items() if k in CONTENT_HEADERS)
    old_segments = [] if same else await stored_segments(ctx, account, ctx.bucket, ctx.key)
    res = await ctx.ops.copy_object(
        (src_account, src_bucket, src_key),
        (account, ctx.bucket, ctx.key),
        headers,
        fresh_metadata=directive == "REPLACE",
    )
    if res.status != 201:
        raise no_such_key(ctx, src_bucket, src_key) if res.status == 404 else backend_failure(res)
    await drop_segments(ctx, account, ctx.bucket, old_segments)
    etag = res.headers.get("Etag", "").strip('"')
    when = parse_http_time(res.headers.get("Last-Modified")) or ctx.clock.time()
    return xml_response(x.copy_object_result(when, etag))


async def _existing(ctx: S3Context, method: str) -> str:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, method, account, ctx.bucket, ctx.key)
    head = await ctx.ops.head_object(account, ctx.bucket, ctx.key)
    if head.status == 404:
        raise no_such_key(ctx, ctx.bucket, ctx.key)
    if head.status >= 300:
        raise unavailable()
    return account


async def get_object_acl(ctx: S3Context) -> web.StreamResponse:
    account = await _existing(ctx, "HEAD")
    info = await ctx.ops.container_info(account, ctx.bucket)
    owner = ctx.owner_of(account)
    grants = container_to_grants(owner, info.read_acl, info.write_acl)
    return xml_response(x.access_control_policy(owner, grants))


async def put_object_acl(ctx: S3Context) -> web.StreamResponse:
    hmap = _hmap(ctx)
    account = await _existing(ctx, "PUT")
    check_object_acl(hmap)
    body, _ = await read_small_body(ctx.request, ctx.verified, hmap, bytes_max=SMALL_BODY_BYTES_MAX)
    if body.strip():
        owner = ctx.owner_of(account).id
        policy = parse_access_control_policy(body)
        for kind, ident, permission in policy.grants:
            if (kind, ident, permission) != ("CanonicalUser", owner, "FULL_CONTROL"):
                raise S3Error(
                    "NotImplemented", "Objects cannot have ACL grants beyond the bucket's."
                )
    return empty_response(200)


async def get_object_tagging(ctx: S3Context) -> web.StreamResponse:
    await _existing(ctx, "GET")
    return xml_response(x.tagging([]))


async def put_object_tagging(ctx: S3Context) -> web.StreamResponse:
    hmap = _hmap(ctx)
    await _existing(ctx, "PUT")
    body, _ = await read_small_body(ctx.request, ctx.verified, hmap, bytes_max=SMALL_BODY_BYTES_MAX)
    if parse_tagging(body):
        raise S3Error("NotImplemented", "Object tagging is not implemented.")
    return empty_response(200)


async def delete_object_tagging(ctx: S3Context) -> web.StreamResponse:
    await _existing(ctx, "PUT")
    return empty_response(204)


OBJECT_HANDLERS = {
    "PutObject": put_object,
    "GetObject": get_object,
    "HeadObject": head_object,
    "DeleteObject": delete_object,
    "CopyObject": copy_object,
    "GetObjectAcl": get_object_acl,
    "PutObjectAcl": put_object_acl,
    "GetObjectTagging": get_object_tagging,
    "PutObjectTagging": put_object_tagging,
    "DeleteObjectTagging": delete_object_tagging,
}
