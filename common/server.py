"""The HTTP server every cairn daemon uses: aiohttp on uvloop.

It gives each daemon the same outer behaviour: ``/healthcheck``, Prometheus ``/metrics``, a
request id on every request and response, a structured access log with no secrets, errors
turned into plain responses (never a traceback on the wire), several worker processes sharing
one listening socket, and a graceful stop on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import uvloop
from aiohttp import StreamReader, web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from common.leanserver import FastLane, FastRequest, FastRoute, Reply
from common.log import AccessLog, flush_logs, get_logger, new_trans_id, request_id, setup_logging
from common.malloctune import tune_malloc

__all__ = [
    "AUTO_DECOMPRESS",
    "FAST_RESPONSE_HEADERS",
    "FAST_ROUTES",
    "HEALTH_CHECKS",
    "METRICS",
    "SERVICE_NAME",
    "AppFactory",
    "ServiceMetrics",
    "bind_socket",
    "body_chunks",
    "make_app",
    "running_app",
    "serve",
]

log = get_logger("cairn.server")
_access_log = AccessLog("cairn.server")

AppFactory = Callable[[], Awaitable[web.Application]]


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    # The fast lane (common/leanserver): requests it answered, connections it gave aiohttp.
    fast_requests: Counter
    fast_handovers: Counter
    # Labelled children, looked up once: `labels()` takes a lock and builds a key each call.
    _request_children: dict[tuple[str, int], Counter] = field(default_factory=dict)
    _latency_children: dict[str, Histogram] = field(default_factory=dict)

    def observe(self, service: str, method: str, status: int, elapsed_s: float) -> None:
        """Count one request and record its latency."""
        counter = self._request_children.get((method, status))
        if counter is None:
            counter = self.requests.labels(service, method, str(status))
            if len(self._request_children) < _LABEL_CHILDREN_MAX:
                self._request_children[(method, status)] = counter
        counter.inc()
        hist = self._latency_children.get(method)
        if hist is None:
            hist = self.latency.labels(service, method)
            if len(self._latency_children) < _LABEL_CHILDREN_MAX:
                self._latency_children[method] = hist
        hist.observe(elapsed_s)


SERVICE_NAME = web.AppKey("service_name", str)
METRICS = web.AppKey("metrics", ServiceMetrics)
TRANS_ID = web.RequestKey("trans_id", str)
HEALTH_CHECKS = web.AppKey("health_checks", list[Callable[[], Awaitable[str | None]]])
# Set to False on an app whose request bodies must arrive as sent: a storage server keeps a
# body with Content-Encoding: gzip as the gzip bytes the client stored (default True).
AUTO_DECOMPRESS = web.AppKey("auto_decompress", bool)

# Requests served on the fast lane (common/leanserver, docs/lean-http-server.md) before
# aiohttp sees them; an app without any is served by aiohttp alone.
FAST_ROUTES = web.AppKey("fast_routes", list[FastRoute])
# Headers added to every fast-lane answer (what the app's on_response_prepare hooks add).
FAST_RESPONSE_HEADERS = web.AppKey("fast_response_headers", list[tuple[str, str]])

# Methods come from clients: cache at most this many labelled children per metric.
_LABEL_CHILDREN_MAX = 256
_INTERNAL_PATHS = frozenset({"/healthcheck", "/metrics"})


def _make_metrics(service: str) -> ServiceMetrics:
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter(
        "cairn_http_requests",
        "HTTP requests handled",
        ["service", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "cairn_http_request_seconds",
        "Time to first response byte",
        ["service", "method"],
        registry=registry,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    )
    fast_requests = Counter(
        "cairn_fast_lane_requests",
        "Requests answered by the fast lane (also counted in cairn_http_requests)",
        registry=registry,
    )
    fast_handovers = Counter(
        "cairn_fast_lane_handovers",
        "Connections handed from the fast lane to aiohttp",
        registry=registry,
    )
    return ServiceMetrics(registry, requests, latency, fast_requests, fast_handovers)


@web.middleware
async def _outer_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    trans_id = request.headers.get("X-Trans-Id") or new_trans_id()
    request[TRANS_ID] = trans_id
    token = request_id.set(trans_id)
    started = time.monotonic()
    status = 500
    try:
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            status = e.status
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            status = 499  # the client went away
            raise
        except Exception:
            log.exception("unhandled error", extra={"fields": {"path": request.path}})
            resp = web.Response(status=500, text="Internal Server Error\n")
        status = resp.status
        return resp
    finally:
        elapsed = time.monotonic() - started
        app = request.app
        service = app[SERVICE_NAME]
        app[METRICS].observe(service, request.method, status, elapsed)
        if request.path not in _INTERNAL_PATHS:
            _access_log.write(
                {
                    "method": request.method,
                    # the path only: query strings may carry presigned credentials
                    "path": request.path,
                    "status": status,
                    "elapsed_s": round(elapsed, 6),
                    "remote": request.remote,
                }
            )
        request_id.reset(token)


async def _add_trans_id(request: web.Request, resp: web.StreamResponse) -> None:
    """Every response, streamed or not, names its transaction."""
    trans_id = request.get(TRANS_ID)
    if trans_id:
        resp.headers.setdefault("X-Trans-Id", trans_id)
        resp.headers.setdefault("X-Openstack-Request-Id", trans_id)


async def _healthcheck(request: web.Request) -> web.Response:
    for check in request.app[HEALTH_CHECKS]:
        problem = await check()
        if problem:
            return web.Response(status=503, text=f"{problem}\n")
    return web.Response(text="OK")


async def _metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[METRICS].registry)
    resp = web.Response(body=data)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def make_app(service: str, **kwargs: object) -> web.Application:
    """An aiohttp application with cairn's outer behaviour; add routes to it."""
    app = web.Application(middlewares=[_outer_middleware], **kwargs)  # type: ignore[arg-type]
    app[SERVICE_NAME] = service
    app[METRICS] = _make_metrics(service)
    app[HEALTH_CHECKS] = []
    app.on_response_prepare.append(_add_trans_id)
    app.router.add_get("/healthcheck", _healthcheck)
    app.router.add_get("/metrics", _metrics)
    return app


_BACKLOG = 1024  # (create_server listens again on the socket it is given)


def bind_socket(host: str, port: int, backlog: int = _BACKLOG) -> socket.socket:
    """A listening TCP socket that several worker processes can accept on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _runner(app: web.Application, shutdown_s: float = 60.0) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        auto_decompress=app.get(AUTO_DECOMPRESS, True),
        shutdown_timeout=shutdown_s,
    )


async def _serve_on(app_factory: AppFactory, sock: socket.socket, shutdown_s: float) -> None:
    app = await app_factory()
    runner = _runner(app, shutdown_s)
    await runner.setup()
    lane: FastLane | None = None
    server: asyncio.Server | None = None
    if _lane_applies(app):
        lane = _fast_lane(app, runner)
        server = await asyncio.get_running_loop().create_server(
            lane.protocol, sock=sock, backlog=_BACKLOG
        )
    else:
        site = web.SockSite(runner, sock)
        await site.start()
    # What startup built lives as long as the process: out of the collector's way, so each
    # collection walks only what requests allocate.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await _stop_fast(server, lane, shutdown_s)
        await runner.cleanup()


async def _stop_fast(
    server: asyncio.Server | None, lane: FastLane | None, timeout_s: float
) -> None:
    """Stop accepting, close idle fast connections, let the fast requests being answered
    finish (at most `timeout_s`); aiohttp's connections are the runner's to stop."""
    if server is not None:
        server.close()
    if lane is not None:
        await lane.shutdown(timeout_s)


def _run_worker(app_factory: AppFactory, sock: socket.socket, shutdown_s: float) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_on(app_factory, sock, shutdown_s))


def serve(
    app_factory: AppFactory,
    *,
    service: str,
    host: str,
    port: int,
    workers: int = 1,
    log_level: str = "INFO",
    log_format: str = "json",
    shutdown_s: float = 10.0,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Run a daemon until SIGTERM/SIGINT. With workers > 1, forked processes share the socket.

    `ready` is called with the bound port once the socket listens (port 0 picks one).
    """
    setup_logging(service, log_level, log_format)
    tuned = tune_malloc()  # before any body buffer is allocated (common/malloctune.py)
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    if ready is not None:
        ready(bound)
    log.info(
        "listening",
        extra={"fields": {"host": host, "port": bound, "workers": workers, "malloc": tuned}},
    )
    if workers <= 1:
        _run_worker(app_factory, sock, shutdown_s)
        return
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _run_worker(app_factory, sock, shutdown_s)
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                flush_logs()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    _supervise_workers(children)


def _supervise_workers(children: list[int]) -> None:
    """Forward SIGTERM/SIGINT to the workers and wait for all of them."""

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    alive = set(children)
    while alive:
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            break
        if pid in alive:
            alive.discard(pid)
            if alive:  # one worker died: stop the rest so the supervisor restarts us whole
                forward(signal.SIGTERM, None)


@contextlib.asynccontextmanager
async def running_app(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve `app` on an ephemeral loopback port inside the current loop; yields its base URL.

    An app with FAST_ROUTES is served with its fast lane in front of aiohttp, as `serve` does.
    """
    runner = _runner(app)
    await runner.setup()
    lane: FastLane | None = None
    server: asyncio.Server | None = None
    if _lane_applies(app):
        lane = _fast_lane(app, runner)
        server = await asyncio.get_running_loop().create_server(lane.protocol, host, 0)
        sockets = server.sockets
    else:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        assert site._server is not None
        sockets = site._server.sockets  # type: ignore[attr-defined]
    port = int(sockets[0].getsockname()[1])
    try:
        yield f"http://{host}:{port}"
    finally:
        await _stop_fast(server, lane, _TEST_SHUTDOWN_S)
        await runner.cleanup()


_TEST_SHUTDOWN_S = 10.0


# -- the fast lane's outer behaviour (the same as _outer_middleware and _add_trans_id) ------
_TEXT = "text/plain; charset=utf-8"
_INTERNAL_ERROR: Reply = (500, [("Content-Type", _TEXT)], b"Internal Server Error\n")


def _lane_applies(app: web.Application) -> bool:
    """The app has fast routes and no aiohttp middleware besides make_app's own: the fast
    lane cannot run other middlewares, so an app that adds one is served by aiohttp alone."""
    if not app.get(FAST_ROUTES):
        return False
    return all(m is _outer_middleware for m in app.middlewares)


def _fast_lane(app: web.Application, runner: web.AppRunner) -> FastLane:
    fallback = runner.server
    assert fallback is not None, "runner.setup() first"
    dispatch, abandoned = _fast_dispatcher(app)
    return FastLane(
        app[FAST_ROUTES],
        dispatch,
        fallback,
        abandoned=abandoned,
        on_hand_over=app[METRICS].fast_handovers.inc,
    )


def _fast_dispatcher(
    app: web.Application,
) -> tuple[
    Callable[[FastRoute, FastRequest], Awaitable[Reply]],
    Callable[[FastRequest, int, float], None],
]:
    """The fast lane's dispatcher (a route's handler in the outer behaviour) and the record
    of a request given up before its handler ran (body timed out, client gone)."""
    service = app[SERVICE_NAME]
    metrics = app[METRICS]
    extra = list(app.get(FAST_RESPONSE_HEADERS, ()))
    served = metrics.fast_requests.inc

    def record(request: FastRequest, status: int, elapsed_s: float) -> None:
        metrics.observe(service, request.method, status, elapsed_s)
        path = request.path
        _access_log.write(
            {
                "method": request.method,
                "path": unquote(path) if "%" in path else path,
                "status": status,
                "elapsed_s": round(elapsed_s, 6),
                "remote": request.remote,
            }
        )

    async def dispatch(route: FastRoute, request: FastRequest) -> Reply:
        served()
        trans_id = request.headers.get("X-Trans-Id") or new_trans_id()
        token = request_id.set(trans_id)
        started = time.monotonic()
        status = 500
        try:
            try:
                reply = _reply(await route.handler(request))
            except web.HTTPException as e:  # raised rather than returned: the same answer
                reply = _reply(e)
            except (asyncio.CancelledError, ConnectionResetError):
                status = 499  # the client went away
                raise
            except Exception:
                log.exception("unhandled error", extra={"fields": {"path": request.path}})
                reply = (_INTERNAL_ERROR[0], list(_INTERNAL_ERROR[1]), _INTERNAL_ERROR[2])
            status, headers, _body = reply
            names = {name.lower() for name, _value in headers}
            for name, value in (
                ("X-Trans-Id", trans_id),
                ("X-Openstack-Request-Id", trans_id),
                *extra,
            ):
                if name.lower() not in names:
                    headers.append((name, value))
            return reply
        finally:
            record(request, status, time.monotonic() - started)
            request_id.reset(token)

    return dispatch, record


def _reply(resp: object) -> Reply:
    """A handler's aiohttp `web.Response` (never prepared) as status, headers and body."""
    if not isinstance(resp, web.Response):
        raise TypeError(f"a fast route answered {type(resp).__name__}, not a web.Response")
    body = resp.body
    if body is None:
        body = b""
    elif not isinstance(body, bytes):
        raise TypeError("a fast route's response body must be bytes")
    headers = list(resp.headers.items())
    if body and "Content-Type" not in resp.headers:
        headers.append(("Content-Type", "application/octet-stream"))  # as aiohttp adds
    return resp.status, headers, body


logging.getLogger("aiohttp.server").setLevel(logging.WARNING)


async def body_chunks(content: StreamReader) -> AsyncIterator[bytes]:
    """A request body's bytes in the chunks the HTTP parser made (no joining, no re-slicing).

    Ends at the end of the body. Empty reads at a chunked body's chunk boundaries are skipped;
    not aiohttp's iter_chunks(), which stops only on (b"", False): its EmptyStreamReader
    answers (b"", True) from the second read on.
    """
    while True:
        chunk, _ = await content.readchunk()
        if chunk:
            yield chunk
        elif content.at_eof():
            return
