"""The proxy server application: auth, the Swift API, /info, and (when present) S3."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from common.clock import Clock, SystemClock
from common.deploy import DeploymentConfig
from common.nodes import ErrorLimiter
from common.server import AUTO_DECOMPRESS, HEALTH_CHECKS, make_app
from proxy.auth import (
    AuthResponse,
    Decision,
    InvalidToken,
    PathParts,
    TempAuth,
    backend_request_headers,
)
from proxy.authz import authorize_request
from proxy.backend import Backend, Rings
from proxy.expect import close_after_refusal, make_expect_handler
from proxy.ops import Ops
from proxy.swift import (
    SwiftPath,
    gatekeep_request,
    handle_swift,
    info_document,
    parse_swift_path,
    text,
)
from ring import Ring

__all__ = ["PROXY", "ProxyState", "make_proxy_app"]


@dataclass
class ProxyState:
    cfg: DeploymentConfig
    ops: Ops
    auth: TempAuth
    public_url: str


PROXY = web.AppKey("proxy", ProxyState)
_AUTH_PATHS = ("/auth/v1.0", "/auth/v1/", "/v1.0")


def load_rings(cfg: DeploymentConfig) -> Rings:
    d = Path(cfg.ring_dir())
    c = cfg.cluster

    def one(kind: str) -> Ring:
        return Ring(d / f"{kind}.ring", c.hash_path_prefix, c.hash_path_suffix)

    return Rings(account=one("account"), container=one("container"), object=one("object"))


def _public_url(cfg: DeploymentConfig, request: web.Request) -> str:
    if cfg.proxy.public_url:
        return cfg.proxy.public_url.rstrip("/")
    host = request.headers.get("Host") or f"{cfg.proxy.host}:{cfg.proxy.port}"
    return f"{request.scheme}://{host}"


def _auth_response(resp: AuthResponse) -> web.Response:
    return web.Response(
        status=resp.status, headers=CIMultiDict(resp.headers), body=resp.body or None
    )


async def _handle_auth(request: web.Request) -> web.StreamResponse:
    st = request.app[PROXY]
    resp = st.auth.handle_auth_get(
        request.headers, _public_url(st.cfg, request), path=request.path, method=request.method
    )
    return _auth_response(resp)


_V1Auth = tuple[SwiftPath, Decision] | web.StreamResponse
_V1_AUTH = web.RequestKey("cairn_v1_auth", object)


async def _authorize_v1(request: web.Request) -> _V1Auth:
    """A /v1 request's path, token and authorization: (path, decision), or the response that
    refuses it. Kept on the request, so an `Expect: 100-continue` check (proxy/expect.py) and
    the handler share one decision (and its container reads)."""
    done = request.get(_V1_AUTH)
    if done is not None:
        return cast(_V1Auth, done)
    st = request.app[PROXY]
    out: _V1Auth
    path = parse_swift_path(request.rel_url.raw_path)
    if isinstance(path, web.StreamResponse):
        out = path
    else:
        try:
            identity = st.auth.authenticate(request.headers)
        except InvalidToken as e:
            out = _auth_response(e.response)
        else:
            decision = await authorize_request(st.auth, st.ops, request, identity, path)
            out = (path, decision) if decision.allowed else _auth_response(decision.response())
    request[_V1_AUTH] = out
    return out


async def _refuses_before_body(request: web.Request) -> bool:
    """What the headers alone decide: S3 credentials and signature; Swift path, token and
    authorization (see proxy/expect.py)."""
    if _s3_available():
        from proxy.s3.frontend import refuses_before_body

        s3 = await refuses_before_body(request.app[PROXY], request)
        if s3 is not None:
            return s3
    if not request.path.startswith(("/v1/", "/v1.0/")):
        return False
    return isinstance(await _authorize_v1(request), web.StreamResponse)


async def _not_found(_request: web.Request) -> web.StreamResponse:
    return text(404)


async def _handle_info(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return text(405, headers=CIMultiDict({"Allow": "GET, HEAD"}))
    body = info_document(request.app[PROXY].cfg.proxy, s3_enabled=_s3_available())
    return web.Response(body=body, content_type="application/json")


async def _handle_v1(request: web.Request) -> web.StreamResponse:
    st = request.app[PROXY]
    if request.path.startswith("/v1.0") and request.path.rstrip("/") == "/v1.0":
        return await _handle_auth(request)
    authorized = await _authorize_v1(request)
    if isinstance(authorized, web.StreamResponse):
        return authorized
    path, decision = authorized
    headers: Mapping[str, str] = gatekeep_request(request.headers)
    if request.method in ("PUT", "POST"):
        parts = PathParts(path.version, path.account, path.container, path.obj)
        cleaned = backend_request_headers(parts, headers, decision)
        if isinstance(cleaned, AuthResponse):
            return _auth_response(cleaned)
        headers = CIMultiDict(cleaned)
    return await handle_swift(request, st.ops, path, decision, headers, st.cfg.proxy)


def _s3_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("proxy.s3.middleware") is not None


def _s3_middlewares(state_getter: Callable[[], ProxyState]) -> list[object]:
    if not _s3_available():
        return []
    from proxy.s3 import middleware as s3mw

    factory: Callable[..., object] = s3mw.s3_middleware
    return [factory(state_getter)]


async def make_proxy_app(cfg: DeploymentConfig, clock: Clock | None = None) -> web.Application:
    clock = clock or SystemClock()
    holder: dict[str, ProxyState] = {}
    middlewares = _s3_middlewares(lambda: holder["state"])
    app = make_app("proxy-server", client_max_size=1 << 20)
    # Bodies are stored as the client sent them (Content-Encoding: gzip stays gzip).
    app[AUTO_DECOMPRESS] = False
    for mw in middlewares:
        app.middlewares.append(mw)  # type: ignore[arg-type]
    rings = load_rings(cfg)
    auth = TempAuth.from_deployment(cfg, clock)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=256, keepalive_timeout=30, enable_cleanup_closed=True
        )
        session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )
        p = cfg.proxy
        backend = Backend(
            rings,
            session,
            clock,
            conn_timeout_s=p.conn_timeout_s,
            node_timeout_s=p.node_timeout_s,
            error_limiter=ErrorLimiter(
                clock, p.error_suppression_limit, p.error_suppression_interval_s
            ),
            shuffle_reads=p.read_order == "shuffle",
        )
        ops = Ops(backend, clock, account_autocreate=p.account_autocreate)
        state = ProxyState(cfg, ops, auth, p.public_url)
        holder["state"] = state
        app[PROXY] = state
        yield
        await backend.close()  # its lean connection pool, then the aiohttp session

    app.cleanup_ctx.append(lifetime)

    async def rings_loaded() -> str | None:
        return None

    app[HEALTH_CHECKS].append(rings_loaded)
    app.router.add_route("*", "/info", _handle_info)
    for p in ("/auth/v1.0", "/auth/v1.0/", "/auth/v1/{tail:.*}"):
        app.router.add_route("*", p, _handle_auth)
    app.router.add_route("*", "/v1.0", _handle_auth)
    expect = make_expect_handler(_refuses_before_body)
    app.on_response_prepare.append(close_after_refusal)
    app.router.add_route("*", "/v1/{tail:.*}", _handle_v1, expect_handler=expect)
    app.router.add_route("*", "/v1.0/{tail:.*}", _handle_v1, expect_handler=expect)
    # Everything else is the S3 front's (its middleware answers before this handler) or
    # nobody's; the route exists so S3 uploads get the same expect handling.
    app.router.add_route("*", "/{tail:.*}", _not_found, expect_handler=expect)
    return app


AppFactory = Callable[[], Awaitable[web.Application]]
