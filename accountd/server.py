"""The account server: Swift's backend protocol for account databases.

``/<dev>/<part>/<account>``: PUT (create), GET (container listing), HEAD, POST (metadata),
DELETE (marks the account deleted). ``/<dev>/<part>/<account>/<container>``: PUT, the stats
report of one container from its container server.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import Counter

from accountd.broker import AccountBroker, ContainerRow
from accountd.conf import AccountServerConf
from common.clock import Clock, SystemClock
from common.deploy import DeploymentConfig, StorageNodeConfig
from common.listingdb import DbInfo, ListingEnv, Subdir
from common.listingdb.http import (
    BackendPath,
    DeviceEnvs,
    error_response,
    listing_request,
    metadata_from_headers,
    metadata_headers,
    parse_backend_path,
    parse_count,
    parse_timestamp,
    render_listing,
    require_timestamp,
    run_on_device,
)
from common.listingdb.recon import add_recon_routes
from common.listingdb.repl_service import ReplicationService, add_replication_routes
from common.nodecli import storage_server_main
from common.server import HEALTH_CHECKS, METRICS, make_app
from common.timestamps import Timestamp
from ring.hashing import hash_path

__all__ = ["RECON_DAEMONS", "STATE", "AccountState", "account_headers", "main", "make_account_app"]

_META_PREFIXES = ("x-account-meta-", "x-account-sysmeta-")
# Swift keeps the account ACL as system metadata; the proxy translates it back.
_META_EXACT = {"x-account-access-control": "X-Account-Sysmeta-Core-Access-Control"}
_ZERO = Timestamp(0)

# The daemons of this node whose recon files this server serves (GET /recon/<daemon>).
RECON_DAEMONS = ("account-replicator",)


@dataclass
class AccountState:
    conf: AccountServerConf
    clock: Clock
    envs: DeviceEnvs
    listed_rows: Counter


STATE = web.AppKey("account_state", AccountState)


def account_headers(info: DbInfo) -> dict[str, str]:
    created = Timestamp.parse(info.created_at)
    put = Timestamp.parse(info.put_timestamp)
    return {
        "X-Account-Container-Count": str(info.stats.get("container_count", 0)),
        "X-Account-Object-Count": str(info.stats.get("object_count", 0)),
        "X-Account-Bytes-Used": str(info.stats.get("bytes_used", 0)),
        "X-Timestamp": created.normal,
        "X-Put-Timestamp": put.normal,
        "X-Backend-Timestamp": created.internal,
        "X-Backend-Put-Timestamp": put.internal,
        "X-Backend-Delete-Timestamp": Timestamp.parse(info.delete_timestamp).internal,
        "X-Backend-Status-Changed-At": Timestamp.parse(info.status_changed_at).internal,
        **metadata_headers(info.metadata),
    }


def _missing(info: DbInfo | None) -> web.Response:
    if info is None:
        return web.Response(status=404)
    headers = account_headers(info)
    headers["X-Account-Status"] = "Deleted"
    return web.Response(status=404, headers=headers)


def _broker(state: AccountState, env: ListingEnv, p: BackendPath) -> AccountBroker:
    h = hash_path(state.conf.hash_path_prefix, state.conf.hash_path_suffix, p.account)
    return AccountBroker(env, p.partition, h)


async def _put_account(request: web.Request, state: AccountState, p: BackendPath) -> web.Response:
    ts = require_timestamp(request.headers)
    md = metadata_from_headers(request.headers, _META_PREFIXES, _META_EXACT, ts)
    broker = _broker(state, await state.envs.get(p.device), p)
    outcome = await run_on_device(
        state.envs, p.device, lambda _e: broker.create_or_update(p.account, None, ts, md)
    )
    if outcome.status == "conflict":
        return web.Response(
            status=403, text="Recently deleted\n", headers=account_headers(outcome.info)
        )
    return web.Response(status=201 if outcome.status == "created" else 202)


async def _put_container_row(
    request: web.Request, state: AccountState, p: BackendPath
) -> web.Response:
    assert p.container is not None
    put_ts = require_timestamp(request.headers, "X-Put-Timestamp")
    delete_raw = request.headers.get("X-Delete-Timestamp")
    delete_ts = parse_timestamp(delete_raw, "X-Delete-Timestamp") if delete_raw else _ZERO
    stats_raw = request.headers.get("X-Backend-Stats-Timestamp")
    stats_ts = (
        parse_timestamp(stats_raw, "X-Backend-Stats-Timestamp")
        if stats_raw
        else max(put_ts, delete_ts)
    )
    row = ContainerRow(
        name=p.container,
        put_timestamp=put_ts.internal,
        delete_timestamp=delete_ts.internal,
        object_count=parse_count(request.headers, "X-Object-Count"),
        bytes_used=parse_count(request.headers, "X-Bytes-Used"),
        stats_timestamp=stats_ts.internal,
    )
    broker = _broker(state, await state.envs.get(p.device), p)
    changed = await run_on_device(state.envs, p.device, lambda _e: broker.put_row(row))
    if changed is None:
        return web.Response(status=404, text="account not found\n")
    return web.Response(status=204 if row.deleted else 201)


async def _post_account(request: web.Request, state: AccountState, p: BackendPath) -> web.Response:
    ts = require_timestamp(request.headers)
    md = metadata_from_headers(request.headers, _META_PREFIXES, _META_EXACT, ts)
    broker = _broker(state, await state.envs.get(p.device), p)
    info = await run_on_device(state.envs, p.device, lambda _e: broker.update_metadata(md))
    return web.Response(status=404 if info is None else 204)


async def _delete_account(
    request: web.Request, state: AccountState, p: BackendPath
) -> web.Response:
    ts = require_timestamp(request.headers)
    broker = _broker(state, await state.envs.get(p.device), p)
    outcome = await run_on_device(
        state.envs, p.device, lambda _e: broker.delete_db(ts, require_empty=False)
    )
    if outcome.status == "not_found":
        return _missing(outcome.info)
    if outcome.status == "conflict":  # an older DELETE than the account's PUT
        assert outcome.info is not None
        return web.Response(status=409, headers=account_headers(outcome.info))
    return web.Response(status=204)


async def _head_account(request: web.Request, state: AccountState, p: BackendPath) -> web.Response:
    broker = _broker(state, await state.envs.get(p.device), p)
    info = await run_on_device(state.envs, p.device, lambda _e: broker.get_info())
    if info is None or broker.is_deleted(info):
        return _missing(info)
    return web.Response(status=204, headers=account_headers(info))


async def _get_account(request: web.Request, state: AccountState, p: BackendPath) -> web.Response:
    params, fmt = listing_request(request)
    broker = _broker(state, await state.envs.get(p.device), p)
    root = ("account", p.account, "container")

    def work(_env: ListingEnv) -> tuple[DbInfo | None, int, bytes, int]:
        got = broker.list_rows(params)
        if got is None or broker.is_deleted(got[0]):
            return (got[0] if got else None), 404, b"", 0
        info, items = got
        status, body = render_listing(fmt, root, items, ContainerRow.listing_fields)
        return info, status, body, sum(not isinstance(i, Subdir) for i in items)

    info, status, body, rows = await run_on_device(state.envs, p.device, work)
    if status == 404:
        return _missing(info)
    assert info is not None
    state.listed_rows.inc(rows)
    resp = web.Response(status=status, body=body or None, headers=account_headers(info))
    resp.content_type = fmt.content_type
    resp.charset = "utf-8"
    return resp


_ACCOUNT_VERBS = {
    "PUT": _put_account,
    "GET": _get_account,
    "HEAD": _head_account,
    "POST": _post_account,
    "DELETE": _delete_account,
}
_CONTAINER_VERBS = {"PUT": _put_container_row}


async def _dispatch(request: web.Request) -> web.StreamResponse:
    try:
        state = request.app[STATE]
        p = parse_backend_path(request.raw_path, 1, 2)
        verbs = _ACCOUNT_VERBS if p.container is None else _CONTAINER_VERBS
        handler = verbs.get(request.method)
        if handler is None:
            raise web.HTTPMethodNotAllowed(request.method, sorted(verbs))
        return await handler(request, state, p)
    except web.HTTPException as e:
        return error_response(e)


async def make_account_app(conf: AccountServerConf, clock: Clock | None = None) -> web.Application:
    app = make_app("account-server")
    state = AccountState(
        conf=conf,
        clock=clock or SystemClock(),
        envs=DeviceEnvs(conf.devices_dir, "accounts", conf.mount_check, conf.env_options()),
        listed_rows=Counter(
            "cairn_account_listed_rows",
            "Container rows returned in listings",
            registry=app[METRICS].registry,
        ),
    )
    app[STATE] = state

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.envs.close()

    async def devices_present() -> str | None:
        if conf.mount_check and not conf.devices_dir.is_dir():
            return f"devices directory {conf.devices_dir} is missing"
        return None

    app.cleanup_ctx.append(lifetime)
    app[HEALTH_CHECKS].append(devices_present)
    add_replication_routes(app, ReplicationService(state.envs, AccountBroker, state.clock))
    add_recon_routes(app, conf.devices_dir, RECON_DAEMONS)
    app.router.add_route("*", "/{path:.+}", _dispatch)
    return app


def main(argv: list[str] | None = None) -> int:
    async def make(deploy: DeploymentConfig, node: StorageNodeConfig) -> web.Application:
        return await make_account_app(AccountServerConf.from_deployment(deploy, node))

    return storage_server_main(
        argv,
        prog="accountd.server",
        description=__doc__,
        service="account-server",
        port_of=lambda node: node.account_port,
        make_app=make,
    )


if __name__ == "__main__":
    sys.exit(main())
