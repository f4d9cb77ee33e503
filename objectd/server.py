"""The object server: Swift's backend object protocol over HTTP, one per storage node.

``python -m objectd.server --config FILE --node NAME [--data-dir DIR]``
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from common.clock import Clock, SystemClock
from common.deploy import DeploymentConfig, StorageNodeConfig
from common.nodecli import storage_server_main
from common.puttrailer import (
    TRAILER_SUPPORT_HEADER,
    TRAILER_VERSION,
    TRAILER_VERSIONS_HEADER,
    TRAILER_VERSIONS_TEXT,
)
from common.server import (
    AUTO_DECOMPRESS,
    FAST_RESPONSE_HEADERS,
    FAST_ROUTES,
    HEALTH_CHECKS,
    METRICS,
    make_app,
)
from common.syncring import SyncRing
from objectd.conf import STATE, ObjectMetrics, ObjectServerConf, ServerState
from objectd.devices import Devices
from objectd.faulty import FaultPlan
from objectd.midput import mid_put_route
from objectd.reads import handle_get
from objectd.recon import ReconError, ReconGauges, read_recon
from objectd.replication_server import handle_replicate, handle_ssync
from objectd.smallget import fast_read_routes
from objectd.smallput import fast_put_route
from objectd.update_batcher import UpdateBatcher
from objectd.writes import expect_handler, guarded, handle_delete, handle_post, handle_put

__all__ = ["SERVICE", "ObjectServerConf", "main", "make_object_app"]

SERVICE = "object-server"
UPDATE_CONNECTIONS_MAX = 64


async def _advertise_trailer(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers[TRAILER_SUPPORT_HEADER] = str(TRAILER_VERSION)
    response.headers[TRAILER_VERSIONS_HEADER] = TRAILER_VERSIONS_TEXT


async def make_object_app(
    conf: ObjectServerConf,
    clock: Clock | None = None,
    *,
    fault_plan: FaultPlan | None = None,
    fast_lane: bool = True,
) -> web.Application:
    """The object server app; `fault_plan` (tests only) makes every DiskFile a faulty twin.

    `fast_lane`: small whole-body PUTs, medium ones (up to 1 MiB, blockd's chunks),
    object HEADs and the proxy's whole-body GETs are served by the lean server in front of
    aiohttp (objectd/smallput.py, objectd/midput.py, objectd/smallget.py,
    docs/lean-http-server.md; [[nodes]] fast_lane in the deployment).
    """
    app = make_app(SERVICE, client_max_size=1024**2)
    app[AUTO_DECOMPRESS] = False  # store bodies exactly as sent (Content-Encoding included)
    app.on_response_prepare.append(_advertise_trailer)
    metrics = ObjectMetrics.create(app[METRICS].registry)
    devices = Devices(
        conf.devices_dir,
        conf.hash_path_prefix,
        conf.hash_path_suffix,
        mount_check=conf.mount_check,
        threads_per_device=conf.threads_per_device,
        ops_queued_max=conf.ops_queued_max,
        disk_timeout_s=conf.disk_timeout_s,
        on_quarantine=lambda _dest: metrics.quarantines.inc(),
        fault_plan=fault_plan,
    )
    state = ServerState(conf, clock or SystemClock(), devices, metrics)
    app[STATE] = state
    if fast_lane:
        # Served by the lean server in front of aiohttp; every other request goes to
        # aiohttp (docs/lean-http-server.md). Add a route here as one more list item.
        app[FAST_ROUTES] = [
            fast_put_route(state),
            mid_put_route(state),
            *fast_read_routes(state),
        ]
        app[FAST_RESPONSE_HEADERS] = [
            (TRAILER_SUPPORT_HEADER, str(TRAILER_VERSION)),
            (TRAILER_VERSIONS_HEADER, TRAILER_VERSIONS_TEXT),
        ]

    gauges = ReconGauges.create(app[METRICS].registry)

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=UPDATE_CONNECTIONS_MAX)
        # Container servers set no cookies: a DummyCookieJar skips the cookie filtering
        # aiohttp does for every request.
        state.session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )
        if conf.container_update_batching:
            state.batcher = UpdateBatcher(
                state.session,
                state.clock,
                conf.container_update_timeout_s,
                rows_max=conf.container_update_batch_rows_max,
                in_flight_max=conf.container_update_batches_in_flight,
                on_batch=metrics.update_batch_rows.observe,
                linger_s=conf.container_update_linger_s,
            )
        if conf.io_uring:
            devices.ring = SyncRing.open(asyncio.get_running_loop())
        refresher = asyncio.create_task(gauges.refresh_forever(conf.devices_dir))
        yield
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        if state.batcher is not None:
            await state.batcher.close()
        await state.session.close()
        await asyncio.to_thread(devices.close)
        if devices.ring is not None:
            devices.ring.close()
            devices.ring = None
        if state.syncs is not None:
            state.syncs.close()

    async def any_device_usable() -> str | None:
        usable = await asyncio.to_thread(devices.usable_devices)
        return None if usable else f"no usable device under {conf.devices_dir}"

    app.cleanup_ctx.append(lifetime)
    app[HEALTH_CHECKS].append(any_device_usable)
    app.router.add_get("/info", _info)
    app.router.add_get("/recon/{daemon}", _recon)
    route = "/{device}/{partition}/{account}/{container}/{obj:.+}"
    app.router.add_route("PUT", route, guarded(handle_put), expect_handler=expect_handler)
    app.router.add_route("POST", route, guarded(handle_post))
    app.router.add_route("DELETE", route, guarded(handle_delete))
    app.router.add_get(route, guarded(handle_get), allow_head=True)
    # Swift's REPLICATE/SSYNC verbs as paths: aiohttp's parser accepts only registered
    # methods. A leading "_" is never a device name, so these cannot shadow object paths.
    app.router.add_post("/_replicate/{device}/{partition}", handle_replicate)
    app.router.add_post("/_replicate/{device}/{partition}/{suffixes}", handle_replicate)
    app.router.add_post("/_ssync/{device}/{partition}", handle_ssync)
    app.router.add_route("*", "/{tail:.*}", _not_an_object_path)
    return app


async def _not_an_object_path(request: web.Request) -> web.Response:
    if request.method not in ("GET", "HEAD", "PUT", "POST", "DELETE"):
        return web.Response(status=405, text=f"method {request.method} not allowed\n")
    return web.Response(
        status=400, text="path must be /device/partition/account/container/object\n"
    )


async def _recon(request: web.Request) -> web.Response:
    devices_dir = request.app[STATE].conf.devices_dir
    try:
        rec = await asyncio.to_thread(read_recon, devices_dir, request.match_info["daemon"])
    except ReconError as e:
        return web.Response(status=400, text=f"{e}\n")
    if rec is None:
        return web.Response(status=404, text="no recon data for that daemon yet\n")
    return web.json_response(rec)


async def _info(request: web.Request) -> web.Response:
    conf = request.app[STATE].conf
    return web.json_response(
        {"service": SERVICE, "object_bytes_max": conf.object_bytes_max, "format_version": 1}
    )


def main(argv: list[str] | None = None) -> int:
    async def make(deploy: DeploymentConfig, node: StorageNodeConfig) -> web.Application:
        # devices_dir is not created here: with mount_check a missing device stays missing.
        conf = ObjectServerConf.from_deployment(deploy, node)
        return await make_object_app(conf, fast_lane=node.fast_lane)

    return storage_server_main(
        argv,
        prog="objectd.server",
        description=__doc__,
        service=SERVICE,
        port_of=lambda node: node.object_port,
        make_app=make,
    )


if __name__ == "__main__":
    sys.exit(main())
