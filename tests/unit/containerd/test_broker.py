"""The container broker on a real LMDB environment: rows, totals, metadata, deletion,
sequence numbers, merge convergence and reclaim."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.listingdb import (
    EnvOptions,
    ListingEnv,
    ListingParams,
    acquire_env,
    list_databases,
    live_metadata,
    reclaim_all,
    release_env,
)
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker, ObjectRow

_ids = itertools.count(1)


def ts(seconds: float) -> Timestamp:
    return Timestamp.from_float(seconds)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListingEnv]:
    e = acquire_env(Path(tmp_path_factory.mktemp("c")) / "containers.lmdb", EnvOptions(1 << 30))
    yield e
    release_env(e)


def new_broker(env: ListingEnv, part: int = 3, create: bool = True) -> ContainerBroker:
    b = ContainerBroker(env, part, f"{next(_ids):032x}")
    if create:
        assert b.create_or_update("a", "c", ts(100), {}).status == "created"
    return b


def put(b: ContainerBroker, name: str, t: float, size: int) -> bool | None:
    return b.put_row(ObjectRow(name, ts(t).internal, size, "text/plain", "etag"))


def totals(b: ContainerBroker) -> tuple[int, int]:
    info = b.get_info()
    assert info is not None
    return info.stats.get("object_count", 0), info.stats.get("bytes_used", 0)


def test_counts_follow_overwrites_and_deletes(env: ListingEnv) -> None:
    b = new_broker(env)
    assert put(b, "a", 101, 10) and put(b, "b", 101, 20)
    assert totals(b) == (2, 30)
    assert put(b, "a", 102, 15) is True
    assert totals(b) == (2, 35)
    assert put(b, "a", 101.5, 999) is False  # older than what is stored
    assert put(b, "a", 102, 1) is False  # same timestamp: the tie-break keeps the bigger row
    assert totals(b) == (2, 35)
    assert b.put_row(ObjectRow.tombstone("a", ts(103))) is True
    assert totals(b) == (1, 20)
    assert put(b, "a", 102.5, 7) is False  # older than the tombstone
    assert b.put_row(ObjectRow.tombstone("zzz", ts(103))) is True  # tombstone of unknown name
    assert totals(b) == (1, 20)
    got = b.list_rows(ListingParams())
    assert got is not None and [r.name for r in got[1]] == ["b"]


def test_timestamp_ties_resolve_the_same_in_any_order(env: ListingEnv) -> None:
    rows = [
        ObjectRow("o", ts(101).internal, 5, "t", "e1"),
        ObjectRow("o", ts(101).internal, 7, "t", "e2"),
        ObjectRow.tombstone("o", ts(101)),
    ]
    kept = set()
    for order in (rows, rows[::-1], rows[1:] + rows[:1]):
        b = new_broker(env)
        for r in order:
            b.put_row(r)
        kept.add(b.get_row("o"))
    assert len(kept) == 1


def test_rows_need_a_live_container(env: ListingEnv) -> None:
    missing = new_broker(env, create=False)
    assert put(missing, "o", 101, 1) is None
    b = new_broker(env)
    assert b.delete_db(ts(101), require_empty=True).status == "deleted"
    assert put(b, "o", 102, 1) is None


def test_delete_requires_empty_then_recreate(env: ListingEnv) -> None:
    b = new_broker(env)
    put(b, "o", 101, 1)
    assert b.delete_db(ts(102), require_empty=True).status == "conflict"
    b.put_row(ObjectRow.tombstone("o", ts(103)))
    out = b.delete_db(ts(104), require_empty=True)
    assert out.status == "deleted" and out.info is not None
    assert b.delete_db(ts(105), require_empty=True).status == "not_found"
    assert b.create_or_update("a", "c", ts(103.5), {}).status == "conflict"  # older than delete
    assert b.create_or_update("a", "c", ts(106), {}).status == "created"
    assert b.create_or_update("a", "c", ts(107), {}).status == "accepted"


def test_metadata_merges_per_key_by_timestamp(env: ListingEnv) -> None:
    b = new_broker(env)
    b.update_metadata({"X-Container-Meta-A": ("1", ts(110).internal)})
    b.update_metadata({"X-Container-Meta-B": ("2", ts(111).internal)})
    b.update_metadata({"X-Container-Meta-A": ("old", ts(105).internal)})  # loses
    info = b.get_info()
    assert info is not None
    assert live_metadata(info.metadata) == {"X-Container-Meta-A": "1", "X-Container-Meta-B": "2"}
    b.update_metadata({"X-Container-Meta-A": ("", ts(112).internal)})  # delete the key
    info = b.get_info()
    assert info is not None and live_metadata(info.metadata) == {"X-Container-Meta-B": "2"}
    b.reclaim(ts(113))  # the deleted key's marker is older than the cutoff: gone
    info = b.get_info()
    assert info is not None and "X-Container-Meta-A" not in info.metadata


def test_rows_since_returns_latest_change_per_row(env: ListingEnv) -> None:
    b = new_broker(env)
    put(b, "a", 101, 1)
    put(b, "b", 101, 2)
    put(b, "a", 102, 3)
    rows = b.rows_since(0, 100)
    assert [(r["name"], r["seq"], r["s"]) for r in rows] == [("b", 2, 2), ("a", 3, 3)]
    assert [r["name"] for r in b.rows_since(2, 100)] == ["a"]
    assert len(b.rows_since(0, 1)) == 1
    assert b.rows_since(3, 100) == []


def test_long_names_round_trip(env: ListingEnv) -> None:
    b = new_broker(env)
    head = "n" * 500
    names = [head + "b", head + "a", head + "a" * 524, "n" * 400]
    for i, n in enumerate(names):
        assert put(b, n, 101 + i, 1) is True
    assert put(b, names[0], 120, 5) is True  # overwrite inside a long-name group
    assert b.put_row(ObjectRow.tombstone(names[1], ts(121))) is True
    got = b.list_rows(ListingParams(prefix="nnn"))
    assert got is not None
    assert [r.name for r in got[1]] == sorted({names[0], names[2], names[3]})
    assert totals(b) == (3, 7)
    assert {r["name"] for r in b.rows_since(0, 10)} == set(names)
    assert b.get_row(names[2]) is not None


OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c/d", "é", "x" * 450 + "1", "x" * 450 + "2"]),
        st.integers(101, 140),  # timestamp seconds
        st.integers(0, 50),  # size
        st.booleans(),  # delete
        st.sampled_from(["A", "B", "both"]),  # which replica got the update
    ),
    max_size=40,
)


@settings(
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS, batch=st.integers(1, 7))
def test_two_replicas_converge(
    env: ListingEnv, ops: list[tuple[str, int, int, bool, str]], batch: int
) -> None:
    a, b = new_broker(env), new_broker(env)
    model: dict[str, tuple[float, int, bool]] = {}
    for i, (name, secs, size, deleted, where) in enumerate(ops):
        t = secs + i / 1000  # unique stamps: the model below is plain last-writer-wins
        row = (
            ObjectRow.tombstone(name, ts(t))
            if deleted
            else ObjectRow(name, ts(t).internal, size, "t", "e")
        )
        for side, target in (("A", a), ("B", b)):
            if where in (side, "both"):
                target.put_row(row)
        if name not in model or t > model[name][0]:
            model[name] = (t, 0 if deleted else size, deleted)
    # Replicate both ways in small batches from each side's sync point, as a replicator would.
    for src, dst in ((a, b), (b, a), (a, b)):
        src_info = src.get_info()
        assert src_info is not None
        src_id = src_info.instance_id
        while rows := src.rows_since(dst.sync_point(src_id), batch):
            dst.merge_rows(rows, peer_id=src_id)
    want_live = sorted((n for n, v in model.items() if not v[2]), key=str.encode)
    for replica in (a, b):
        got = replica.list_rows(ListingParams())
        assert got is not None
        assert [r.name for r in got[1]] == want_live
        assert totals(replica) == (len(want_live), sum(model[n][1] for n in want_live))
    all_a = {r["name"]: (r["t"], r["d"]) for r in a.rows_since(0, 1000)}
    all_b = {r["name"]: (r["t"], r["d"]) for r in b.rows_since(0, 1000)}
    assert all_a == all_b


def test_reclaim_drops_old_tombstones_and_deleted_dbs(env: ListingEnv) -> None:
    b = new_broker(env)
    put(b, "keep", 101, 1)
    b.put_row(ObjectRow.tombstone("old", ts(102)))
    b.put_row(ObjectRow.tombstone("new", ts(200)))
    assert b.reclaim(ts(150)) == (1, False)
    assert {r["name"] for r in b.rows_since(0, 10)} == {"keep", "new"}
    assert b.reclaim(ts(150), batch_rows_max=1) == (0, False)
    b.put_row(ObjectRow.tombstone("keep", ts(201)))
    assert b.delete_db(ts(202), require_empty=True).status == "deleted"
    assert b.reclaim(ts(201)) == (1, False)  # "new" goes; the db was deleted too recently
    assert b.get_info() is not None
    assert b.reclaim(ts(300)) == (1, True)
    assert b.get_info() is None
    assert b.rows_since(0, 10) == []


def test_reclaim_in_batches(env: ListingEnv) -> None:
    b = new_broker(env)
    for i in range(25):
        b.put_row(ObjectRow.tombstone(f"o{i:02d}", ts(101)))
    assert b.reclaim(ts(150), batch_rows_max=10) == (25, False)
    assert b.rows_since(0, 100) == []


def test_reclaim_all_walks_every_database(tmp_path: Path) -> None:
    e = acquire_env(tmp_path / "containers.lmdb", EnvOptions(1 << 26))
    try:
        gone, kept = ContainerBroker(e, 1, "c" * 32), ContainerBroker(e, 2, "d" * 32)
        for b in (gone, kept):
            b.create_or_update("a", "c", ts(100), {})
            b.put_row(ObjectRow.tombstone("t", ts(101)))
        gone.delete_db(ts(102), require_empty=True)
        assert reclaim_all(e, ContainerBroker, ts(200)) == (2, 1)
        assert list_databases(e) == [(2, "d" * 32)]
    finally:
        release_env(e)


def test_destroy_removes_only_that_database(env: ListingEnv) -> None:
    doomed, other = new_broker(env), new_broker(env)
    for b in (doomed, other):
        put(b, "x", 101, 1)
        put(b, "y", 101, 2)
    assert doomed.destroy() == 2
    assert doomed.get_info() is None and doomed.rows_since(0, 10) == []
    assert doomed.destroy() == 0
    assert totals(other) == (2, 3) and len(other.rows_since(0, 10)) == 2


def test_merge_info_and_partition_listing(tmp_path: Path) -> None:
    e = acquire_env(tmp_path / "containers.lmdb", EnvOptions(1 << 26))
    try:
        src = ContainerBroker(e, 7, "a" * 32)
        src.create_or_update(
            "acct", "cont", ts(100), {"X-Container-Meta-K": ("v", ts(100).internal)}
        )
        src.delete_db(ts(150), require_empty=True)
        dst = ContainerBroker(e, 9, "b" * 32)
        info = src.get_info()
        assert info is not None
        merged = dst.merge_info(info)
        assert merged.delete_timestamp == ts(150).internal
        assert merged.put_timestamp == ts(100).internal
        assert dst.is_deleted(merged)
        assert live_metadata(merged.metadata) == {"X-Container-Meta-K": "v"}
        assert list_databases(e) == [(7, "a" * 32), (9, "b" * 32)]
        assert list_databases(e, 9) == [(9, "b" * 32)]
        assert list_databases(e, 8) == []
    finally:
        release_env(e)
