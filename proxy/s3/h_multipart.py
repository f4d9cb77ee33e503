"""S3 multipart uploads on top of proxy.ops (layout in proxy/s3/multipart.py, docs/s3.md).

Parts are ordinary objects in `<bucket>+segments`; completion stores a static large object
manifest at the key, so the data is never held in memory and GETs stream the parts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from aiohttp import web

from proxy.s3 import xml as x
from proxy.s3.access import authorize, resolve_bucket, unavailable
from proxy.s3.acl import check_object_acl
from proxy.s3.body import UploadBody, read_small_body
from proxy.s3.context import S3Context, empty_response, xml_response
from proxy.s3.errors import S3Error
from proxy.s3.h_object import (
    backend_failure,
    copy_source,
    drop_segments,
    no_such_key,
    stored_segments,
)
from proxy.s3.headers import HeaderMap
from proxy.s3.listing import KEYS_MAX, parse_max, parse_swift_time
from proxy.s3.multipart import (
    PART_BYTES_MAX,
    StoredPart,
    check_upload_id,
    marker_name,
    multipart_etag,
    new_upload_id,
    parse_part_number,
    parse_segment_name,
    part_name,
    segments_container,
    upload_prefix,
    validate_completion,
)
from proxy.s3.objmeta import DEFAULT_CONTENT_TYPE, swift_object_headers, with_type_params
from proxy.s3.xmlparse import parse_complete_multipart_upload

__all__ = ["MARKER_VERSION", "MULTIPART_HANDLERS"]

MARKER_VERSION = 1
MARKER_BYTES_MAX = 64 * 1024
COMPLETE_BODY_BYTES_MAX = 8 * 1024 * 1024
_LIST_PAGE = 10_000
_UPLOAD_LIST_PAGES_MAX = 20


def _hmap(ctx: S3Context) -> HeaderMap:
    return HeaderMap(ctx.request.headers)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _upload_id(ctx: S3Context) -> str:
    return check_upload_id(ctx.s3.query.get("uploadId", ""))


def _no_such_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", extra=[("UploadId", upload_id)])


async def _target(ctx: S3Context, method: str) -> str:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, method, account, ctx.bucket, ctx.key)
    return account


async def _read_marker(ctx: S3Context, account: str, upload_id: str) -> dict[str, Any]:
    seg = segments_container(ctx.bucket)
    res = await ctx.ops.get_object_raw(account, seg, marker_name(ctx.key, upload_id))
    if res.status == 404:
        await res.close()
        raise _no_such_upload(upload_id)
    if res.status != 200:
        await res.close()
        raise unavailable()
    doc = json.loads(await res.read_all(MARKER_BYTES_MAX))
    if not isinstance(doc, dict) or doc.get("version") != MARKER_VERSION:
        raise S3Error("InternalError", "An upload marker has an unknown format.")
    return doc


async def create_multipart_upload(ctx: S3Context) -> web.StreamResponse:
    hmap = _hmap(ctx)
    account = await _target(ctx, "PUT")
    check_object_acl(hmap)
    headers = dict(swift_object_headers(hmap))
    seg = segments_container(ctx.bucket)
    info = await ctx.ops.container_info(account, seg)
    if info.status == 404:
        made = await ctx.ops.put_container(account, seg, {})
        if made.status >= 300:
            raise unavailable()
    elif info.status != 200:
        raise unavailable()
    upload_id = new_upload_id(ctx.rng)
    doc = {"version": MARKER_VERSION, "headers": headers, "initiated": ctx.clock.time()}
    data = json.dumps(doc).encode()
    marker_headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    res = await ctx.ops.put_object(
        account, seg, marker_name(ctx.key, upload_id), marker_headers, _one(data)
    )
    if res.status != 201:
        raise backend_failure(res)
    return xml_response(x.initiate_multipart_upload_result(ctx.bucket, ctx.key, upload_id))


async def upload_part(ctx: S3Context) -> web.StreamResponse:
    hmap = _hmap(ctx)
    account = await _target(ctx, "PUT")
    upload_id = _upload_id(ctx)
    number = parse_part_number(ctx.s3.query.get("partNumber"))
    body = UploadBody(ctx.request, ctx.verified, hmap, bytes_max=PART_BYTES_MAX)
    await _read_marker(ctx, account, upload_id)
    headers = {"Content-Type": "application/octet-stream"}
    if body.length is not None:
        headers["Content-Length"] = str(body.length)
    else:
        headers["Transfer-Encoding"] = "chunked"
    seg = segments_container(ctx.bucket)
    name = part_name(ctx.key, upload_id, number)
    res = await ctx.ops.put_object(account, seg, name, headers, body.chunks())
    if res.status != 201:
        raise backend_failure(res)
    assert body.digests is not None
    out = [("ETag", f'"{body.digests.md5_hex}"')]
    if body.digests.checksum is not None:
        out.append((body.digests.checksum[0].header, body.digests.checksum[1]))
    return empty_response(200, out)


def _copy_range(value: str | None, size: int) -> str | None:
    if value is None:
        return None
    spec = value.removeprefix("bytes=")
    first, sep, last = spec.partition("-")
    if value == spec or not sep or not first.isdigit() or not last.isdigit():
        raise S3Error(
            "InvalidArgument",
            "The x-amz-copy-source-range value must be of the form bytes=first-last where "
            "first and last are the zero-based offsets of the first and last bytes to copy",
            extra=[("ArgumentName", "x-amz-copy-source-range")],
        )
    a, b = int(first), int(last)
    if a > b or b >= size:
        raise S3Error("InvalidRange", extra=[("ActualObjectSize", str(size))])
    return f"bytes={a}-{b}"


async def upload_part_copy(ctx: S3Context) -> web.StreamResponse:
    hmap = _hmap(ctx)
    src_account, src_bucket, src_key, head = await copy_source(ctx, hmap)
    account = await _target(ctx, "PUT")
    upload_id = _upload_id(ctx)
    number = parse_part_number(ctx.s3.query.get("partNumber"))
    await _read_marker(ctx, account, upload_id)
    size = int(head.headers.get("Content-Length", "0"))
    wanted = _copy_range(hmap.get("x-amz-copy-source-range"), size)
    source = await ctx.ops.get_object(src_account, src_bucket, src_key,
                                      {"Range": wanted} if wanted else {})  # fmt: skip
    if source.status not in (200, 206) or source.stream is None:
        await source.close()
        raise no_such_key(ctx, src_bucket, src_key) if source.status == 404 else unavailable()
    length = int(source.headers.get("Content-Length", "0"))
    if length > PART_BYTES_MAX:
        await source.close()
        raise S3Error("EntityTooLarge", extra=[("MaxSizeAllowed", str(PART_BYTES_MAX))])
    digest = hashlib.md5()

    async def counted() -> AsyncIterator[bytes]:
        assert source.stream is not None
        async for chunk in source.stream:
            digest.update(chunk)
            yield chunk

    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
    seg = segments_container(ctx.bucket)
    try:
        res = await ctx.ops.put_object(
            account, seg, part_name(ctx.key, upload_id, number), headers, counted()
        )
    finally:
        await source.close()
    if res.status != 201:
        raise backend_failure(res)
    return xml_response(x.copy_part_result(ctx.clock.time(), digest.hexdigest()))


async def _stored_parts(ctx: S3Context, account: str, upload_id: str) -> dict[int, StoredPart]:
    seg = segments_container(ctx.bucket)
    prefix = upload_prefix(ctx.key, upload_id)
    parts: dict[int, StoredPart] = {}
    marker = ""
    while True:
        query = {"format": "json", "prefix": prefix, "limit": str(_LIST_PAGE)}
        if marker:
            query["marker"] = marker
        res = await ctx.ops.get_container(account, seg, query)
        if res.status != 200:
            raise unavailable()
        rows = json.loads(res.body or b"[]")
        for row in rows:
            parsed = parse_segment_name(str(row["name"]))
            if parsed is not None and parsed[2] is not None:
                when = parse_swift_time(str(row.get("last_modified", "")))
                n = parsed[2]
                parts[n] = StoredPart(n, str(row["hash"]), int(row["bytes"]), when)
        if len(rows) < _LIST_PAGE:
            return parts
        marker = str(rows[-1]["name"])


def _location(ctx: S3Context) -> str:
    host = ctx.request.headers.get("Host", "")
    path = quote(f"/{ctx.bucket}/{ctx.key}")
    return f"{ctx.request.scheme}://{host}{path}" if host else path


async def complete_multipart_upload(ctx: S3Context) -> web.StreamResponse:
    hmap = _hmap(ctx)
    account = await _target(ctx, "PUT")
    upload_id = _upload_id(ctx)
    doc = await _read_marker(ctx, account, upload_id)
    body, _ = await read_small_body(
        ctx.request, ctx.verified, hmap, bytes_max=COMPLETE_BODY_BYTES_MAX
    )
    stored = await _stored_parts(ctx, account, upload_id)
    chosen = validate_completion(parse_complete_multipart_upload(body), stored)
    seg = segments_container(ctx.bucket)
    manifest = [
        {
            "name": f"/{seg}/{part_name(ctx.key, upload_id, p.number)}",
            "bytes": p.size,
            "hash": p.etag,
            "content_type": "application/octet-stream",
        }
        for p in chosen
    ]
    data = json.dumps(manifest).encode()
    etag = multipart_etag([p.etag for p in chosen])
    total = sum(p.size for p in chosen)
    headers = {str(k): str(v) for k, v in dict(doc.get("headers", {})).items()}
    content_type = headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
    headers.update(
        {
            "Content-Type": with_type_params(content_type, total, etag),
            "Content-Length": str(len(data)),
            "X-Static-Large-Object": "True",
            "X-Object-Sysmeta-Slo-Etag": hashlib.md5(
                "".join(p.etag for p in chosen).encode()
            ).hexdigest(),
            "X-Object-Sysmeta-Slo-Size": str(total),
        }
    )
    old_segments = await stored_segments(ctx, account, ctx.bucket, ctx.key)
    res = await ctx.ops.put_object(account, ctx.bucket, ctx.key, headers, _one(data))
    if res.status != 201:
        raise backend_failure(res)
    used = {p.number for p in chosen}
    unused = [part_name(ctx.key, upload_id, n) for n in stored if n not in used]
    await drop_segments(ctx, account, ctx.bucket, [*unused, marker_name(ctx.key, upload_id)])
    current = {m["name"] for m in manifest}
    stale = [n for n in old_segments if f"/{seg}/{n}" not in current]
    await drop_segments(ctx, account, ctx.bucket, stale)
    result = x.complete_multipart_upload_result(_location(ctx), ctx.bucket, ctx.key, etag)
    return xml_response(result)


async def abort_multipart_upload(ctx: S3Context) -> web.StreamResponse:
    account = await _target(ctx, "DELETE")
    upload_id = _upload_id(ctx)
    await _read_marker(ctx, account, upload_id)
    parts = await _stored_parts(ctx, account, upload_id)
    names = [part_name(ctx.key, upload_id, n) for n in sorted(parts)]
    await drop_segments(ctx, account, ctx.bucket, [*names, marker_name(ctx.key, upload_id)])
    return empty_response(204)


async def list_parts(ctx: S3Context) -> web.StreamResponse:
    account = await _target(ctx, "GET")
    upload_id = _upload_id(ctx)
    await _read_marker(ctx, account, upload_id)
    q = ctx.s3.query
    marker_text = q.get("part-number-marker", "0")
    if not marker_text.isdigit() or len(marker_text) > 6:
        raise S3Error("InvalidArgument", "part-number-marker must be an integer")
    after = int(marker_text)
    max_parts = parse_max(q.get("max-parts"), "max-parts", KEYS_MAX)
    parts = sorted(
        (p for p in (await _stored_parts(ctx, account, upload_id)).values() if p.number > after),
        key=lambda p: p.number,
    )
    page = parts[:max_parts]
    body = x.list_parts(
        bucket=ctx.bucket, key=ctx.key, upload_id=upload_id, owner=ctx.owner_of(account),
        part_number_marker=after, max_parts=max_parts,
        parts=[x.Part(p.number, p.last_modified_s, p.etag, p.size) for p in page],
        is_truncated=len(parts) > max_parts,
    )  # fmt: skip
    return xml_response(body)


async def _upload_markers(
    ctx: S3Context, account: str, prefix: str, after: tuple[str, str]
) -> list[x.Upload]:
    """Markers (not parts) under `prefix`, after (key, upload id), in listing order."""
    seg = segments_container(ctx.bucket)
    if (await ctx.ops.container_info(account, seg)).status == 404:
        return []
    found: list[x.Upload] = []
    marker = marker_name(after[0], after[1]) if after[1] else after[0]
    for _ in range(_UPLOAD_LIST_PAGES_MAX):
        query = {"format": "json", "prefix": prefix, "limit": str(_LIST_PAGE)}
        if marker:
            query["marker"] = marker
        res = await ctx.ops.get_container(account, seg, query)
        if res.status != 200:
            raise unavailable()
        rows = json.loads(res.body or b"[]")
        for row in rows:
            parsed = parse_segment_name(str(row["name"]))
            if parsed is not None and parsed[2] is None and (parsed[0], parsed[1]) > after:
                when = parse_swift_time(str(row.get("last_modified", "")))
                found.append(x.Upload(parsed[0], parsed[1], when))
        if len(rows) < _LIST_PAGE or len(found) > KEYS_MAX:
            break
        marker = str(rows[-1]["name"])
    return found


def _group_uploads(
    markers: list[x.Upload], prefix: str, delimiter: str | None, max_uploads: int
) -> tuple[list[x.Upload], list[str], bool]:
    """Split uploads into listed ones and common prefixes, max_uploads entries in all."""
    uploads: list[x.Upload] = []
    prefixes: list[str] = []
    for upload in markers:
        rest = upload.key[len(prefix) :]
        common = None
        if delimiter and delimiter in rest:
            common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if common in prefixes:
                continue
        if len(uploads) + len(prefixes) >= max_uploads:
            return uploads, prefixes, True
        if common is not None:
            prefixes.append(common)
        else:
            uploads.append(upload)
    return uploads, prefixes, False


async def list_multipart_uploads(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "GET", account, ctx.bucket)
    q = ctx.s3.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter") or None
    key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    encoding = q.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    max_uploads = parse_max(q.get("max-uploads"), "max-uploads", KEYS_MAX)
    markers = await _upload_markers(ctx, account, prefix, (key_marker, id_marker))
    uploads, prefixes, truncated = _group_uploads(markers, prefix, delimiter, max_uploads)
    body = x.list_multipart_uploads(
        bucket=ctx.bucket, owner=ctx.owner_of(account), key_marker=key_marker,
        upload_id_marker=id_marker, prefix=prefix, delimiter=delimiter,
        max_uploads=max_uploads, uploads=uploads, common_prefixes=prefixes,
        is_truncated=truncated, encoding_type=encoding,
    )  # fmt: skip
    return xml_response(body)


MULTIPART_HANDLERS = {
    "CreateMultipartUpload": create_multipart_upload,
    "UploadPart": upload_part,
    "UploadPartCopy": upload_part_copy,
    "CompleteMultipartUpload": complete_multipart_upload,
    "AbortMultipartUpload": abort_multipart_upload,
    "ListParts": list_parts,
    "ListMultipartUploads": list_multipart_uploads,
}
