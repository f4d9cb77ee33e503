"""Batched container row updates (object server -> container server), wire format version 1.

Every object PUT or DELETE tells a container replica about itself. One HTTP request per
update costs both servers a request's worth of parsing and handling, so an object server
sends the updates that pile up for one container server together (objectd/update_batcher.py)
as ONE request (see docs/db-replication.md, "Batched object row updates"):

    POST /_object_rows                      Content-Type: application/x-msgpack
    {"v": 1, "rows": [ROW, ...]}            (1 to ROWS_MAX rows, body <= BODY_BYTES_MAX)
    ROW = {"device": str, "partition": int, "account": str, "container": str,
           "object": str, "op": "PUT" | "DELETE", "headers": {str: str, ...}}

`headers` are exactly those the single-row ``PUT``/``DELETE`` of
``/<device>/<partition>/<account>/<container>/<object>`` carries (X-Timestamp, and for a PUT
X-Size, X-Content-Type, X-Etag), checked the same way. The answer is 200 with

    {"v": 1, "statuses": [int, ...]}        (one per row, in order: what the single-row
                                             request would have answered, e.g. 201, 204,
                                             400, 404, 503, 507)

and the header ``X-Backend-Row-Batch-Version: 1``, which every answer of the endpoint
carries (also its 400 for a body it cannot decode): an answer without it comes from a server
that does not know the endpoint, and the sender falls back to one request per row.

Sans-IO: this module only turns rows into bytes and back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = [
    "BODY_BYTES_MAX",
    "CONTENT_TYPE",
    "HEADERS_MAX",
    "HEADER_BYTES_MAX",
    "PATH",
    "ROWS_MAX",
    "VERSION",
    "VERSION_HEADER",
    "RowBatchError",
    "RowUpdate",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "encode_row",
]

VERSION = 1
PATH = "/_object_rows"
CONTENT_TYPE = "application/x-msgpack"
VERSION_HEADER = "X-Backend-Row-Batch-Version"
ROWS_MAX = 256
# The container server's request body limit (aiohttp's client_max_size default).
BODY_BYTES_MAX = 1024 * 1024
HEADERS_MAX = 32
# A header line of the single-row request is at most ~8 KiB (aiohttp's field limit).
HEADER_BYTES_MAX = 8190
STATUS_MIN, STATUS_MAX = 100, 599
_OPS = ("PUT", "DELETE")
_ROW_KEYS = frozenset({"device", "partition", "account", "container", "object", "op", "headers"})


class RowBatchError(ValueError):
    """Bytes that are not a valid version-1 row batch request or answer."""


@dataclass(frozen=True)
class RowUpdate:
    """One object row update, as the single-row request would carry it."""

    device: str
    partition: int
    account: str
    container: str
    obj: str
    op: str  # "PUT" or "DELETE"
    headers: Mapping[str, str]

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise RowBatchError(f"op must be PUT or DELETE, got {self.op!r:.40}")
        if len(self.headers) > HEADERS_MAX:
            raise RowBatchError(f"more than {HEADERS_MAX} headers in a row")
        for k, v in self.headers.items():
            if len(k) + len(v) > HEADER_BYTES_MAX:
                raise RowBatchError(f"header {k[:40]!r} is too long")


def encode_row(row: RowUpdate) -> bytes:
    """One row's msgpack bytes (a batch is these, concatenated behind `encode_request`'s
    envelope, so a sender can size each row once when it queues it)."""
    rec = {
        "device": row.device,
        "partition": row.partition,
        "account": row.account,
        "container": row.container,
        "object": row.obj,
        "op": row.op,
        "headers": dict(row.headers),
    }
    data: bytes = msgpack.packb(rec, use_bin_type=True)
    return data


def encode_request(encoded_rows: Sequence[bytes]) -> bytes:
    """The request body for rows already encoded with `encode_row`."""
    assert 1 <= len(encoded_rows) <= ROWS_MAX
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack_map_header(2) + packer.pack("v") + packer.pack(VERSION)
    head += packer.pack("rows") + packer.pack_array_header(len(encoded_rows))
    return b"".join((head, *encoded_rows))


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=0)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as e:
        raise RowBatchError(f"{what} is not valid msgpack: {e}") from None
    except Exception as e:  # msgpack raises its own types for truncated input
        raise RowBatchError(f"{what} is not valid msgpack: {type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise RowBatchError(f"{what} must be a msgpack map")
    if obj.get("v") != VERSION:
        raise RowBatchError(f"unsupported {what} version {obj.get('v')!r:.20}")
    return obj


def _str(rec: Mapping[str, Any], key: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str):
        raise RowBatchError(f"row field {key!r} must be a string")
    return value


def _decode_row(rec: object) -> RowUpdate:
    if not isinstance(rec, dict) or set(rec) != _ROW_KEYS:
        raise RowBatchError(f"a row must be a map with exactly the keys {sorted(_ROW_KEYS)}")
    part, headers = rec["partition"], rec["headers"]
    if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part < 2**32:
        raise RowBatchError("row field 'partition' must be an integer 0..2**32-1")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise RowBatchError("row field 'headers' must be a map of strings to strings")
    return RowUpdate(
        _str(rec, "device"),
        part,
        _str(rec, "account"),
        _str(rec, "container"),
        _str(rec, "object"),
        _str(rec, "op"),
        headers,
    )


def decode_request(data: bytes) -> list[RowUpdate]:
    """The rows of a request body; RowBatchError for anything else (the server's 400)."""
    if len(data) > BODY_BYTES_MAX:
        raise RowBatchError(f"body is larger than {BODY_BYTES_MAX} bytes")
    obj = _unpack(data, "request")
    rows = obj.get("rows")
    if set(obj) != {"v", "rows"} or not isinstance(rows, list):
        raise RowBatchError("request must be a map of 'v' and a 'rows' list")
    if not 1 <= len(rows) <= ROWS_MAX:
        raise RowBatchError(f"a request holds 1 to {ROWS_MAX} rows, not {len(rows)}")
    return [_decode_row(r) for r in rows]


def encode_response(statuses: Sequence[int]) -> bytes:
    assert all(STATUS_MIN <= s <= STATUS_MAX for s in statuses)
    data: bytes = msgpack.packb({"v": VERSION, "statuses": list(statuses)})
    return data


def decode_response(data: bytes, rows: int) -> list[int]:
    """The per-row statuses of an answer to a request of `rows` rows."""
    obj = _unpack(data, "answer")
    statuses = obj.get("statuses")
    if not isinstance(statuses, list) or len(statuses) != rows:
        raise RowBatchError(f"answer must hold {rows} statuses")
    for s in statuses:
        if not isinstance(s, int) or isinstance(s, bool) or not STATUS_MIN <= s <= STATUS_MAX:
            raise RowBatchError("a status must be an integer 100..599")
    return statuses
