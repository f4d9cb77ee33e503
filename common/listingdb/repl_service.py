"""The receiving side of database replication: one request in, one reply out.

``ReplicationService.handle`` decodes a request (common/listingdb/replication.py), runs it
against the device's LMDB environment on the device's thread pool, and encodes the reply.
The HTTP layer (``replicate_handler``) only reads the body with a byte cap and writes the
answer; the in-process transport of the tests calls ``handle`` directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from common.clock import Clock
from common.listingdb import staging
from common.listingdb.broker import STAGING_PARTITION, Broker
from common.listingdb.env import ListingEnv
from common.listingdb.http import DeviceEnvs, DeviceUnavailable
from common.listingdb.replication import (
    BODY_BYTES_MAX,
    MergeInfo,
    MergeRows,
    ProtocolError,
    Reply,
    Request,
    StageBegin,
    StageCommit,
    Sync,
    WireInfo,
    decode_request,
    encode_reply,
    error_reply,
)
from common.log import get_logger
from common.timestamps import Timestamp

__all__ = [
    "PATH_PREFIX",
    "REPLICATION",
    "ReplicationService",
    "add_replication_routes",
    "parse_replicate_path",
    "replicate_handler",
]

log = get_logger("cairn.listingdb.replication")
MakeBroker = Callable[[ListingEnv, int, str], Broker[Any]]
# Swift uses a REPLICATE method on /<device>/<partition>/<hash>; aiohttp's C HTTP parser
# (llhttp) refuses methods it does not know, so cairn uses POST under a path prefix that no
# backend path can have ("replicate" is a reserved device name).
PATH_PREFIX = "/replicate"
_PATH_RE = re.compile(
    r"^/replicate/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/([0-9]{1,10})/([0-9a-f]{32})$"
)


def parse_replicate_path(path: str) -> tuple[str, int, str] | None:
    """(device, partition, hash) of ``/replicate/<device>/<partition>/<hash>``, or None."""
    m = _PATH_RE.match(path.split("?", 1)[0])
    if m is None or int(m.group(2)) >= STAGING_PARTITION:
        return None
    return m.group(1), int(m.group(2)), m.group(3)


class ReplicationService:
    """Answers replication requests against one server's devices."""

    def __init__(self, envs: DeviceEnvs, make_broker: MakeBroker, clock: Clock) -> None:
        self.envs = envs
        self.make_broker = make_broker
        self.clock = clock

    async def handle(self, device: str, part: int, hash_hex: str, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, reply bytes). 507 with an error reply when the device is missing."""
        try:
            req = decode_request(body)
        except ProtocolError as e:
            return 400, encode_reply(error_reply(str(e)))
        try:
            env = await self.envs.get(device)
        except web.HTTPInsufficientStorage:
            return 507, encode_reply(error_reply(f"device {device} is not available"))
        broker = self.make_broker(env, part, hash_hex)

        def work() -> Reply:
            self.envs.check_device(device)
            return self._apply(broker, req)

        try:
            reply = await env.run(work)
        except DeviceUnavailable:
            return 507, encode_reply(error_reply(f"device {device} is not available"))
        except (ValueError, ProtocolError) as e:  # a row or info the broker refused
            reply = error_reply(f"refused: {e}")
        return reply.http_status, encode_reply(reply)

    def _apply(self, broker: Broker[Any], req: Request) -> Reply:
        """Blocking: one request against one database."""
        if isinstance(req, Sync):
            return self._sync(broker, req.info)
        if isinstance(req, MergeInfo):
            return Reply("ok", info=WireInfo.of(broker.merge_info(req.info.to_dbinfo())))
        if isinstance(req, StageBegin):
            now = Timestamp.from_float(self.clock.time())
            sp = staging.begin(broker, req.info.to_dbinfo(), req.info.instance_id, now)
            return Reply("exists") if sp is None else Reply("ok", sync_point=sp)
        if isinstance(req, StageCommit):
            outcome = staging.commit(broker, req.info.to_dbinfo(), req.info.instance_id)
            return Reply({"created": "ok"}.get(outcome, outcome))
        return self._merge_rows(broker, req)

    def _sync(self, broker: Broker[Any], remote: WireInfo) -> Reply:
        if broker.get_info() is None:
            return Reply("missing")
        info = broker.merge_info(remote.to_dbinfo())
        return Reply(
            "ok", info=WireInfo.of(info), sync_point=info.sync_points.get(remote.instance_id, 0)
        )

    def _merge_rows(self, broker: Broker[Any], req: MergeRows) -> Reply:
        target = staging.staged_broker(broker, req.sender) if req.staged else broker
        rows = []
        for wire in req.rows:  # check every row before the write transaction starts
            fields = {k: v for k, v in wire.items() if k not in ("name", "seq")}
            row = target.row_from_wire(str(wire["name"]), fields)
            rows.append({"name": row.name, "seq": wire["seq"], **target.row_fields(row)})
        try:
            changed = target.merge_rows(rows, req.sender, req.sync_to)
        except LookupError:
            return Reply("missing")
        return Reply("ok", changed=changed)


REPLICATION = web.AppKey("replication", ReplicationService)


def add_replication_routes(app: web.Application, service: ReplicationService) -> None:
    """Serve ``POST /replicate/...`` with `service`; call it before adding a catch-all."""
    app[REPLICATION] = service
    app.router.add_post(PATH_PREFIX + "/{tail:.*}", replicate_handler)


async def replicate_handler(request: web.Request) -> web.Response:
    """``POST /replicate/<device>/<partition>/<hash>`` with a msgpack body (the app holds
    the service under REPLICATION)."""
    service = request.app[REPLICATION]
    where = parse_replicate_path(request.raw_path)
    if where is None:
        reply = error_reply("the path is /replicate/<device>/<partition>/<32 hex digit hash>")
        return _msgpack_response(400, encode_reply(reply))
    if (request.content_length or 0) > BODY_BYTES_MAX:
        return _msgpack_response(413, encode_reply(error_reply("request body too large")))
    body = await request.content.read(BODY_BYTES_MAX + 1)
    if len(body) > BODY_BYTES_MAX:
        return _msgpack_response(413, encode_reply(error_reply("request body too large")))
    status, data = await service.handle(*where, body)
    if status >= 500:
        log.warning("replicate refused", extra={"fields": {"status": status, "path": where}})
    return _msgpack_response(status, data)


def _msgpack_response(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/x-msgpack")
