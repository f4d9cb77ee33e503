"""The database replication protocol: messages and their msgpack codec (sans-IO).

A replicator talks to a peer's container or account server with
``POST /replicate/<device>/<partition>/<hash>`` whose body is one request and whose answer is
one reply, both msgpack maps carrying ``"v": 1``. Nothing here does I/O: ``encode_*`` give bytes,
``decode_*`` take bytes and return a validated, frozen message or raise ``ProtocolError``
(never anything else). See docs/db-replication.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgpack

from common.listingdb.records import ZERO_TS, DbInfo, Metadata
from common.timestamps import Timestamp, TimestampError

__all__ = [
    "BODY_BYTES_MAX",
    "PROTOCOL_VERSION",
    "ROWS_MAX",
    "MergeInfo",
    "MergeRows",
    "ProtocolError",
    "Reply",
    "Request",
    "StageBegin",
    "StageCommit",
    "Sync",
    "WireInfo",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

PROTOCOL_VERSION = 1
BODY_BYTES_MAX = 16 << 20
ROWS_MAX = 10_000
NAME_BYTES_MAX = 1024
META_KEYS_MAX = 1024
META_KEY_CHARS_MAX = 256
META_VALUE_CHARS_MAX = 4096
ERROR_CHARS_MAX = 1024
_IID_RE = re.compile(r"^[0-9a-f]{32}$")
_SCALARS = (str, int, float, bool, type(None))
STATUSES = ("ok", "missing", "exists", "error")


class ProtocolError(ValueError):
    """A message that is not valid replication protocol; the text says why."""


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ProtocolError(message)


def _ts(value: Any, what: str) -> str:
    _need(isinstance(value, str) and len(value) <= 64, f"{what} must be a timestamp string")
    try:
        return Timestamp.parse(value).internal
    except TimestampError:
        raise ProtocolError(f"{what} is not a valid timestamp: {value[:40]!r}") from None


def _count(value: Any, what: str) -> int:
    _need(type(value) is int and 0 <= value < 1 << 63, f"{what} must be a count")
    return int(value)


def _name(value: Any, what: str) -> str:
    _need(isinstance(value, str) and value != "" and "\x00" not in value, f"bad {what} name")
    _need(len(value.encode()) <= NAME_BYTES_MAX, f"{what} name too long")
    return str(value)


def _iid(value: Any) -> str:
    _need(isinstance(value, str) and bool(_IID_RE.match(value)), "bad instance id")
    return str(value)


def _metadata(raw: Any) -> Metadata:
    _need(isinstance(raw, dict) and len(raw) <= META_KEYS_MAX, "metadata must be a small map")
    md: Metadata = {}
    for key, pair in raw.items():
        _need(isinstance(key, str) and 0 < len(key) <= META_KEY_CHARS_MAX, "bad metadata key")
        _need(isinstance(pair, list) and len(pair) == 2, f"metadata {key!r} is not [value, ts]")
        value = pair[0]
        ok = isinstance(value, str) and len(value) <= META_VALUE_CHARS_MAX
        _need(ok, f"bad metadata value for {key!r}")
        md[key] = (value, _ts(pair[1], f"metadata {key!r} timestamp"))
    return md


@dataclass(frozen=True)
class WireInfo:
    """What one replica tells another about its database (never its local database id)."""

    account: str
    container: str | None
    created_at: str
    put_timestamp: str
    delete_timestamp: str
    metadata: Metadata
    instance_id: str
    max_seq: int
    row_hash: str | None = None

    def __post_init__(self) -> None:
        _name(self.account, "account")
        if self.container is not None:
            _name(self.container, "container")
        for what in ("created_at", "put_timestamp", "delete_timestamp"):
            _ts(getattr(self, what), what)
        _iid(self.instance_id)
        _count(self.max_seq, "max_seq")
        if self.row_hash is not None:
            _iid(self.row_hash)  # also 32 lower-case hex digits

    @classmethod
    def of(cls, info: DbInfo) -> WireInfo:
        return cls(
            info.account,
            info.container,
            info.created_at,
            info.put_timestamp,
            info.delete_timestamp,
            dict(info.metadata),
            info.instance_id,
            info.max_seq,
            info.row_hash,
        )

    def to_dbinfo(self) -> DbInfo:
        """A DbInfo for Broker.merge_info (which reads names, timestamps and metadata)."""
        return DbInfo(
            dbid=0,
            account=self.account,
            container=self.container,
            created_at=self.created_at,
            put_timestamp=self.put_timestamp,
            delete_timestamp=self.delete_timestamp,
            status_changed_at=ZERO_TS,
            metadata=dict(self.metadata),
            instance_id=self.instance_id,
            max_seq=self.max_seq,
            row_hash=self.row_hash,
        )

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "a": self.account,
            "c": self.container,
            "ca": self.created_at,
            "pt": self.put_timestamp,
            "dt": self.delete_timestamp,
            "md": {k: [v, t] for k, (v, t) in sorted(self.metadata.items())},
            "iid": self.instance_id,
            "sq": self.max_seq,
        }
        if self.row_hash is not None:
            out["rh"] = self.row_hash
        return out

    @classmethod
    def from_wire(cls, raw: Any) -> WireInfo:
        _need(isinstance(raw, dict), "info must be a map")
        try:
            return cls(
                raw["a"],
                raw["c"],
                _ts(raw["ca"], "created_at"),
                _ts(raw["pt"], "put_timestamp"),
                _ts(raw["dt"], "delete_timestamp"),
                _metadata(raw["md"]),
                raw["iid"],
                raw["sq"],
                raw.get("rh"),
            )
        except KeyError as e:
            raise ProtocolError(f"info lacks {e.args[0]!r}") from None


def _check_row(row: Any) -> dict[str, Any]:
    _need(isinstance(row, dict) and len(row) <= 16, "a row must be a small map")
    _name(row.get("name"), "row")
    _count(row.get("seq"), "row seq")
    for key, value in row.items():
        _need(isinstance(key, str) and isinstance(value, _SCALARS), "row fields must be scalars")
        if isinstance(value, str):
            _need(len(value) <= NAME_BYTES_MAX * 4, f"row field {key!r} too long")
    return dict(row)


# ----- requests ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sync:
    """Here is my database; merge its timestamps/metadata and tell me yours."""

    info: WireInfo


@dataclass(frozen=True)
class MergeInfo:
    """Merge my timestamps and metadata (creating the database if missing)."""

    info: WireInfo


@dataclass(frozen=True)
class StageBegin:
    """You have no copy: start (or resume) a staged copy of mine."""

    info: WireInfo


@dataclass(frozen=True)
class StageCommit:
    """Every row is sent: merge this info and install the staged copy."""

    info: WireInfo


@dataclass(frozen=True)
class MergeRows:
    """Merge these rows (into the staged copy when `staged`) and record that you hold every
    row of mine up to `sync_to`."""

    sender: str
    sync_to: int
    rows: tuple[dict[str, Any], ...] = field(default=())
    staged: bool = False

    def __post_init__(self) -> None:
        _iid(self.sender)
        _count(self.sync_to, "sync_to")
        _need(len(self.rows) <= ROWS_MAX, f"more than {ROWS_MAX} rows in one request")
        for row in self.rows:
            _check_row(row)


Request = Sync | MergeInfo | StageBegin | StageCommit | MergeRows
_INFO_OPS: dict[str, type[Sync | MergeInfo | StageBegin | StageCommit]] = {
    "sync": Sync,
    "merge_info": MergeInfo,
    "stage_begin": StageBegin,
    "stage_commit": StageCommit,
}
_OP_OF = {cls: op for op, cls in _INFO_OPS.items()}


def encode_request(req: Request) -> bytes:
    if isinstance(req, MergeRows):
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "op": "stage_rows" if req.staged else "merge_rows",
            "from": req.sender,
            "to": req.sync_to,
            "rows": list(req.rows),
        }
    else:
        body = {"v": PROTOCOL_VERSION, "op": _OP_OF[type(req)], "info": req.info.to_wire()}
    return _pack(body)


def decode_request(data: bytes) -> Request:
    body = _unpack(data)
    op = body.get("op")
    if op in _INFO_OPS:
        return _INFO_OPS[op](WireInfo.from_wire(body.get("info")))
    if op in ("merge_rows", "stage_rows"):
        rows = body.get("rows")
        if not isinstance(rows, list):
            raise ProtocolError("rows must be a list")
        return MergeRows(
            _iid(body.get("from")),
            _count(body.get("to"), "sync_to"),
            tuple(rows),
            staged=op == "stage_rows",
        )
    raise ProtocolError(f"unknown op {str(op)[:40]!r}")


# ----- replies -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """`status`: "ok", "missing" (no such database), "exists" (a copy is not needed) or
    "error" (with `error`). `info` and `sync_point` answer Sync; `sync_point` answers
    StageBegin; `changed` answers MergeRows."""

    status: str
    info: WireInfo | None = None
    sync_point: int | None = None
    changed: int | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        _need(self.status in STATUSES, f"unknown reply status {str(self.status)[:40]!r}")
        _need((self.status == "error") == (self.error is not None), "error text iff error")
        if self.sync_point is not None:
            _count(self.sync_point, "sync_point")
        if self.changed is not None:
            _count(self.changed, "changed")
        if self.error is not None:
            text: object = self.error  # from the wire: may be any msgpack value
            _need(isinstance(text, str) and len(text) <= ERROR_CHARS_MAX, "bad error")

    @property
    def http_status(self) -> int:
        return {"ok": 200, "missing": 404, "exists": 409, "error": 400}[self.status]


def error_reply(message: str) -> Reply:
    return Reply("error", error=message[:ERROR_CHARS_MAX])


def encode_reply(reply: Reply) -> bytes:
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "st": reply.status}
    if reply.info is not None:
        body["info"] = reply.info.to_wire()
    for key, value in (("sp", reply.sync_point), ("n", reply.changed), ("err", reply.error)):
        if value is not None:
            body[key] = value
    return _pack(body)


def decode_reply(data: bytes) -> Reply:
    body = _unpack(data)
    info = body.get("info")
    return Reply(
        body.get("st"),  # type: ignore[arg-type]  # validated by Reply
        WireInfo.from_wire(info) if info is not None else None,
        body.get("sp"),
        body.get("n"),
        body.get("err"),
    )


# ----- framing -------------------------------------------------------------------------------
def _pack(body: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(body, use_bin_type=True))


def _unpack(data: bytes) -> dict[str, Any]:
    _need(len(data) <= BODY_BYTES_MAX, f"message longer than {BODY_BYTES_MAX} bytes")
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"not a msgpack message: {type(e).__name__}") from None
    if not isinstance(body, dict):
        raise ProtocolError("a message is a msgpack map")
    version = body.get("v")
    _need(version == PROTOCOL_VERSION, f"unsupported protocol version {str(version)[:20]!r}")
    return dict(body)
