"""The container server: Swift's backend protocol for container databases.

``/<dev>/<part>/<account>/<container>``: PUT (create), GET (listing), HEAD, POST (metadata),
DELETE (only when empty). ``/<dev>/<part>/<account>/<container>/<object>``: PUT (object row
from the object server), DELETE (tombstone row). ``POST /_object_rows``: many object rows in
one request (common/rowupdates.py).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter, Histogram

from common import rowupdates
from common.clock import Clock, SystemClock
from common.deploy import DeploymentConfig, StorageNodeConfig
from common.leanserver import FastRequest, FastRoute, RequestHead
from common.listingdb import DbInfo, ListingEnv, Subdir
from common.listingdb.http import (
    BackendPath,
    DeviceEnvs,
    DeviceUnavailable,
    bad_request,
    error_response,
    listing_request,
    metadata_from_headers,
    metadata_headers,
    parse_backend_path,
    parse_count,
    render_listing,
    require_timestamp,
    run_on_device,
)
from common.listingdb.recon import add_recon_routes
from common.listingdb.repl_service import ReplicationService, add_replication_routes
from common.nodecli import storage_server_main
from common.rowupdates import RowBatchError, RowUpdate
from common.server import FAST_ROUTES, HEALTH_CHECKS, METRICS, make_app
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker, ObjectRow, bytes_used, object_count
from containerd.conf import ContainerServerConf
from containerd.rowbatch import RowBatcher, RowsBusy
from containerd.updater import (
    AccountReporter,
    AccountTarget,
    TargetParseError,
    parse_account_targets,
    report_once,
)
from ring.hashing import hash_path

__all__ = [
    "RECON_DAEMONS",
    "STATE",
    "ContainerState",
    "container_headers",
    "main",
    "make_container_app",
]

_META_PREFIXES = ("x-container-meta-", "x-container-sysmeta-", "x-container-sync-")
_META_EXACT = {
    h: "-".join(w.capitalize() for w in h.split("-"))
    for h in (
        "x-container-read",
        "x-container-write",
        "x-versions-location",
        "x-history-location",
    )
}

# The daemons of this node whose recon files this server serves (GET /recon/<daemon>).
RECON_DAEMONS = ("container-replicator", "container-updater")


@dataclass
class ContainerState:
    conf: ContainerServerConf
    clock: Clock
    envs: DeviceEnvs
    listed_rows: Counter
    account_reports: Counter
    session: aiohttp.ClientSession | None = None
    reporter: AccountReporter | None = field(default=None)
    # Object row updates of each device, committed in groups (containerd/rowbatch.py).
    batchers: dict[str, RowBatcher] = field(default_factory=dict)
    row_batches: Histogram | None = None

    def client(self) -> aiohttp.ClientSession:
        assert self.session is not None, "the app has not started"
        return self.session

    def _count(self, rows: int) -> None:
        if self.row_batches is not None:
            self.row_batches.observe(rows)

    def batcher(self, device: str, env: ListingEnv) -> RowBatcher:
        b = self.batchers.get(device)
        if b is None or b.env is not env:
            b = RowBatcher(env, lambda: self.envs.check_device(device), on_batch=self._count)
            self.batchers[device] = b
        return b


STATE = web.AppKey("container_state", ContainerState)


def container_headers(info: DbInfo) -> dict[str, str]:
    created = Timestamp.parse(info.created_at)
    put = Timestamp.parse(info.put_timestamp)
    return {
        "X-Container-Object-Count": str(object_count(info)),
        "X-Container-Bytes-Used": str(bytes_used(info)),
        "X-Timestamp": created.normal,
        "X-Put-Timestamp": put.normal,
        "X-Backend-Timestamp": created.internal,
        "X-Backend-Put-Timestamp": put.internal,
        "X-Backend-Delete-Timestamp": Timestamp.parse(info.delete_timestamp).internal,
        "X-Backend-Status-Changed-At": Timestamp.parse(info.status_changed_at).internal,
        "X-Backend-Storage-Policy-Index": "0",
        **metadata_headers(info.metadata),
    }


def _broker(state: ContainerState, env: ListingEnv, p: BackendPath) -> ContainerBroker:
    assert p.container is not None
    h = hash_path(state.conf.hash_path_prefix, state.conf.hash_path_suffix, p.account, p.container)
    return ContainerBroker(env, p.partition, h)


def _targets(request: web.Request) -> tuple[AccountTarget, ...]:
    try:
        return parse_account_targets(request.headers)
    except TargetParseError as e:
        raise bad_request(str(e)) from None


async def _report(
    state: ContainerState,
    env: ListingEnv,
    broker: ContainerBroker,
    targets: Sequence[AccountTarget],
) -> list[int | None]:
    if not targets:
        return []
    statuses = await report_once(
        state.client(), env, broker, state.clock, state.conf.account_update_timeout_s, targets
    )
    for s in statuses:
        state.account_reports.labels("ok" if s is not None and s < 300 else "failed").inc()
    return statuses


async def _put_container(
    request: web.Request, state: ContainerState, p: BackendPath
) -> web.Response:
    ts = require_timestamp(request.headers)
    targets = _targets(request)
    md = metadata_from_headers(request.headers, _META_PREFIXES, _META_EXACT, ts)
    extra: dict[str, Any] = {"account_targets": [t.to_wire() for t in targets]} if targets else {}
    assert p.container is not None
    env = await state.envs.get(p.device)
    broker = _broker(state, env, p)

    def work(_env: ListingEnv) -> Any:
        return broker.create_or_update(p.account, p.container, ts, md, extra)

    outcome = await run_on_device(state.envs, p.device, work)
    if outcome.status == "conflict":
        return web.Response(status=409, headers=container_headers(outcome.info))
    statuses = await _report(state, env, broker, targets)
    if statuses and all(s == 404 for s in statuses):
        return web.Response(status=404, text="account not found\n")
    return web.Response(status=201 if outcome.status == "created" else 202)


async def _delete_container(
    request: web.Request, state: ContainerState, p: BackendPath
) -> web.Response:
    ts = require_timestamp(request.headers)
    targets = _targets(request)
    extra: dict[str, Any] = {"account_targets": [t.to_wire() for t in targets]} if targets else {}
    env = await state.envs.get(p.device)
    broker = _broker(state, env, p)
    outcome = await run_on_device(
        state.envs, p.device, lambda _e: broker.delete_db(ts, require_empty=True, extra=extra)
    )
    headers = container_headers(outcome.info) if outcome.info is not None else {}
    if outcome.status == "not_found":
        return web.Response(status=404, headers=headers)
    if outcome.status == "conflict":
        return web.Response(status=409, headers=headers, text="container is not empty\n")
    await _report(state, env, broker, targets)
    return web.Response(status=204)


async def _post_container(
    request: web.Request, state: ContainerState, p: BackendPath
) -> web.Response:
    ts = require_timestamp(request.headers)
    md = metadata_from_headers(request.headers, _META_PREFIXES, _META_EXACT, ts)
    env = await state.envs.get(p.device)
    broker = _broker(state, env, p)
    info = await run_on_device(state.envs, p.device, lambda _e: broker.update_metadata(md))
    return web.Response(status=404 if info is None else 204)


def _missing(info: DbInfo | None) -> web.Response:
    return web.Response(status=404, headers=container_headers(info) if info is not None else {})


async def _head_container(
    request: web.Request, state: ContainerState, p: BackendPath
) -> web.Response:
    env = await state.envs.get(p.device)
    broker = _broker(state, env, p)
    info = await run_on_device(state.envs, p.device, lambda _e: broker.get_info())
    if info is None or broker.is_deleted(info):
        return _missing(info)
    return web.Response(status=204, headers=container_headers(info))


async def _get_container(
    request: web.Request, state: ContainerState, p: BackendPath
) -> web.Response:
    params, fmt = listing_request(request)
    env = await state.envs.get(p.device)
    broker = _broker(state, env, p)
    assert p.container is not None
    root = ("container", p.container, "object")

    def work(_env: ListingEnv) -> tuple[DbInfo | None, int, bytes, int]:
        got = broker.list_rows(params)
        if got is None or broker.is_deleted(got[0]):
            return (got[0] if got else None), 404, b"", 0
        info, items = got
        status, body = render_listing(fmt, root, items, ObjectRow.listing_fields)
        return info, status, body, sum(not isinstance(i, Subdir) for i in items)

    info, status, body, rows = await run_on_device(state.envs, p.device, work)
    if status == 404:
        return _missing(info)
    assert info is not None
    state.listed_rows.inc(rows)
    resp = web.Response(status=status, body=body or None, headers=container_headers(info))
    resp.content_type = fmt.content_type
    resp.charset = "utf-8"
    return resp


def _object_row(op: str, headers: Mapping[str, str], obj: str) -> tuple[ObjectRow, int]:
    """The row a PUT or DELETE of an object path records, and its success status; raises
    the backend's 400 for a bad header (the same checks for single and batched rows)."""
    ts = require_timestamp(headers)
    if op == "DELETE":
        return ObjectRow.tombstone(obj, ts), 204
    for name in ("X-Size", "X-Content-Type", "X-Etag"):
        if name not in headers:
            raise bad_request(f"missing {name}")
    row = ObjectRow(
        name=obj,
        timestamp=ts.internal,
        size=parse_count(headers, "X-Size"),
        content_type=headers["X-Content-Type"],
        etag=headers["X-Etag"].strip('"'),
    )
    return row, 201


async def _put_object(request: web.Request, state: ContainerState, p: BackendPath) -> web.Response:
    assert p.obj is not None
    row, ok_status = _object_row("PUT", request.headers, p.obj)
    return await _apply_object_row(state, p, row, ok_status)


async def _delete_object(
    request: web.Request, state: ContainerState, p: BackendPath
) -> web.Response:
    assert p.obj is not None
    row, ok_status = _object_row("DELETE", request.headers, p.obj)
    return await _apply_object_row(state, p, row, ok_status)


async def _apply_object_row(
    state: ContainerState, p: BackendPath, row: ObjectRow, ok_status: int
) -> web.Response:
    try:
        code, text = await _row_status(state, p, row, ok_status)
    except web.HTTPException as e:
        return error_response(e)
    return web.Response(status=code, text=text or None)


async def _row_status(
    state: ContainerState, p: BackendPath, row: ObjectRow, ok_status: int
) -> tuple[int, str]:
    """Apply one object row: the status of its answer and the text of its body (a batched
    row needs only the status, so no response is built for it). Raises the HTTP error of
    a device that cannot be used."""
    env = await state.envs.get(p.device)
    broker = _broker(state, env, p)
    try:
        changed = await state.batcher(p.device, env).put_row(broker, row)
    except DeviceUnavailable:
        return 507, f"device {p.device} is not available\n"
    except RowsBusy as e:
        return 503, f"{e}\n"
    if changed is None:
        return 404, "container not found\n"
    if changed and state.reporter is not None:
        state.reporter.poke(env, broker)
    return ok_status, ""


async def _batched_row(state: ContainerState, u: RowUpdate) -> int:
    """One row of a batch: the status its single-row request would have got."""
    raw_path = "/" + "/".join(
        quote(x, safe="") for x in (u.device, str(u.partition), u.account, u.container, u.obj)
    )
    try:
        p = parse_backend_path(raw_path, 3, 3)
        assert p.obj is not None
        row, ok_status = _object_row(u.op, CIMultiDict(u.headers), p.obj)
        return (await _row_status(state, p, row, ok_status))[0]
    except web.HTTPException as e:
        return e.status


async def _post_object_rows(request: web.Request) -> web.Response:
    """``POST /_object_rows``: many object row updates in one request, a status for each
    (format in common/rowupdates.py and docs/db-replication.md)."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        version = {rowupdates.VERSION_HEADER: str(rowupdates.VERSION)}
        return web.Response(status=413, headers=version, text="row batch body too large\n")
    return await _object_rows_reply(request.app[STATE], body)


async def _object_rows_reply(state: ContainerState, body: bytes) -> web.Response:
    """The answer to a row batch (its whole body): from the aiohttp handler above or the
    fast lane's route (`_fast_rows_route`)."""
    version = {rowupdates.VERSION_HEADER: str(rowupdates.VERSION)}
    try:
        rows = rowupdates.decode_request(body)
    except RowBatchError as e:
        return web.Response(status=400, headers=version, text=f"{e}\n")
    if len(rows) == 1:  # common under light load: no task for a lone row
        statuses = [await _batched_row(state, rows[0])]
    else:
        statuses = list(await asyncio.gather(*(_batched_row(state, u) for u in rows)))
    body = rowupdates.encode_response(statuses)
    return web.Response(
        status=200, body=body, headers=version, content_type=rowupdates.CONTENT_TYPE
    )


def _fast_rows_route(state: ContainerState) -> FastRoute:
    """``POST /_object_rows`` on the fast lane (docs/lean-http-server.md)."""

    async def handler(req: FastRequest) -> web.Response:
        return await _object_rows_reply(state, req.body)

    def accept(head: RequestHead) -> bool:
        return head.path == rowupdates.PATH

    return FastRoute("POST", accept, handler, rowupdates.BODY_BYTES_MAX)


_CONTAINER_VERBS = {
    "PUT": _put_container,
    "GET": _get_container,
    "HEAD": _head_container,
    "POST": _post_container,
    "DELETE": _delete_container,
}
_OBJECT_VERBS = {"PUT": _put_object, "DELETE": _delete_object}


async def _dispatch(request: web.Request) -> web.StreamResponse:
    try:
        state = request.app[STATE]
        p = parse_backend_path(request.raw_path, 2, 3)
        verbs = _CONTAINER_VERBS if p.obj is None else _OBJECT_VERBS
        handler = verbs.get(request.method)
        if handler is None:
            raise web.HTTPMethodNotAllowed(request.method, sorted(verbs))
        return await handler(request, state, p)
    except web.HTTPException as e:
        return error_response(e)


async def make_container_app(
    conf: ContainerServerConf, clock: Clock | None = None, *, fast_lane: bool = True
) -> web.Application:
    """The container server app; `fast_lane`: row batches are served by the lean server in
    front of aiohttp ([[nodes]] fast_lane in the deployment, docs/lean-http-server.md)."""
    app = make_app("container-server")
    registry = app[METRICS].registry
    state = ContainerState(
        conf=conf,
        clock=clock or SystemClock(),
        envs=DeviceEnvs(conf.devices_dir, "containers", conf.mount_check, conf.env_options()),
        listed_rows=Counter(
            "cairn_container_listed_rows", "Object rows returned in listings", registry=registry
        ),
        account_reports=Counter(
            "cairn_container_account_reports",
            "Stats reports sent to account servers",
            ["result"],
            registry=registry,
        ),
    )
    state.row_batches = Histogram(
        "cairn_container_row_batch_rows",
        "Object row updates committed per LMDB transaction (group commit)",
        registry=registry,
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    )
    app[STATE] = state
    if fast_lane:
        app[FAST_ROUTES] = [_fast_rows_route(state)]

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        state.session = aiohttp.ClientSession()
        state.reporter = AccountReporter(
            state.session,
            state.clock,
            conf.account_update_interval_s,
            conf.account_update_timeout_s,
        )
        try:
            yield
        finally:
            await state.reporter.close()
            await state.session.close()
            state.envs.close()

    async def devices_present() -> str | None:
        if conf.mount_check and not conf.devices_dir.is_dir():
            return f"devices directory {conf.devices_dir} is missing"
        return None

    app.cleanup_ctx.append(lifetime)
    app[HEALTH_CHECKS].append(devices_present)
    add_replication_routes(app, ReplicationService(state.envs, ContainerBroker, state.clock))
    add_recon_routes(app, conf.devices_dir, RECON_DAEMONS)
    app.router.add_post(rowupdates.PATH, _post_object_rows)
    app.router.add_route("*", "/{path:.+}", _dispatch)
    return app


def main(argv: list[str] | None = None) -> int:
    async def make(deploy: DeploymentConfig, node: StorageNodeConfig) -> web.Application:
        conf = ContainerServerConf.from_deployment(deploy, node)
        return await make_container_app(conf, fast_lane=node.fast_lane)

    return storage_server_main(
        argv,
        prog="containerd.server",
        description=__doc__,
        service="container-server",
        port_of=lambda node: node.container_port,
        make_app=make,
    )


if __name__ == "__main__":
    sys.exit(main())
