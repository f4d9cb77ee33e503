"""The S3 front as an aiohttp middleware: pick S3 requests, authenticate, classify, dispatch,
and turn every failure into an S3 error document (never a Swift error, never a traceback).

A request is S3 when it carries S3 authentication (header or presigned query), or when it
is anonymous and its path is not one of the Swift or system paths. Everything else goes on
to the Swift routes untouched.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

from common.log import get_logger, new_trans_id, request_id
from proxy.s3.authtypes import VerifiedAuth, split_query, split_target
from proxy.s3.context import S3Context, S3Settings
from proxy.s3.errors import S3Error, invalid_access_key
from proxy.s3.handlers import dispatch
from proxy.s3.headers import HeaderMap
from proxy.s3.request import bucket_from_host, classify
from proxy.s3.sigv4 import is_s3_request, parse_auth, verify

if TYPE_CHECKING:
    from common.deploy import DeploymentConfig
    from proxy.auth import Identity, TempAuth
    from proxy.ops import Ops

__all__ = [
    "ProxyStateLike",
    "is_swift_path",
    "refuses_before_body",
    "s3_middleware",
    "settings_from",
]

log = get_logger("cairn.proxy.s3")

_SWIFT_PREFIXES = ("/v1/", "/v1.0/", "/auth/", "/info/")
_SWIFT_PATHS = frozenset({"/v1", "/v1.0", "/auth", "/info", "/healthcheck", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProxyStateLike(Protocol):
    """What the S3 front needs of proxy.app.ProxyState."""

    cfg: DeploymentConfig
    ops: Ops
    auth: TempAuth


def is_swift_path(path: str) -> bool:
    return path in _SWIFT_PATHS or path.startswith(_SWIFT_PREFIXES)


def settings_from(cfg: DeploymentConfig) -> S3Settings:
    domains = tuple(d.strip() for d in cfg.proxy.s3_domain.split(",") if d.strip())
    return S3Settings(domains=domains, skew_s_max=float(cfg.proxy.s3_max_skew_s))


def _wants_s3(request: web.Request, raw_query: list[tuple[str, str]]) -> bool:
    if is_s3_request(request.headers, raw_query):
        return True
    if "X-Auth-Token" in request.headers or "X-Storage-Token" in request.headers:
        return False
    return not is_swift_path(request.path)


def _error_response(request: web.Request, err: S3Error, trans_id: str) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict(err.headers)
    headers["x-amz-request-id"] = trans_id
    if request.method == "HEAD":
        return web.Response(status=err.status, headers=headers)
    headers["Content-Type"] = "application/xml"
    return web.Response(status=err.status, body=err.to_xml(trans_id), headers=headers)


async def _authenticate(
    state: ProxyStateLike,
    settings: S3Settings,
    request: web.Request,
    raw_path: str,
    raw_query: list[tuple[str, str]],
) -> tuple[VerifiedAuth | None, Identity | None, str | None]:
    """(verified auth, identity, storage account), all None for an anonymous request."""
    host_bucket = bucket_from_host(request.headers.get("Host"), settings.domains)
    auth = parse_auth(
        request.method, raw_path, raw_query, request.headers,
        region=settings.region, virtual_host_bucket=host_bucket,
    )  # fmt: skip
    if auth is None:
        return None, None, None
    creds = state.auth.s3_credentials(auth.access_key)
    if creds is None:
        raise invalid_access_key(auth.access_key)
    verified = verify(auth, creds.secret_key, state.ops.clock, skew_s_max=settings.skew_s_max)
    return verified, creds.identity, creds.storage_account


def s3_middleware(
    state_getter: Callable[[], ProxyStateLike],
    *,
    rng: random.Random | None = None,
) -> Middleware:
    """The middleware the proxy installs; `state_getter` gives the running proxy's state."""
    rng = rng or random.Random(int.from_bytes(os.urandom(16), "big"))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        raw_path, raw_query_text = split_target(request.raw_path)
        raw_query = split_query(raw_query_text)
        if not _wants_s3(request, raw_query):
            return await handler(request)
        trans_id = request_id.get()
        if trans_id == "-":  # not behind common/server's request-id middleware
            trans_id = new_trans_id()
        state = state_getter()
        settings = settings_from(state.cfg)
        try:
            verified, identity, account = await _authenticate(
                state, settings, request, raw_path, raw_query
            )
            s3 = classify(
                request.method, request.headers.get("Host"), raw_path, raw_query,
                HeaderMap(request.headers), domains=settings.domains,
                strict_bucket_names=settings.strict_bucket_names,
            )  # fmt: skip
            ctx = S3Context(
                request=request, ops=state.ops, auth=state.auth, clock=state.ops.clock,
                rng=rng, settings=settings, s3=s3, request_id=trans_id,
                verified=verified, identity=identity, account=account,
            )  # fmt: skip
            resp = await dispatch(ctx)
        except S3Error as err:
            err.with_resource(request.path)
            return _error_response(request, err, trans_id)
        except (ConnectionResetError, web.HTTPException):
            raise
        except Exception:
            log.exception("S3 request failed", extra={"fields": {"path": request.path}})
            return _error_response(request, S3Error("InternalError"), trans_id)
        if not resp.prepared:
            resp.headers["x-amz-request-id"] = trans_id
        return resp

    return middleware


async def refuses_before_body(state: ProxyStateLike, request: web.Request) -> bool | None:
    """None when `request` is not for the S3 front; else whether its credentials or
    signature fail, which the headers alone tell (so an upload need not be read first)."""
    raw_path, raw_query_text = split_target(request.raw_path)
    raw_query = split_query(raw_query_text)
    if not _wants_s3(request, raw_query):
        return None
    try:
        await _authenticate(state, settings_from(state.cfg), request, raw_path, raw_query)
    except S3Error:
        return True
    return False
