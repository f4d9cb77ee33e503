"""The account broker: container rows merged from stats reports, in any order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accountd.broker import AccountBroker, ContainerRow
from common.listingdb import EnvOptions, ListingEnv, ListingParams, acquire_env, release_env
from common.timestamps import Timestamp

_ids = itertools.count(1)
Z = "0000000000.00000"


def t(seconds: float) -> str:
    return Timestamp.from_float(seconds).internal


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListingEnv]:
    e = acquire_env(Path(tmp_path_factory.mktemp("a")) / "accounts.lmdb", EnvOptions(1 << 30))
    yield e
    release_env(e)


def new_account(env: ListingEnv) -> AccountBroker:
    b = AccountBroker(env, 1, f"{next(_ids):032x}")
    assert b.create_or_update("AUTH_x", None, Timestamp.from_float(10), {}).status == "created"
    return b


def stats(b: AccountBroker) -> dict[str, int]:
    info = b.get_info()
    assert info is not None
    return {k: v for k, v in info.stats.items() if v}


def test_reports_update_totals(env: ListingEnv) -> None:
    b = new_account(env)
    b.put_row(ContainerRow("c1", t(100), Z, 0, 0, t(100)))
    b.put_row(ContainerRow("c2", t(101), Z, 3, 30, t(101)))
    assert stats(b) == {"container_count": 2, "object_count": 3, "bytes_used": 30}
    b.put_row(ContainerRow("c1", t(100), Z, 5, 50, t(110)))  # newer report
    b.put_row(ContainerRow("c1", t(100), Z, 1, 1, t(105)))  # late, older report: ignored
    assert stats(b) == {"container_count": 2, "object_count": 8, "bytes_used": 80}
    b.put_row(ContainerRow("c2", t(101), t(120), 0, 0, t(120)))  # container deleted
    assert stats(b) == {"container_count": 1, "object_count": 5, "bytes_used": 50}
    got = b.list_rows(ListingParams())
    assert got is not None
    assert [(r.name, r.object_count) for r in got[1] if isinstance(r, ContainerRow)] == [("c1", 5)]
    assert b.reclaim(Timestamp.from_float(121)) == (1, False)


def test_deleted_account_refuses_rows(env: ListingEnv) -> None:
    b = new_account(env)
    assert b.delete_db(Timestamp.from_float(20), require_empty=False).status == "deleted"
    assert b.put_row(ContainerRow("c", t(30))) is None
    assert b.create_or_update("AUTH_x", None, Timestamp.from_float(15), {}).status == "conflict"


REPORTS = st.lists(
    st.builds(
        ContainerRow,
        name=st.sampled_from(["c1", "c2", "c3"]),
        put_timestamp=st.integers(100, 110).map(t),
        delete_timestamp=st.one_of(st.just(Z), st.integers(100, 110).map(t)),
        object_count=st.integers(0, 5),
        bytes_used=st.integers(0, 50),
        stats_timestamp=st.integers(100, 112).map(t),
    ),
    max_size=20,
)


@settings(
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(reports=REPORTS, order=st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_rows(
    env: ListingEnv, reports: list[ContainerRow], order
) -> None:
    a, b = new_account(env), new_account(env)
    for r in reports:
        a.put_row(r)
    shuffled = list(reports)
    order.shuffle(shuffled)
    for r in shuffled:
        b.put_row(r)
    rows_a = {r["name"]: r for r in a.rows_since(0, 100)}
    rows_b = {r["name"]: r for r in b.rows_since(0, 100)}
    for wire in itertools.chain(rows_a.values(), rows_b.values()):
        wire.pop("seq")
    assert rows_a == rows_b
    assert stats(a) == stats(b)
