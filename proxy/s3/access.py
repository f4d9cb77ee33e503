"""Where a bucket lives and who may touch it.

S3 bucket names are global; Swift container names are per account. The S3 front keeps a
registry (docs/s3.md, "Bucket registry"): one zero-byte object per bucket in the hidden
account `.s3_buckets`, container `buckets`, naming the storage account that owns it. It
answers "BucketAlreadyExists" (another account has the name) and lets anonymous and
cross-account requests find a bucket. A container made through Swift is found in the
requester's own account first, registered or not.

Authorization reuses proxy/auth's Swift decisions (tempauth owners, container and account
ACLs) by asking about the Swift request each S3 operation amounts to. Two S3 additions:
every authenticated identity is in the `.authenticated` group, and a write ACL holding
`.r:*` lets anonymous S3 writes in (see proxy/s3/acl.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from proxy.auth import AccountAcl, Decision, PathParts, Verdict, account_acl_from_sysmeta
from proxy.s3.acl import ANY_REFERRER, AUTHENTICATED_GROUP
from proxy.s3.context import S3Context
from proxy.s3.errors import S3Error

if TYPE_CHECKING:
    from proxy.ops import ContainerInfo, Ops

__all__ = [
    "REGISTRY_ACCOUNT",
    "REGISTRY_CONTAINER",
    "REGISTRY_VERSION",
    "authorize",
    "register_bucket",
    "registry_owner",
    "resolve_bucket",
    "unregister_bucket",
]

REGISTRY_ACCOUNT = ".s3_buckets"
REGISTRY_CONTAINER = "buckets"
REGISTRY_VERSION = "1"
_OWNER_HEADER = "X-Object-Meta-Account"
_VERSION_HEADER = "X-Object-Meta-Registry-Version"
_ACCOUNT_ACL_HEADERS = ("X-Account-Sysmeta-Core-Access-Control", "X-Account-Access-Control")
_WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})


def unavailable() -> S3Error:
    return S3Error("ServiceUnavailable", "The storage cluster is not answering; try again.")


def no_such_bucket(bucket: str) -> S3Error:
    return S3Error("NoSuchBucket", resource=f"/{bucket}", extra=[("BucketName", bucket)])


async def registry_owner(ops: Ops, bucket: str) -> str | None:
    """The storage account the registry names for `bucket`, or None."""
    res = await ops.head_object(REGISTRY_ACCOUNT, REGISTRY_CONTAINER, bucket)
    if res.status == 404:
        return None
    if res.status >= 300:
        raise unavailable()
    return res.headers.get(_OWNER_HEADER) or None


_NOTHING: tuple[bytes, ...] = ()


async def _empty_body() -> AsyncIterator[bytes]:
    for chunk in _NOTHING:
        yield chunk


async def register_bucket(ops: Ops, bucket: str, account: str) -> None:
    info = await ops.container_info(REGISTRY_ACCOUNT, REGISTRY_CONTAINER)
    if info.status == 404:
        made = await ops.put_container(REGISTRY_ACCOUNT, REGISTRY_CONTAINER, {})
        if made.status >= 300:
            raise unavailable()
        ops.invalidate(REGISTRY_ACCOUNT, REGISTRY_CONTAINER)
    elif info.status != 200:
        raise unavailable()
    headers = {
        _OWNER_HEADER: account,
        _VERSION_HEADER: REGISTRY_VERSION,
        "Content-Type": "application/x-cairn-s3-bucket",
        "Content-Length": "0",
    }
    res = await ops.put_object(REGISTRY_ACCOUNT, REGISTRY_CONTAINER, bucket, headers, _empty_body())
    if res.status >= 300:
        raise unavailable()


async def unregister_bucket(ops: Ops, bucket: str, account: str) -> None:
    """Remove the registry entry if (and only if) it still names `account`."""
    if await registry_owner(ops, bucket) == account:
        await ops.delete_object(REGISTRY_ACCOUNT, REGISTRY_CONTAINER, bucket)


async def _container(ops: Ops, account: str, bucket: str) -> ContainerInfo:
    info = await ops.container_info(account, bucket)
    if info.status == 404:
        # container_info caches per worker, 404s too: a bucket another worker just made
        # must not look missing here, so a miss is confirmed uncached (and the cache fixed).
        fresh = await ops.head_container(account, bucket)
        if fresh.status < 300:
            ops.invalidate(account, bucket)
            info = await ops.container_info(account, bucket)
    if info.status >= 500:
        raise unavailable()
    return info


async def resolve_bucket(ctx: S3Context, bucket: str) -> str:
    """The storage account holding `bucket`: the requester's own first, then the registry's."""
    if ctx.account is not None:
        info = await _container(ctx.ops, ctx.account, bucket)
        if info.status == 200:
            return ctx.account
    owner = await registry_owner(ctx.ops, bucket)
    if owner is not None and owner != ctx.account:
        info = await _container(ctx.ops, owner, bucket)
        if info.status == 200:
            return owner
    raise no_such_bucket(bucket)


async def _account_acl(ops: Ops, account: str) -> AccountAcl:
    info = await ops.account_info(account)
    for name in _ACCOUNT_ACL_HEADERS:
        value = info.headers.get(name)
        if value:
            return account_acl_from_sysmeta(value)
    return AccountAcl()


def _denied(ctx: S3Context) -> S3Error:
    return S3Error("AccessDenied", resource=ctx.s3.resource)


async def authorize(
    ctx: S3Context,
    method: str,
    account: str,
    bucket: str | None,
    key: str | None = None,
    *,
    owner_only: bool = False,
) -> Decision:
    """Allow the Swift `method` on /account[/bucket[/key]] for this requester, or raise
    AccessDenied. `owner_only`: also require Swift ownership (ACL changes)."""
    identity = ctx.identity
    if identity is not None:
        identity = dataclasses.replace(identity, groups=(*identity.groups, AUTHENTICATED_GROUP))
    parts = PathParts("v1", account, bucket, key)
    decision = ctx.auth.authorize(identity, method, parts)
    read_acl = write_acl = None
    if not decision.allowed and bucket is not None:
        # ACLs are read fresh: a change made through another proxy worker applies at once
        info = await ctx.ops.container_info(account, bucket, fresh=True)
        if info.status >= 500:
            raise unavailable()
        if info.status == 200:
            read_acl, write_acl = info.read_acl or None, info.write_acl or None
            public_write = ANY_REFERRER in [x.strip() for x in (write_acl or "").split(",")]
            if identity is None and method in _WRITE_METHODS and key is not None and public_write:
                return Decision(Verdict.ALLOW, reason="S3 public-read-write bucket")
            decision = ctx.auth.authorize(
                identity, method, parts, container_read_acl=read_acl, container_write_acl=write_acl
            )
    if not decision.allowed and decision.needs_account_acl:
        decision = ctx.auth.authorize(
            identity,
            method,
            parts,
            container_read_acl=read_acl,
            container_write_acl=write_acl,
            account_acl=await _account_acl(ctx.ops, account),
        )
    if not decision.allowed or (owner_only and not decision.swift_owner):
        raise _denied(ctx)
    return decision
