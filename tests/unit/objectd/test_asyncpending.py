"""The async pending record: golden bytes, round trip, refusal of damaged files."""

from __future__ import annotations

import msgpack
import pytest

from common.timestamps import Timestamp
from objectd.asyncpending import (
    AsyncPending,
    ContainerTarget,
    PendingFormatError,
    decode_pending,
    encode_pending,
    list_pendings,
    pending_path,
    write_pending,
)

HASH = "0123456789abcdef0123456789abcdef"


def sample() -> AsyncPending:
    return AsyncPending(
        op="PUT",
        account="a",
        container="c",
        obj="o",
        timestamp=Timestamp.parse("1700000000.00001"),
        headers={"X-Timestamp": "1700000000.00001", "X-Size": "5"},
        targets=(ContainerTarget("127.0.0.1:6201", "sdb", 4),),
        hash_hex=HASH,
    )


def test_round_trip_and_version_field():
    data = encode_pending(sample())
    assert decode_pending(data) == sample()
    assert msgpack.unpackb(data)["v"] == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb({"v": 2}),
        msgpack.packb([1, 2]),
        msgpack.packb({"v": 1, "op": "PUT"}),
        msgpack.packb({**msgpack.unpackb(encode_pending(sample())), "op": "GET"}),
        b"x" * 70000,
    ],
)
def test_damaged_records_are_refused(data):
    with pytest.raises(PendingFormatError):
        decode_pending(data)


def test_written_where_the_updater_looks(tmp_path):
    path = write_pending(tmp_path, sample())
    assert path == pending_path(tmp_path, HASH, sample().timestamp)
    assert path.parent.name == HASH[-3:]
    (path.parent / f".{path.name}.123.tmp").write_bytes(b"")  # an unfinished atomic write
    assert list_pendings(tmp_path) == [path]
