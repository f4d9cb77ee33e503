"""The volume API: the Cinder v3 subset the OpenStack clients use, plus cairn's iSCSI details.

Routes (``{project_id}`` must be the project the token belongs to):

- ``GET /``, ``GET /v3/``: version discovery (no token)
- ``POST /v3/{project_id}/volumes``: ``{"volume": {"name", "size" (GiB)}}`` -> 202; cairn also
  takes ``"size_bytes"`` (any whole number of 512-byte blocks) and ``"chunk_bytes"``
- ``GET /v3/{project_id}/volumes``, ``/volumes/detail`` (``?name=`` filters), ``/volumes/{id}``
- ``DELETE /v3/{project_id}/volumes/{id}`` -> 202

Every volume in a detailed answer carries ``size_bytes`` and ``cairn_iscsi``: ``iqn``, ``portal``,
``lun``, ``chap_user``, ``chap_secret``, ``url`` (``iscsi://user%secret@host:port/iqn/lun``) and
``exported``. Errors use Cinder's JSON fault form, e.g. ``{"itemNotFound": {"message", "code"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import Gauge

from blockd.catalog import VolumeRecord
from blockd.lease import LeaseHeld
from blockd.manager import NameInUse, VolumeManager, VolumeNotFound
from blockd.store import StoreError
from common.server import METRICS, make_app

__all__ = ["MANAGER", "Authenticate", "make_volume_app"]

Authenticate = Callable[[Mapping[str, str]], Awaitable[str | None]]

MANAGER = web.AppKey("volume_manager", VolumeManager)
_AUTH: web.AppKey[Authenticate] = web.AppKey("volume_authenticate")
GIB = 1 << 30
REQUEST_BYTES_MAX = 64 << 10
API_VERSION = "3.0"

_FAULTS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    503: "serviceUnavailable",
}


def fault(status: int, message: str) -> web.Response:
    """An error in Cinder's form: {"<faultName>": {"message": ..., "code": status}}."""
    name = _FAULTS.get(status, "computeFault")
    return web.json_response({name: {"message": message, "code": status}}, status=status)


def make_volume_app(manager: VolumeManager, authenticate: Authenticate) -> web.Application:
    app = make_app("volume", client_max_size=REQUEST_BYTES_MAX)
    app.middlewares.append(_fault_middleware)
    _add_metrics(app, manager)
    app[MANAGER] = manager
    app[_AUTH] = authenticate
    app.router.add_get("/", _versions)
    app.router.add_get("/v3", _versions)
    app.router.add_get("/v3/", _versions)
    base = "/v3/{project_id}/volumes"
    app.router.add_post(base, _create)
    app.router.add_get(base, _list)
    app.router.add_get(base + "/detail", _list_detail)
    app.router.add_get(base + "/{volume_id}", _show)
    app.router.add_delete(base + "/{volume_id}", _delete)
    return app


def _add_metrics(app: web.Application, manager: VolumeManager) -> None:
    """Cache and export gauges, read when /metrics is scraped."""
    reg = app[METRICS].registry
    cache = manager.cache
    gauges: dict[str, tuple[str, Callable[[], float]]] = {
        "cairn_block_cache_bytes": ("bytes reserved by cached chunks", lambda: cache.used_bytes),
        "cairn_block_dirty_chunks": ("chunks not yet in the store", cache.dirty_count),
        "cairn_block_flushed_chunks": ("chunks written", lambda: cache.stats.flushed_chunks),
        "cairn_block_flush_errors": ("chunk writes that failed", lambda: cache.stats.flush_errors),
        "cairn_block_exported_volumes": ("volumes exported here", lambda: len(manager.attached)),
        "cairn_block_cache_hits": ("reads answered from the cache", lambda: cache.stats.hits),
        "cairn_block_cache_misses": ("reads that went to the store", lambda: cache.stats.misses),
        "cairn_block_cache_evictions": ("clean entries evicted", lambda: cache.stats.evictions),
        "cairn_block_merge_reads": (
            "chunk reads for read-modify-write flushes",
            lambda: cache.stats.merge_reads,
        ),
        "cairn_block_journal_records": (
            "journal records appended",
            lambda: cache.stats.journal_records,
        ),
        "cairn_block_journal_checkpoints": ("journal checkpoints", lambda: cache.stats.checkpoints),
        "cairn_block_journal_live_bytes": (
            "bytes of journal records not yet merged into chunks",
            lambda: sum(
                a.volume.chunks.journal.live_bytes
                for a in manager.attached.values()
                if a.volume.chunks.journal is not None
            ),
        ),
        "cairn_block_backpressure_waits": (
            "writes that waited for cache space",
            lambda: cache.stats.backpressure_waits,
        ),
    }
    for name, (text, read) in gauges.items():
        Gauge(name, text, registry=reg).set_function(read)


@web.middleware
async def _fault_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every error into Cinder's JSON fault form (never a traceback or an HTML page)."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return fault(e.status, e.reason)
    except VolumeNotFound as e:
        return fault(404, f"Volume {e} could not be found.")
    except (NameInUse, LeaseHeld) as e:
        return fault(409, str(e))
    except ValueError as e:
        return fault(400, str(e))
    except StoreError as e:
        return fault(503, f"the volume store is unavailable: {e}")


async def _versions(request: web.Request) -> web.Response:
    href = f"{request.scheme}://{request.host}/v3/"
    doc = {
        "id": "v3.0",
        "status": "CURRENT",
        "version": API_VERSION,
        "min_version": "3.0",
        "updated": "2026-11-01T00:00:00Z",
        "links": [{"rel": "self", "href": href}],
    }
    return web.json_response({"versions": [doc]})


async def _project(request: web.Request) -> str:
    project: str | None = await request.app[_AUTH](request.headers)
    if project is None:
        raise web.HTTPUnauthorized(reason="The request you have made requires authentication.")
    if project != request.match_info["project_id"]:
        raise web.HTTPForbidden(reason="The token does not belong to this project.")
    return project


def _links(request: web.Request, record: VolumeRecord) -> list[dict[str, str]]:
    href = f"{request.scheme}://{request.host}/v3/{record.project}/volumes/{record.id}"
    return [{"rel": "self", "href": href}]


def _summary(request: web.Request, record: VolumeRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "links": _links(request, record)}


def _detail(request: web.Request, record: VolumeRecord) -> dict[str, Any]:
    info = request.app[MANAGER].export_info(record)
    return {
        "id": record.id,
        "name": record.name,
        "size": -(-record.size_bytes // GIB),
        "size_bytes": record.size_bytes,
        "status": record.status,
        "attachments": [],
        "availability_zone": "nova",
        "bootable": "false",
        "encrypted": False,
        "multiattach": False,
        "volume_type": "cairn",
        "description": None,
        "metadata": {},
        "created_at": record.created_at,
        "updated_at": None,
        "os-vol-tenant-attr:tenant_id": record.project,
        "links": _links(request, record),
        "cairn_iscsi": {
            "iqn": info.iqn,
            "portal": info.portal,
            "lun": info.lun,
            "chap_user": info.chap_user,
            "chap_secret": info.chap_secret,
            "url": info.url,
            "exported": info.exported,
            "chunk_bytes": record.chunk_bytes,
        },
    }


def _int_field(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Invalid input received: '{key}' must be a positive integer")
    return value


async def _create_args(request: web.Request) -> tuple[str, int, int | None]:
    try:
        raw = json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("Malformed request body: not JSON") from None
    body = raw.get("volume") if isinstance(raw, dict) else None
    if not isinstance(body, dict):
        raise ValueError("Missing required element 'volume' in request body.")
    name = body.get("name")
    if not isinstance(name, str):
        raise ValueError("Invalid input received: 'name' must be a string")
    size_gib = _int_field(body, "size")
    size_bytes = _int_field(body, "size_bytes")
    if size_bytes is None:
        if size_gib is None:
            raise ValueError("Invalid input received: 'size' is required")
        size_bytes = size_gib * GIB
    elif size_gib is not None and size_gib != -(-size_bytes // GIB):
        raise ValueError("Invalid input received: 'size' and 'size_bytes' disagree")
    return name, size_bytes, _int_field(body, "chunk_bytes")


async def _create(request: web.Request) -> web.Response:
    project = await _project(request)
    name, size_bytes, chunk_bytes = await _create_args(request)
    record = await request.app[MANAGER].create(project, name, size_bytes, chunk_bytes)
    return web.json_response({"volume": _detail(request, record)}, status=202)


async def _records(request: web.Request) -> list[VolumeRecord]:
    project = await _project(request)
    records = await request.app[MANAGER].list(project)
    name = request.query.get("name")
    return records if name is None else [r for r in records if r.name == name]


async def _list(request: web.Request) -> web.Response:
    records = await _records(request)
    return web.json_response({"volumes": [_summary(request, r) for r in records]})


async def _list_detail(request: web.Request) -> web.Response:
    records = await _records(request)
    return web.json_response({"volumes": [_detail(request, r) for r in records]})


async def _show(request: web.Request) -> web.Response:
    project = await _project(request)
    record = await request.app[MANAGER].get(project, request.match_info["volume_id"])
    return web.json_response({"volume": _detail(request, record)})


async def _delete(request: web.Request) -> web.Response:
    project = await _project(request)
    await request.app[MANAGER].delete(project, request.match_info["volume_id"])
    return web.Response(status=202)
