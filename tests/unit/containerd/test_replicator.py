"""The container replicator across three and four in-process nodes (real ring, real LMDB,
real replication service; DirectTransport instead of sockets, FaultyTransport for a peer that
dies mid-sync)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.listingdb import list_databases
from common.listingdb.broker import STAGING_PARTITION
from common.listingdb.repl_transport import FaultyTransport, Peer
from common.listingdb.replication import MergeRows, Request, StageCommit
from common.listingdb.replicator import ReclaimSchedule, ReplicationStats
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker, ObjectRow
from tests.unit.listingdb.replication_cluster import Cluster, Node, ts

A, C = "AUTH_test", "photos"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 3, ContainerBroker)
    yield c
    c.close()


def create(c: Cluster, node: Node, at: float = 0, container: str = C) -> ContainerBroker:
    b = c.broker(node, A, container)
    assert isinstance(b, ContainerBroker)
    b.create_or_update(A, container, Timestamp.parse(ts(at)), {})
    return b


def put(b: ContainerBroker, name: str, at: float, size: int = 1) -> None:
    assert b.put_row(ObjectRow(name, ts(at), size, "text/plain", f"etag{size}")) is not None


def put_many(b: ContainerBroker, rows: list[tuple[str, float, int]]) -> None:
    """Many object rows in one transaction (one fsync instead of one per row)."""
    wire = [
        {"name": n, "t": ts(at), "s": size, "c": "text/plain", "e": f"etag{size}", "d": False}
        for n, at, size in rows
    ]
    b.merge_rows(wire)


def delete(b: ContainerBroker, name: str, at: float) -> None:
    assert b.put_row(ObjectRow.tombstone(name, Timestamp.parse(ts(at)))) is not None


def state(b: ContainerBroker) -> tuple[Any, ...]:
    info = b.get_info()
    assert info is not None
    rows = sorted((r["name"], r["t"], r["s"], r["d"]) for r in b.rows_since(0, 100_000))
    return (
        rows,
        info.stats,
        info.metadata,
        info.put_timestamp,
        info.delete_timestamp,
        info.row_hash,
    )


def test_three_replicas_that_missed_different_updates_converge(cluster: Cluster) -> None:
    n0, n1, n2 = cluster.primaries(A, C)
    b0, b1, b2 = (create(cluster, n, at) for n, at in ((n0, 0), (n1, 0), (n2, 1)))
    put(b0, "only-on-0", 10)
    put(b1, "only-on-1", 11, 5)
    put(b2, "only-on-2", 12, 7)
    for b in (b0, b1):  # n2 missed both the write and the delete of "gone"
        put(b, "gone", 20)
        delete(b, "gone", 21)
    put(b2, "overwritten", 30, 1)
    put(b0, "overwritten", 31, 9)  # the newer version is only on n0
    b1.update_metadata({"X-Container-Meta-Color": ("blue", ts(40))})
    b2.update_metadata({"X-Container-Meta-Color": ("red", ts(39))})
    b2.update_metadata({"X-Container-Meta-Shape": ("round", ts(41))})

    first = cluster.round()
    assert all(s.dbs_failed == 0 and s.peers_failed == 0 for s in first)
    assert sum(s.rows_sent for s in first) > 0
    s0 = state(b0)
    assert state(b1) == s0 and state(b2) == s0
    rows = {name: (size, deleted) for name, _t, size, deleted in s0[0]}
    assert rows == {
        "only-on-0": (1, False),
        "only-on-1": (5, False),
        "only-on-2": (7, False),
        "gone": (0, True),
        "overwritten": (9, False),
    }
    assert s0[1] == {"object_count": 4, "bytes_used": 1 + 5 + 7 + 9}
    assert s0[2] == {
        "X-Container-Meta-Color": ("blue", ts(40)),
        "X-Container-Meta-Shape": ("round", ts(41)),
    }
    assert s0[3] == ts(1)  # put timestamps merge by max

    second = cluster.round()
    assert [(s.rows_sent, s.dbs_in_sync, s.dbs_total) for s in second] == [(0, 1, 1)] * 3


def test_a_deleted_container_stays_deleted_everywhere(cluster: Cluster) -> None:
    n0, n1, n2 = cluster.primaries(A, C)
    bs = [create(cluster, n) for n in (n0, n1, n2)]
    put(bs[0], "x", 5)
    delete(bs[1], "x", 6)
    assert bs[1].delete_db(Timestamp.parse(ts(7)), require_empty=True).status == "deleted"
    cluster.round()
    for b in bs:
        info = b.get_info()
        assert info is not None and b.is_deleted(info), info
        assert info.delete_timestamp == ts(7)


def test_full_copy_to_an_empty_peer(cluster: Cluster) -> None:
    n0, n1, n2 = cluster.primaries(A, C)
    b0 = create(cluster, n0)
    put_many(b0, [(f"obj-{i:04d}", 10 + i, i) for i in range(250)])
    b0.update_metadata({"X-Container-Meta-K": ("v", ts(5))})
    stats = cluster.run(n0, batch_rows=100)
    assert (stats.full_copies, stats.rows_sent, stats.dbs_synced) == (2, 500, 1)
    info0 = b0.get_info()
    assert info0 is not None
    for n in (n1, n2):
        b = cluster.broker(n, A, C)
        assert state(b) == state(b0)  # type: ignore[arg-type]
        assert b.sync_point(info0.instance_id) == info0.max_seq
        assert list_databases(n.env, STAGING_PARTITION) == []
    again = cluster.run(n0)
    assert (again.rows_sent, again.full_copies, again.dbs_in_sync) == (0, 0, 1)


def test_handoff_database_is_pushed_to_every_primary_then_removed(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 4, ContainerBroker)
    try:
        (handoff,) = c.others(A, C)
        hb = create(c, handoff)
        put_many(hb, [(f"o{i}", 10 + i, 1) for i in range(30)])
        stats = c.run(handoff)
        assert (stats.handoffs_removed, stats.full_copies, stats.dbs_failed) == (1, 3, 0)
        assert hb.get_info() is None
        assert list_databases(handoff.env) == []
        for n in c.primaries(A, C):
            b = c.broker(n, A, C)
            info = b.get_info()
            assert info is not None and info.stats["object_count"] == 30
    finally:
        c.close()


def test_handoff_is_kept_while_a_primary_is_unreachable(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 4, ContainerBroker)
    try:
        (handoff,) = c.others(A, C)
        down = c.primaries(A, C)[0]
        hb = create(c, handoff)
        put(hb, "o", 10)

        def dead(peer: Peer, _req: Request, _n: int) -> bool:
            return peer.port == down.port

        stats = c.run(handoff, FaultyTransport(c.transport, dead))
        assert (stats.handoffs_removed, stats.peers_failed, stats.dbs_failed) == (0, 1, 1)
        assert hb.get_info() is not None
        assert c.run(handoff).handoffs_removed == 1
    finally:
        c.close()


def test_reclaim_drops_old_tombstones_and_old_deleted_databases(cluster: Cluster) -> None:
    n0 = cluster.primaries(A, C)[0]
    b = create(cluster, n0)
    put(b, "live", 1)
    put(b, "dead", 1)
    delete(b, "dead", 2)
    gone = create(cluster, n0, container="gone")
    assert gone.delete_db(Timestamp.parse(ts(3)), require_empty=True).status == "deleted"
    week = 7 * 86400
    cluster.clock.advance(week - 60)  # not yet past reclaim age
    stats = cluster.run(n0)
    assert (stats.rows_reclaimed, stats.dbs_reclaimed) == (0, 0)
    cluster.clock.advance(120)
    stats = cluster.run(n0)
    assert (stats.rows_reclaimed, stats.dbs_reclaimed) == (1, 1)
    assert [r["name"] for r in b.rows_since(0, 10)] == ["live"]
    assert gone.get_info() is None


def test_sync_resumes_after_a_peer_dies_mid_batch(cluster: Cluster) -> None:
    n0, n1, _n2 = cluster.primaries(A, C)
    bs = [create(cluster, n) for n in cluster.primaries(A, C)]
    put_many(bs[0], [(f"o{i:04d}", 10 + i, 1) for i in range(500)])
    info0 = bs[0].get_info()
    assert info0 is not None
    iid = info0.instance_id
    b1 = bs[1]
    marks: list[int] = []

    def third_batch_to_n1_dies(peer: Peer, req: Request, _n: int) -> bool:
        if peer.port != n1.port or not isinstance(req, MergeRows):
            return False
        marks.append(b1.sync_point(iid))
        return len(marks) >= 3  # the peer dies for good after two batches

    faulty = FaultyTransport(cluster.transport, third_batch_to_n1_dies)
    stats = cluster.run(n0, faulty, batch_rows=100)
    assert (stats.peers_failed, stats.dbs_failed) == (1, 1)
    assert b1.sync_point(iid) == 200  # two batches of 100 made it
    assert marks == sorted(marks)  # the mark only moves forward

    resumed = cluster.run(n0, batch_rows=100)
    assert resumed.dbs_failed == 0
    assert resumed.rows_sent == 300  # only what n1 was missing
    assert state(b1) == state(bs[0])


def test_full_copy_interrupted_is_invisible_then_resumed(cluster: Cluster) -> None:
    n0, n1, _n2 = cluster.primaries(A, C)
    b0 = create(cluster, n0)
    put_many(b0, [(f"o{i:04d}", 10 + i, 1) for i in range(300)])

    def n1_dies_before_commit(peer: Peer, req: Request, _n: int) -> bool:
        return peer.port == n1.port and isinstance(req, StageCommit)

    stats = cluster.run(n0, FaultyTransport(cluster.transport, n1_dies_before_commit))
    assert (stats.full_copies, stats.peers_failed) == (1, 1)
    b1 = cluster.broker(n1, A, C)
    assert b1.get_info() is None  # a half-made copy is never served
    assert list_databases(n1.env) == []
    assert len(list_databases(n1.env, STAGING_PARTITION)) == 1

    stats = cluster.run(n0)
    assert (stats.full_copies, stats.rows_sent) == (1, 0)  # resumed: nothing re-sent
    assert state(b1) == state(b0)  # type: ignore[arg-type]
    assert list_databases(n1.env, STAGING_PARTITION) == []


def test_abandoned_staged_copies_are_reaped(cluster: Cluster) -> None:
    n0, n1, _n2 = cluster.primaries(A, C)
    b0 = create(cluster, n0)
    put(b0, "o", 10)

    def commit_fails(peer: Peer, req: Request, _n: int) -> bool:
        return isinstance(req, StageCommit)

    cluster.run(n0, FaultyTransport(cluster.transport, commit_fails))
    assert len(list_databases(n1.env, STAGING_PARTITION)) == 1
    b0.destroy()  # the sender is gone for good
    cluster.clock.advance(3601)
    assert cluster.run(n1).staged_reaped == 1
    assert list_databases(n1.env, STAGING_PARTITION) == []


def test_equal_row_hashes_only_move_the_sync_point(cluster: Cluster) -> None:
    n0 = cluster.primaries(A, C)[0]
    bs = [create(cluster, n) for n in cluster.primaries(A, C)]
    for b in bs:  # every replica got every write straight from the proxy
        put_many(b, [(f"o{i}", 10 + i, 1) for i in range(50)])
    stats = cluster.run(n0)
    assert (stats.rows_sent, stats.dbs_in_sync) == (0, 1)
    info0 = bs[0].get_info()
    assert info0 is not None
    assert bs[1].sync_point(info0.instance_id) == info0.max_seq
    put(bs[0], "new", 100)
    assert cluster.run(n0).rows_sent == 2  # the one new row to each of two peers, not 51


@pytest.mark.parametrize("seed", range(4))
def test_seeded_writes_and_dropped_calls_still_converge(tmp_path: Path, seed: int) -> None:
    """Random rows, deletes and metadata land on random replicas; replication calls fail at
    random; once the network heals, one round makes every replica identical."""
    rng = random.Random(seed)
    c = Cluster(tmp_path, 3, ContainerBroker)
    try:
        nodes = c.primaries(A, C)
        bs = [create(c, n, at=rng.randint(0, 3)) for n in nodes]
        for step in range(40):
            b = rng.choice(bs)
            name = f"o{rng.randint(0, 12)}"
            at = 10 + rng.randint(0, 200) + step / 1000  # clocks disagree; ties are rare
            if rng.random() < 0.3:
                delete(b, name, at)
            elif rng.random() < 0.1:
                b.update_metadata({f"X-Container-Meta-M{rng.randint(0, 2)}": (str(step), ts(at))})
            else:
                put(b, name, at, rng.randint(0, 9))
            if rng.random() < 0.2:
                flaky = FaultyTransport(c.transport, lambda *_a: rng.random() < 0.3)
                c.run(rng.choice(nodes), flaky, batch_rows=3)
        c.round()
        assert state(bs[0]) == state(bs[1]) == state(bs[2])
        assert [s.rows_sent for s in c.round()] == [0, 0, 0]
    finally:
        c.close()


def test_a_long_running_daemon_reclaims_rows_once_per_interval(cluster: Cluster) -> None:
    n0 = cluster.primaries(A, C)[0]
    schedule = ReclaimSchedule(3600)
    b = create(cluster, n0)
    delete(b, "old", 1)

    def run() -> ReplicationStats:
        return asyncio.run(cluster.replicator(n0, reclaim_schedule=schedule).run_once())

    cluster.clock.advance(7 * 86400 + 10)  # everything below is past reclaim age
    assert run().rows_reclaimed == 1  # the first pass scans
    delete(b, "older", 0.5)
    gone = create(cluster, n0, container="gone")
    assert gone.delete_db(Timestamp.parse(ts(3)), require_empty=True).status == "deleted"
    stats = run()  # within the interval: no row scan, but the expired database still goes
    assert (stats.rows_reclaimed, stats.dbs_reclaimed) == (0, 1)
    cluster.clock.advance(3600)
    assert run().rows_reclaimed == 1
