"""The receiving side of replication on a real LMDB environment: every answer is a protocol
reply (never a traceback), bad rows change nothing, missing devices answer 507."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from common.listingdb.repl_service import parse_replicate_path
from common.listingdb.replication import (
    MergeInfo,
    MergeRows,
    Reply,
    StageBegin,
    StageCommit,
    Sync,
    WireInfo,
    decode_reply,
    encode_request,
)
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker
from tests.unit.listingdb.replication_cluster import DEVICE, Cluster, Node, ts

A, C = "AUTH_a", "c"
IID = "ab" * 16


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Cluster, Node]]:
    c = Cluster(tmp_path, 3, ContainerBroker)
    yield c, c.nodes[0]
    c.close()


def info(max_seq: int = 0) -> WireInfo:
    return WireInfo(A, C, ts(0), ts(1), ts(-10_000_000), {}, IID, max_seq)


def call(c: Cluster, n: Node, body: bytes, device: str = DEVICE) -> tuple[int, Reply]:
    part, hash_hex = c.where(A, C)
    status, data = asyncio.run(n.service.handle(device, part, hash_hex, body))
    return status, decode_reply(data)


def test_garbage_gets_an_error_reply(node: tuple[Cluster, Node]) -> None:
    c, n = node
    for body in (b"", b"\xc1", msgpack.packb({"v": 9}), msgpack.packb({"v": 1, "op": "x"})):
        status, reply = call(c, n, body)
        assert status == 400 and reply.status == "error" and reply.error


def test_missing_device_answers_507(node: tuple[Cluster, Node]) -> None:
    c, n = node
    status, reply = call(c, n, encode_request(Sync(info())), device="sdz")
    assert (status, reply.status) == (507, "error")


def test_sync_and_rows_into_a_missing_database(node: tuple[Cluster, Node]) -> None:
    c, n = node
    assert call(c, n, encode_request(Sync(info())))[0] == 404
    status, reply = call(c, n, encode_request(MergeRows(IID, 1, ())))
    assert (status, reply.status) == (404, "missing")
    status, reply = call(c, n, encode_request(StageCommit(info())))
    assert (status, reply.status) == (404, "missing")


def test_merge_info_creates_then_sync_reports_the_sync_point(node: tuple[Cluster, Node]) -> None:
    c, n = node
    md_info = WireInfo(A, C, ts(0), ts(1), ts(-1), {"X-Container-Meta-A": ("1", ts(2))}, IID, 0)
    status, reply = call(c, n, encode_request(MergeInfo(md_info)))
    assert status == 200 and reply.info is not None
    assert reply.info.metadata == {"X-Container-Meta-A": ("1", ts(2))}
    row = {"name": "o", "seq": 4, "t": ts(3), "s": 1, "c": "t", "e": "e", "d": False}
    assert call(c, n, encode_request(MergeRows(IID, 4, (row,))))[1].changed == 1
    status, reply = call(c, n, encode_request(Sync(info(4))))
    assert (status, reply.sync_point) == (200, 4)
    # A lower mark never moves it back.
    call(c, n, encode_request(MergeRows(IID, 2, ())))
    assert call(c, n, encode_request(Sync(info(4))))[1].sync_point == 4
    # The database exists now, so a staged copy is refused.
    assert call(c, n, encode_request(StageBegin(info())))[1].status == "exists"


@pytest.mark.parametrize(
    "change",
    [{"s": -1}, {"s": "5"}, {"t": "soon"}, {"d": "yes"}, {"c": 5}, {"e": None}],
    ids=str,
)
def test_a_bad_row_is_refused_and_nothing_is_merged(
    node: tuple[Cluster, Node], change: dict[str, object]
) -> None:
    c, n = node
    call(c, n, encode_request(MergeInfo(info())))
    good = {"name": "good", "seq": 1, "t": ts(3), "s": 1, "c": "t", "e": "e", "d": False}
    worse = {**good, "name": "bad", "seq": 2, **change}
    status, reply = call(c, n, encode_request(MergeRows(IID, 2, (good, worse))))
    assert (status, reply.status) == (400, "error")
    assert reply.error is not None and "bad" in reply.error
    b = c.broker(n, A, C)
    assert b.rows_since(0, 10) == [] and b.sync_point(IID) == 0


def test_replicate_paths() -> None:
    h = "0" * 32
    assert parse_replicate_path(f"/replicate/sda/3/{h}") == ("sda", 3, h)
    for bad in (
        f"/sda/3/{h}",
        f"/replicate/sda/x/{h}",
        "/replicate/sda/3/xyz",
        f"/replicate/../3/{h}",
        f"/replicate/sda/4294967295/{h}",
        f"/replicate/sda/3/{h}/x",
    ):
        assert parse_replicate_path(bad) is None


def test_deleted_timestamps_travel_with_sync(node: tuple[Cluster, Node]) -> None:
    c, n = node
    call(c, n, encode_request(MergeInfo(info())))
    deleted = WireInfo(A, C, ts(0), ts(1), ts(5), {}, IID, 0)
    call(c, n, encode_request(Sync(deleted)))
    got = c.broker(n, A, C).get_info()
    assert got is not None and got.delete_timestamp == Timestamp.parse(ts(5)).internal
