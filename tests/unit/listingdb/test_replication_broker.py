"""Broker support for replication on real LMDB: the row hash, explicit sync marks, staged
databases hidden from listings, and guarded removal of handoff copies."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.listingdb import EnvOptions, ListingEnv, acquire_env, list_databases, release_env
from common.listingdb.broker import EMPTY_ROW_HASH, STAGING_PARTITION
from common.listingdb.records import decode_info, encode_info
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListingEnv]:
    e = acquire_env(Path(tmp_path_factory.mktemp("r")) / "containers.lmdb", EnvOptions(1 << 28))
    yield e
    release_env(e)


def new(env: ListingEnv, part: int = 1) -> ContainerBroker:
    b = ContainerBroker(env, part, f"{next(_ids):032x}")
    b.create_or_update("a", "c", Timestamp(10**5), {})
    return b


def wire(name: str, t: int, size: int, deleted: bool = False) -> dict[str, Any]:
    stamp = Timestamp.from_float(1_700_000_000 + t).internal
    return {"name": name, "t": stamp, "s": size, "c": "", "e": "e", "d": deleted}


def row_hash(b: ContainerBroker) -> str | None:
    info = b.get_info()
    assert info is not None
    return info.row_hash


_rows = st.lists(
    st.tuples(st.sampled_from("abcde"), st.integers(0, 20), st.integers(0, 3), st.booleans()),
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_rows, st.randoms(use_true_random=False))
def test_row_hash_ignores_arrival_order(env: ListingEnv, rows: list[Any], rnd: Any) -> None:
    updates = [wire(n, t, s, d) for n, t, s, d in rows]
    shuffled = list(updates)
    rnd.shuffle(shuffled)
    one, two = new(env), new(env)
    one.merge_rows(updates)
    for u in shuffled:  # one transaction per row on the other replica
        two.merge_rows([u])
    assert row_hash(one) == row_hash(two)
    assert (row_hash(one) == EMPTY_ROW_HASH) == (not updates)


def test_row_hash_follows_reclaim(env: ListingEnv) -> None:
    one, two = new(env), new(env)
    one.merge_rows([wire("live", 1, 1), wire("dead", 2, 0, True)])
    two.merge_rows([wire("live", 1, 1)])
    assert row_hash(one) != row_hash(two)
    one.reclaim(Timestamp.from_float(1_700_000_100))
    assert row_hash(one) == row_hash(two)


def test_old_records_without_a_row_hash_stay_unknown(env: ListingEnv) -> None:
    b = new(env)
    info = b.get_info()
    assert info is not None
    info.row_hash = None
    raw = encode_info(info)
    assert b"rh" not in raw and decode_info(raw).row_hash is None
    with env.env.begin(write=True) as txn:
        txn.put(b.key, raw, db=env.info)
    b.merge_rows([wire("x", 1, 1)])
    assert row_hash(b) is None  # never a wrong hash that could claim two replicas are equal


def test_sync_marks_only_move_forward(env: ListingEnv) -> None:
    b = new(env)
    peer = "cd" * 16
    b.merge_rows([{**wire("x", 1, 1), "seq": 5}], peer)
    assert b.sync_point(peer) == 5
    b.merge_rows([], peer, sync_to=9)
    assert b.sync_point(peer) == 9
    b.merge_rows([{**wire("y", 2, 1), "seq": 3}], peer, sync_to=3)
    assert b.sync_point(peer) == 9


def test_staged_databases_are_listed_only_on_request(env: ListingEnv) -> None:
    real = new(env, part=7)
    staged = ContainerBroker(env, STAGING_PARTITION, f"{next(_ids):032x}")
    staged.create_or_update("a", "s", Timestamp(10**5), {})
    everything = list_databases(env)
    assert (7, real.hash_hex) in everything
    assert all(part != STAGING_PARTITION for part, _h in everything)
    assert (STAGING_PARTITION, staged.hash_hex) in list_databases(env, STAGING_PARTITION)
    staged.destroy()


def test_destroy_if_unchanged(env: ListingEnv) -> None:
    b = new(env)
    b.merge_rows([wire("x", 1, 1)])
    seen = b.get_info()
    assert seen is not None
    b.merge_rows([wire("y", 2, 1)])  # written while the copy was being pushed
    assert not b.destroy_if_unchanged(seen)
    assert b.get_info() is not None
    b.update_metadata({"X-Container-Meta-A": ("1", Timestamp(10**6).internal)})
    latest = b.get_info()
    assert latest is not None and not b.destroy_if_unchanged(seen)
    assert b.destroy_if_unchanged(latest)
    assert b.get_info() is None and b.rows_since(0, 10) == []
