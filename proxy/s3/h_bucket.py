"""S3 bucket operations on top of proxy.ops: create, head, delete, location, listings, ACLs,
versioning status, multi-object delete."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json

from aiohttp import web

from proxy import largeobj
from proxy.s3 import xml as x
from proxy.s3.access import (
    authorize,
    no_such_bucket,
    register_bucket,
    registry_owner,
    resolve_bucket,
    unavailable,
    unregister_bucket,
)
from proxy.s3.acl import container_to_grants, request_bucket_acl
from proxy.s3.body import read_small_body
from proxy.s3.context import S3Context, empty_response, xml_response
from proxy.s3.errors import S3Error
from proxy.s3.headers import HeaderMap
from proxy.s3.listing import KEYS_MAX, list_buckets, list_objects, parse_max
from proxy.s3.multipart import SEGMENTS_SUFFIX, segments_container
from proxy.s3.xmlparse import (
    parse_access_control_policy,
    parse_create_bucket,
    parse_delete,
    parse_versioning,
)

__all__ = ["BUCKET_HANDLERS"]

LOCATION_SYSMETA = "X-Container-Sysmeta-S3-Location"
VERSIONING_SYSMETA = "X-Container-Sysmeta-S3-Versioning"
SMALL_BODY_BYTES_MAX = 64 * 1024
DELETE_CONCURRENCY = 16
_CLEANUP_PAGE = 10_000


def _hmap(ctx: S3Context) -> HeaderMap:
    return HeaderMap(ctx.request.headers)


def _need_account(ctx: S3Context) -> str:
    if ctx.account is None:
        raise S3Error("AccessDenied", resource=ctx.s3.resource)
    return ctx.account


async def list_buckets_handler(ctx: S3Context) -> web.StreamResponse:
    account = _need_account(ctx)
    await authorize(ctx, "GET", account, None)
    buckets = await list_buckets(ctx.ops, account, SEGMENTS_SUFFIX)
    return xml_response(x.list_all_my_buckets(ctx.requester_owner(), buckets))


async def create_bucket(ctx: S3Context) -> web.StreamResponse:
    account = _need_account(ctx)
    bucket = ctx.bucket
    await authorize(ctx, "PUT", account, bucket)
    body, _ = await read_small_body(
        ctx.request, ctx.verified, _hmap(ctx), bytes_max=SMALL_BODY_BYTES_MAX
    )
    location = parse_create_bucket(body) or ""
    region = ctx.settings.region
    if region is not None and location not in ("", region):
        raise S3Error("InvalidLocationConstraint", extra=[("LocationConstraint", location)])
    acls = request_bucket_acl(_hmap(ctx), None, ctx.owner_of(account).id)
    own = await ctx.ops.container_info(account, bucket)
    owner = await registry_owner(ctx.ops, bucket)
    if own.status == 200:
        if owner is None:
            await register_bucket(ctx.ops, bucket, account)
        raise S3Error("BucketAlreadyOwnedByYou", extra=[("BucketName", bucket)])
    if owner is not None and owner != account:
        theirs = await ctx.ops.container_info(owner, bucket)
        if theirs.status != 404:
            raise S3Error("BucketAlreadyExists", extra=[("BucketName", bucket)])
    await register_bucket(ctx.ops, bucket, account)
    headers = {LOCATION_SYSMETA: location}
    if acls is not None:
        headers.update({"X-Container-Read": acls.read, "X-Container-Write": acls.write})
    res = await ctx.ops.put_container(account, bucket, headers)
    if res.status >= 300:
        await unregister_bucket(ctx.ops, bucket, account)
        raise unavailable()
    return empty_response(200, [("Location", f"/{bucket}")])


async def head_bucket(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "HEAD", account, ctx.bucket)
    # HeadBucket is the client's own existence check: ask the container servers, not the
    # worker's cache (a bucket deleted through another worker must be gone at once)
    info = await ctx.ops.container_info(account, ctx.bucket, fresh=True)
    if info.status == 404:
        raise no_such_bucket(ctx.bucket)
    if info.status >= 300:
        raise unavailable()
    region = info.headers.get(LOCATION_SYSMETA) or ctx.settings.region or "us-east-1"
    return empty_response(200, [("x-amz-bucket-region", region)])


async def _delete_all(ctx: S3Context, account: str, container: str) -> None:
    """Empty and remove a hidden segments container (best effort, bounded pages)."""
    for _ in range(100):
        res = await ctx.ops.get_container(
            account, container, {"format": "json", "limit": str(_CLEANUP_PAGE)}
        )
        if res.status != 200:
            break
        names = [str(row["name"]) for row in _json_rows(res.body)]
        for name in names:
            await ctx.ops.delete_object(account, container, name)
        if len(names) < _CLEANUP_PAGE:
            break
    await ctx.ops.delete_container(account, container, {})


def _json_rows(body: bytes) -> list[dict[str, object]]:
    rows = json.loads(body or b"[]")
    assert isinstance(rows, list)
    return rows


async def delete_bucket(ctx: S3Context) -> web.StreamResponse:
    bucket = ctx.bucket
    account = await resolve_bucket(ctx, bucket)
    await authorize(ctx, "DELETE", account, bucket)
    res = await ctx.ops.delete_container(account, bucket, {})
    if res.status == 409:
        raise S3Error("BucketNotEmpty", extra=[("BucketName", bucket)])
    if res.status == 404:
        raise S3Error("NoSuchBucket", extra=[("BucketName", bucket)])
    if res.status >= 300:
        raise unavailable()
    segments = segments_container(bucket)
    if (await ctx.ops.container_info(account, segments)).status == 200:
        await _delete_all(ctx, account, segments)
    await unregister_bucket(ctx.ops, bucket, account)
    return empty_response(204)


async def get_bucket_location(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "GET", account, ctx.bucket, owner_only=True)
    info = await ctx.ops.container_info(account, ctx.bucket)
    return xml_response(x.location_constraint(info.headers.get(LOCATION_SYSMETA, "")))


def _encoding(ctx: S3Context) -> str | None:
    value = ctx.s3.query.get("encoding-type")
    if value is not None and value != "url":
        raise S3Error(
            "InvalidArgument",
            "Invalid Encoding Method specified in Request",
            extra=[("ArgumentName", "encoding-type"), ("ArgumentValue", value[:32])],
        )
    return value


async def list_objects_v1(ctx: S3Context) -> web.StreamResponse:
    q = ctx.s3.query
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "GET", account, ctx.bucket)
    prefix, marker, delimiter = q.get("prefix", ""), q.get("marker", ""), q.get("delimiter")
    max_keys = parse_max(q.get("max-keys"), "max-keys", KEYS_MAX)
    page = await list_objects(
        ctx.ops, account, ctx.bucket, prefix=prefix, delimiter=delimiter or None,
        marker=marker, max_keys=max_keys,
    )  # fmt: skip
    body = x.list_bucket_v1(
        bucket=ctx.bucket, prefix=prefix, marker=marker, delimiter=delimiter,
        max_keys=max_keys, page=page, encoding_type=_encoding(ctx), owner=ctx.owner_of(account),
    )  # fmt: skip
    return xml_response(body)


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii") + b"==").decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise S3Error(
            "InvalidArgument",
            "The continuation token provided is incorrect",
            extra=[("ArgumentName", "continuation-token")],
        ) from None


def _encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8")).decode("ascii").rstrip("=")


async def list_objects_v2(ctx: S3Context) -> web.StreamResponse:
    q = ctx.s3.query
    if q.get("list-type") != "2":
        raise S3Error("InvalidArgument", "Invalid List Type specified in Request")
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "GET", account, ctx.bucket)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter")
    token, start_after = q.get("continuation-token"), q.get("start-after")
    marker = _decode_token(token) if token is not None else (start_after or "")
    max_keys = parse_max(q.get("max-keys"), "max-keys", KEYS_MAX)
    page = await list_objects(
        ctx.ops, account, ctx.bucket, prefix=prefix, delimiter=delimiter or None,
        marker=marker, max_keys=max_keys,
    )  # fmt: skip
    next_token = _encode_token(page.next_marker) if page.next_marker is not None else None
    fetch_owner = q.get("fetch-owner", "false").lower() == "true"
    body = x.list_bucket_v2(
        bucket=ctx.bucket, prefix=prefix, delimiter=delimiter, max_keys=max_keys, page=page,
        continuation_token=token, next_continuation_token=next_token, start_after=start_after,
        encoding_type=_encoding(ctx), owner=ctx.owner_of(account) if fetch_owner else None,
    )  # fmt: skip
    return xml_response(body)


async def list_object_versions(ctx: S3Context) -> web.StreamResponse:
    q = ctx.s3.query
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "GET", account, ctx.bucket)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter")
    key_marker, version_marker = q.get("key-marker", ""), q.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise S3Error(
            "InvalidArgument",
            "A version-id marker cannot be specified without a key marker.",
            extra=[("ArgumentName", "version-id-marker")],
        )
    if version_marker not in ("", "null"):
        raise S3Error("InvalidArgument", "Invalid version id specified")
    max_keys = parse_max(q.get("max-keys"), "max-keys", KEYS_MAX)
    page = await list_objects(
        ctx.ops, account, ctx.bucket, prefix=prefix, delimiter=delimiter or None,
        marker=key_marker, max_keys=max_keys,
    )  # fmt: skip
    body = x.list_versions(
        bucket=ctx.bucket, prefix=prefix, key_marker=key_marker,
        version_id_marker=version_marker, delimiter=delimiter, max_keys=max_keys, page=page,
        owner=ctx.owner_of(account), encoding_type=_encoding(ctx),
    )  # fmt: skip
    return xml_response(body)


async def delete_one(ctx: S3Context, account: str, key: str) -> int:
    """Delete an object (and a large object's segments); the backend status."""
    head = await ctx.ops.head_object(account, ctx.bucket, key)
    if head.status == 404:
        return 404
    if head.headers.get("X-Static-Large-Object", "").lower() == "true":
        res = await largeobj.delete_slo(ctx.ops, account, ctx.bucket, key)
        return 204 if res.status < 300 else res.status
    return (await ctx.ops.delete_object(account, ctx.bucket, key)).status


async def delete_objects(ctx: S3Context) -> web.StreamResponse:
    hmap = _hmap(ctx)
    has_checksum = any(n.startswith("x-amz-checksum-") for n in hmap.names())
    if "content-md5" not in hmap and not has_checksum:
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "DELETE", account, ctx.bucket, "*")
    body, _ = await read_small_body(
        ctx.request, ctx.verified, hmap, bytes_max=ctx.settings.xml_body_bytes_max
    )
    quiet, objects = parse_delete(body)
    limit = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def one(key: str, version: str | None) -> x.Deleted | x.DeleteError:
        if version not in (None, "null"):
            return x.DeleteError(key, "NoSuchVersion", "The specified version does not exist.",
                                 version)  # fmt: skip
        async with limit:
            status = await delete_one(ctx, account, key)
        if status < 300 or status == 404:
            return x.Deleted(key, version)
        return x.DeleteError(key, "InternalError", "We encountered an internal error.", version)

    results = await asyncio.gather(*(one(k, v) for k, v in objects))
    deleted = [r for r in results if isinstance(r, x.Deleted)]
    errors = [r for r in results if isinstance(r, x.DeleteError)]
    return xml_response(x.delete_result(deleted, errors, quiet=quiet))


async def get_bucket_acl(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "HEAD", account, ctx.bucket, owner_only=True)
    info = await ctx.ops.container_info(account, ctx.bucket)
    owner = ctx.owner_of(account)
    grants = container_to_grants(owner, info.read_acl, info.write_acl)
    return xml_response(x.access_control_policy(owner, grants))


async def put_bucket_acl(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "POST", account, ctx.bucket, owner_only=True)
    hmap = _hmap(ctx)
    body, _ = await read_small_body(ctx.request, ctx.verified, hmap, bytes_max=SMALL_BODY_BYTES_MAX)
    policy = parse_access_control_policy(body) if body.strip() else None
    acls = request_bucket_acl(hmap, policy, ctx.owner_of(account).id)
    if acls is None:
        raise S3Error("MalformedACLError")
    headers = {"X-Container-Read": acls.read, "X-Container-Write": acls.write}
    res = await ctx.ops.post_container(account, ctx.bucket, headers)
    if res.status >= 300:
        raise unavailable()
    return empty_response(200)


async def get_bucket_versioning(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "GET", account, ctx.bucket, owner_only=True)
    info = await ctx.ops.container_info(account, ctx.bucket)
    return xml_response(x.versioning_configuration(info.headers.get(VERSIONING_SYSMETA) or None))


async def put_bucket_versioning(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "POST", account, ctx.bucket, owner_only=True)
    body, _ = await read_small_body(
        ctx.request, ctx.verified, _hmap(ctx), bytes_max=SMALL_BODY_BYTES_MAX
    )
    status = parse_versioning(body)
    if status == "Enabled":
        raise S3Error(
            "NotImplemented", "Bucket versioning is not implemented; every object is version null."
        )
    res = await ctx.ops.post_container(account, ctx.bucket, {VERSIONING_SYSMETA: status})
    if res.status >= 300:
        raise unavailable()
    return empty_response(200)


async def get_bucket_tagging(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "GET", account, ctx.bucket, owner_only=True)
    raise S3Error("NoSuchTagSet", extra=[("BucketName", ctx.bucket)])


async def put_bucket_tagging(ctx: S3Context) -> web.StreamResponse:
    raise S3Error("NotImplemented", "Bucket tagging is not implemented.")


async def delete_bucket_tagging(ctx: S3Context) -> web.StreamResponse:
    account = await resolve_bucket(ctx, ctx.bucket)
    await authorize(ctx, "POST", account, ctx.bucket, owner_only=True)
    return empty_response(204)


BUCKET_HANDLERS = {
    "ListBuckets": list_buckets_handler,
    "CreateBucket": create_bucket,
    "HeadBucket": head_bucket,
    "DeleteBucket": delete_bucket,
    "GetBucketLocation": get_bucket_location,
    "ListObjects": list_objects_v1,
    "ListObjectsV2": list_objects_v2,
    "ListObjectVersions": list_object_versions,
    "DeleteObjects": delete_objects,
    "GetBucketAcl": get_bucket_acl,
    "PutBucketAcl": put_bucket_acl,
    "GetBucketVersioning": get_bucket_versioning,
    "PutBucketVersioning": put_bucket_versioning,
    "GetBucketTagging": get_bucket_tagging,
    "PutBucketTagging": put_bucket_tagging,
    "DeleteBucketTagging": delete_bucket_tagging,
}
