"""Asking proxy/auth whether a Swift request may proceed, fetching the ACLs it needs.

Order (see docs/auth.md): decide from the identity alone; if that is not enough and the
request targets a container or object, fetch the container's ACLs (cached per worker) and
ask again; if the decision says the account ACL could grant it, fetch that and ask again.
COPY and X-Copy-From also need read access to the source.
"""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from proxy.auth import AccountAcl, Decision, Identity, PathParts, TempAuth
from proxy.auth import account_acl_from_sysmeta as _acl_from_sysmeta
from proxy.ops import Ops
from proxy.swift import SwiftPath

__all__ = ["authorize_request"]

_ACCOUNT_ACL_HEADERS = ("X-Account-Sysmeta-Core-Access-Control", "X-Account-Access-Control")


async def _decide(
    auth: TempAuth,
    ops: Ops,
    method: str,
    identity: Identity | None,
    parts: PathParts,
    referrer: str | None,
) -> Decision:
    decision = auth.authorize(identity, method, parts, referrer=referrer)
    if decision.allowed:
        return decision
    read_acl = write_acl = None
    if parts.container is not None and parts.account is not None:
        info = await ops.container_info(parts.account, parts.container, fresh=True)
        if info.status == 200:
            read_acl, write_acl = info.read_acl or None, info.write_acl or None
            decision = auth.authorize(
                identity,
                method,
                parts,
                referrer=referrer,
                container_read_acl=read_acl,
                container_write_acl=write_acl,
            )
            if decision.allowed:
                return decision
    if decision.needs_account_acl and parts.account is not None:
        acl = await _account_acl(ops, parts.account)
        decision = auth.authorize(
            identity,
            method,
            parts,
            referrer=referrer,
            container_read_acl=read_acl,
            container_write_acl=write_acl,
            account_acl=acl,
        )
    return decision


async def _account_acl(ops: Ops, account: str) -> AccountAcl:
    info = await ops.account_info(account, fresh=True)
    for h in _ACCOUNT_ACL_HEADERS:
        value = info.headers.get(h)
        if value:
            return _acl_from_sysmeta(value)
    return AccountAcl()


async def authorize_request(
    auth: TempAuth, ops: Ops, request: web.Request, identity: Identity | None, path: SwiftPath
) -> Decision:
    parts = PathParts(path.version, path.account, path.container, path.obj)
    referrer = request.headers.get("Referer")
    method = request.method
    if method == "COPY":
        method = "GET"
    decision = await _decide(auth, ops, method, identity, parts, referrer)
    if not decision.allowed:
        return decision
    source = None
    if request.method == "COPY" and path.container is not None and path.obj is not None:
        dest = unquote(request.headers.get("Destination", "")).lstrip("/")
        if "/" in dest:
            c, o = dest.split("/", 1)
            account = unquote(request.headers.get("Destination-Account", path.account))
            source = PathParts(path.version, account, c, o)
            return await _decide(auth, ops, "PUT", identity, source, referrer)
    if request.method == "PUT" and "X-Copy-From" in request.headers:
        src = unquote(request.headers["X-Copy-From"]).lstrip("/")
        if "/" in src:
            c, o = src.split("/", 1)
            account = unquote(request.headers.get("X-Copy-From-Account", path.account))
            source = PathParts(path.version, account, c, o)
            return await _decide(auth, ops, "GET", identity, source, referrer)
    return decision
