"""The account replicator across three in-process nodes: container rows, reports, account
metadata and deletion converge."""

from __future__ import annotations

import asyncio
from pathlib import Path

from accountd.broker import AccountBroker, ContainerRow
from common.listingdb.replication import MergeRows, decode_reply, encode_request
from common.timestamps import Timestamp
from tests.unit.listingdb.replication_cluster import Cluster, ts

A = "AUTH_acct"


def row(
    name: str, put: float, objects: int, stats_at: float, deleted_at: float = -1e6
) -> ContainerRow:
    return ContainerRow(name, ts(put), ts(deleted_at), objects, objects * 10, ts(stats_at))


def test_accounts_converge(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 3, AccountBroker, kind="accounts")
    try:
        nodes = c.primaries(A)
        bs = [c.broker(n, A) for n in nodes]
        for b in bs[:2]:  # the third replica was down when the account was made
            b.create_or_update(A, None, Timestamp.parse(ts(0)), {})
        bs[0].put_row(row("c1", 1, 3, 2))
        bs[1].put_row(row("c1", 1, 5, 3))  # a newer report of the same container
        bs[1].put_row(row("c2", 4, 1, 4))
        bs[0].put_row(row("c3", 5, 0, 5))
        bs[0].put_row(row("c3", 5, 0, 6, deleted_at=6))
        bs[1].update_metadata({"X-Account-Meta-Quota": ("10", ts(7))})

        first = c.round()
        assert all(s.dbs_failed == 0 for s in first)
        assert first[0].full_copies == 1 and first[1].full_copies == 0  # n1 found n2 made
        states = []
        for b in bs:
            info = b.get_info()
            assert info is not None
            rows = {r["name"]: (r["o"], r["x"] > r["p"]) for r in b.rows_since(0, 100)}
            states.append((rows, info.stats, info.metadata, info.row_hash))
        assert states[0] == states[1] == states[2]
        rows, stats, md, _h = states[0]
        assert rows == {"c1": (5, False), "c2": (1, False), "c3": (0, True)}
        assert stats == {"container_count": 2, "object_count": 6, "bytes_used": 60}
        assert md == {"X-Account-Meta-Quota": ("10", ts(7))}

        bs[2].delete_db(Timestamp.parse(ts(8)), require_empty=False)
        c.round()
        for b in bs:
            info = b.get_info()
            assert info is not None and b.is_deleted(info)
        assert [s.rows_sent for s in c.round()] == [0, 0, 0]
    finally:
        c.close()


def test_bad_account_rows_are_refused(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 3, AccountBroker, kind="accounts")
    try:
        n = c.primaries(A)[0]
        b = c.broker(n, A)
        b.create_or_update(A, None, Timestamp.parse(ts(0)), {})
        part, hash_hex = c.where(A)
        iid = "ef" * 16
        good = {"name": "c", "seq": 1, "p": ts(1), "x": ts(-1e6), "o": 1, "b": 2, "st": ts(1)}
        for change in ({"o": -1}, {"b": "2"}, {"p": "later"}, {"st": 5}, {"x": None}):
            body = encode_request(MergeRows(iid, 1, ({**good, **change},)))
            status, data = asyncio.run(n.service.handle("sda", part, hash_hex, body))
            reply = decode_reply(data)
            assert (status, reply.status) == (400, "error"), change
        assert b.rows_since(0, 10) == []
        body = encode_request(MergeRows(iid, 1, (good,)))
        assert asyncio.run(n.service.handle("sda", part, hash_hex, body))[0] == 200
        assert [r["name"] for r in b.rows_since(0, 10)] == ["c"]
    finally:
        c.close()
