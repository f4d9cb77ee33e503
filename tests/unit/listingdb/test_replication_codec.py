"""The replication protocol codec without sockets: round trips, golden bytes, every prefix,
trailing bytes, garbage, and each field's validation."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.listingdb.replication import (
    BODY_BYTES_MAX,
    ROWS_MAX,
    MergeInfo,
    MergeRows,
    ProtocolError,
    Reply,
    Request,
    StageBegin,
    StageCommit,
    Sync,
    WireInfo,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)

IID = "0123456789abcdef0123456789abcdef"
INFO = WireInfo(
    account="AUTH_a",
    container="c",
    created_at="1700000000.00000",
    put_timestamp="1700000001.00000",
    delete_timestamp="0000000000.00000",
    metadata={"X-Container-Meta-K": ("v", "1700000002.00000")},
    instance_id=IID,
    max_seq=7,
    row_hash="f" * 32,
)
ROW = {"name": "obj", "seq": 3, "t": "1700000003.00000", "s": 5, "c": "t/p", "e": "x", "d": False}
REQUESTS: list[Request] = [
    Sync(INFO),
    MergeInfo(INFO),
    StageBegin(INFO),
    StageCommit(INFO),
    MergeRows(IID, 3, (ROW,)),
    MergeRows(IID, 9, (), staged=True),
]
REPLIES = [
    Reply("ok", info=INFO, sync_point=4),
    Reply("ok", changed=2),
    Reply("missing"),
    Reply("exists"),
    Reply("error", error="nope"),
]

# Sync(INFO) as it goes on the wire (msgpack map, keys in this order). A change to these
# bytes is a protocol change: bump PROTOCOL_VERSION and update docs/db-replication.md.
GOLDEN_SYNC = bytes.fromhex(
    "83a17601a26f70a473796e63a4696e666f89a161a6415554485f61a163a163a26361b031373030303030"
    "3030302e3030303030a27074b0313730303030303030312e3030303030a26474b0303030303030303030"
    "302e3030303030a26d6481b2582d436f6e7461696e65722d4d6574612d4b92a176b03137303030303030"
    "30322e3030303030a3696964d92030313233343536373839616263646566303132333435363738396162"
    "63646566a2737107a27268d9206666666666666666666666666666666666666666666666666666666666"
    "666666"
)


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_round_trip(req: Request) -> None:
    assert decode_request(encode_request(req)) == req


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: r.status)
def test_replies_round_trip(reply: Reply) -> None:
    assert decode_reply(encode_reply(reply)) == reply


def test_golden_bytes() -> None:
    assert encode_request(Sync(INFO)) == GOLDEN_SYNC
    assert decode_request(GOLDEN_SYNC) == Sync(INFO)


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_prefix_and_trailing_garbage_is_a_protocol_error(req: Request) -> None:
    data = encode_request(req)
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decode_request(data[:cut])
    with pytest.raises(ProtocolError):
        decode_request(data + b"\x00")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    for decode in (decode_request, decode_reply):
        with contextlib.suppress(ProtocolError):
            decode(data)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(
        ["sync", "merge_info", "stage_begin", "stage_commit", "merge_rows", "stage_rows"]
    ),
    st.dictionaries(st.sampled_from(["info", "from", "to", "rows", "x"]), _values),
)
def test_well_framed_nonsense_raises_protocol_error(op: str, fields: dict[str, Any]) -> None:
    data = msgpack.packb({"v": 1, "op": op, **fields})
    with contextlib.suppress(ProtocolError):
        decode_request(data)


def bad(body: dict[str, Any]) -> str:
    with pytest.raises(ProtocolError) as e:
        decode_request(msgpack.packb(body))
    return str(e.value)


def info_with(**changes: Any) -> dict[str, Any]:
    return {**INFO.to_wire(), **changes}


def test_field_errors_say_what_is_wrong() -> None:
    assert "version" in bad({"v": 2, "op": "sync", "info": INFO.to_wire()})
    assert "unknown op" in bad({"v": 1, "op": "drop_table"})
    assert "timestamp" in bad({"v": 1, "op": "sync", "info": info_with(pt="yesterday")})
    assert "instance id" in bad({"v": 1, "op": "sync", "info": info_with(iid="x")})
    assert "max_seq" in bad({"v": 1, "op": "sync", "info": info_with(sq=-1)})
    no_md = {k: v for k, v in INFO.to_wire().items() if k != "md"}
    assert "lacks 'md'" in bad({"v": 1, "op": "sync", "info": no_md})
    assert "[value, ts]" in bad({"v": 1, "op": "sync", "info": info_with(md={"K": "v"})})
    assert "account name" in bad({"v": 1, "op": "sync", "info": info_with(a="")})
    rows = {"v": 1, "op": "merge_rows", "from": IID, "to": 1}
    assert "rows must be a list" in bad({**rows, "rows": {}})
    assert "row seq" in bad({**rows, "rows": [{**ROW, "seq": "3"}]})
    assert "row name" in bad({**rows, "rows": [{**ROW, "name": "a\x00b"}]})
    assert "scalars" in bad({**rows, "rows": [{**ROW, "t": ["nested"]}]})
    assert "sync_to" in bad({**rows, "to": -5, "rows": []})
    assert "rows in one request" in bad({**rows, "rows": [ROW] * (ROWS_MAX + 1)})
    assert "msgpack map" in bad([1, 2, 3])  # type: ignore[arg-type]


def test_reply_errors() -> None:
    for body in (
        {"v": 1, "st": "maybe"},
        {"v": 1, "st": "error"},  # an error reply must say why
        {"v": 1, "st": "ok", "sp": -1},
        {"v": 1, "st": "error", "err": 5},
        {"v": 1, "st": "ok", "info": {"a": "x"}},
    ):
        with pytest.raises(ProtocolError):
            decode_reply(msgpack.packb(body))


def test_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="longer than"):
        decode_request(b"\x80" * (BODY_BYTES_MAX + 1))


def test_http_status_of_replies() -> None:
    assert [r.http_status for r in REPLIES] == [200, 200, 404, 409, 400]
