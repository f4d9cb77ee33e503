"""The batched row update wire format (common/rowupdates.py), without sockets."""

from __future__ import annotations

import msgpack
import pytest

from common.rowupdates import (
    BODY_BYTES_MAX,
    HEADERS_MAX,
    ROWS_MAX,
    VERSION,
    RowBatchError,
    RowUpdate,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    encode_row,
)

PUT_HEADERS = {
    "X-Timestamp": "1700000000.00000",
    "X-Size": "5",
    "X-Content-Type": "text/plain",
    "X-Etag": "5d41402abc4b2a76b9719d911017c592",
}


def row(i: int = 0, op: str = "PUT") -> RowUpdate:
    headers = PUT_HEADERS if op == "PUT" else {"X-Timestamp": "1700000001.00000"}
    return RowUpdate(f"sd{i}", i, "AUTH_a", "c", f"dir/o{i} ü", op, headers)


def body(rows: list[RowUpdate]) -> bytes:
    return encode_request([encode_row(r) for r in rows])


def test_request_round_trip() -> None:
    rows = [row(0), row(1, "DELETE"), row(2)]
    assert decode_request(body(rows)) == rows


def test_request_is_a_versioned_msgpack_map() -> None:
    raw = msgpack.unpackb(body([row(3)]), raw=False)
    assert raw["v"] == VERSION == 1
    assert raw["rows"] == [
        {
            "device": "sd3",
            "partition": 3,
            "account": "AUTH_a",
            "container": "c",
            "object": "dir/o3 ü",
            "op": "PUT",
            "headers": PUT_HEADERS,
        }
    ]


def test_every_truncation_is_refused() -> None:
    data = body([row(0), row(1, "DELETE")])
    for n in range(len(data)):
        with pytest.raises(RowBatchError):
            decode_request(data[:n])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(RowBatchError, match="not valid msgpack"):
        decode_request(body([row(0)]) + b"\x00")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage that is not msgpack \xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"v": 2, "rows": []}),
        msgpack.packb({"rows": []}),
        msgpack.packb({"v": 1, "rows": []}),
        msgpack.packb({"v": 1, "rows": "x"}),
        msgpack.packb({"v": 1, "rows": [], "extra": 1}),
        msgpack.packb({"v": 1, "rows": [1]}),
        msgpack.packb({"v": 1, "rows": [{"device": "sda"}]}),
        msgpack.packb({"v": 1, "rows": [b"\x00" * 10]}, use_bin_type=True),
    ],
)
def test_garbage_requests_are_refused(raw: bytes) -> None:
    with pytest.raises(RowBatchError):
        decode_request(raw)


def _raw_row(**changes: object) -> dict[str, object]:
    rec: dict[str, object] = msgpack.unpackb(encode_row(row(0)), raw=False)
    rec.update(changes)
    return rec


@pytest.mark.parametrize(
    "changes",
    [
        {"partition": -1},
        {"partition": 2**32},
        {"partition": True},
        {"partition": "7"},
        {"device": 7},
        {"object": None},
        {"op": "POST"},
        {"headers": ["X-Timestamp"]},
        {"headers": {"X-Size": 5}},
        {"headers": {f"X-H{i}": "v" for i in range(HEADERS_MAX + 1)}},
        {"headers": {"X-Big": "v" * 9000}},
    ],
)
def test_bad_rows_are_refused(changes: dict[str, object]) -> None:
    raw = msgpack.packb({"v": 1, "rows": [_raw_row(**changes)]}, use_bin_type=True)
    with pytest.raises(RowBatchError):
        decode_request(raw)


def test_row_count_and_body_limits() -> None:
    one = encode_row(row(0))
    assert len(decode_request(encode_request([one] * ROWS_MAX))) == ROWS_MAX
    too_many = msgpack.packb({"v": 1, "rows": [_raw_row()] * (ROWS_MAX + 1)})
    with pytest.raises(RowBatchError, match="1 to 256 rows"):
        decode_request(too_many)
    with pytest.raises(RowBatchError, match="larger than"):
        decode_request(b"\x80" * (BODY_BYTES_MAX + 1))


def test_response_round_trip_and_checks() -> None:
    data = encode_response([201, 204, 507, 400])
    assert msgpack.unpackb(data) == {"v": 1, "statuses": [201, 204, 507, 400]}
    assert decode_response(data, 4) == [201, 204, 507, 400]
    with pytest.raises(RowBatchError, match="hold 3 statuses"):
        decode_response(data, 3)
    for bad in ([True], [99], [600], ["201"]):
        with pytest.raises(RowBatchError):
            decode_response(msgpack.packb({"v": 1, "statuses": bad}), 1)
    for n in range(len(data)):
        with pytest.raises(RowBatchError):
            decode_response(data[:n], 4)
