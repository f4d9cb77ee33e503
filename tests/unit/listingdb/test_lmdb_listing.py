"""Listings straight from LMDB (cursor seeks, long-name groups, tombstones) against the
naive reference: on 60,000 random rows, and on small random databases."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.listingdb import EnvOptions, ListingEnv, ListingParams, Subdir, acquire_env, release_env
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker, ObjectRow
from tests.unit.listingdb.reference import reference_listing, sorted_keys

SEGMENTS = ["a", "b", "c/", "d-", "é", "😀", "x/y", "zz", "/"]
LONG_HEAD = "L" * 398  # long names share this head so they land in long-name groups
_ids = itertools.count(1)


def _row(name: str, deleted: bool = False) -> dict[str, object]:
    return {
        "name": name,
        "t": "0000000002.00000",
        "s": len(name),
        "c": "x/y",
        "e": "e",
        "d": deleted,
    }


def _names(p: ListingParams, items: list[ObjectRow | Subdir]) -> list[str | Subdir]:
    return [i if isinstance(i, Subdir) else i.name for i in items]


def _new_db(env: ListingEnv) -> ContainerBroker:
    b = ContainerBroker(env, 1, f"{next(_ids):032x}")
    b.create_or_update("acct", "cont", Timestamp.from_float(1.0), {})
    return b


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListingEnv]:
    path = Path(tmp_path_factory.mktemp("lmdb")) / "containers.lmdb"
    e = acquire_env(path, EnvOptions(map_bytes=1 << 32, threads=1))
    yield e
    release_env(e)


@pytest.fixture(scope="module")
def big(env: ListingEnv):
    rng = random.Random(7)
    names: set[str] = set()
    while len(names) < 60_000:
        depth = rng.randint(1, 4)
        names.add("".join(rng.choice(SEGMENTS) for _ in range(depth)) + str(rng.randint(0, 99)))
    for i in range(300):  # long names, several per 400-byte group
        names.add(LONG_HEAD + rng.choice(SEGMENTS) + rng.choice(SEGMENTS) + str(i % 7) + "x" * i)
    live = sorted(names, key=str.encode)
    dead = [f"{n}~dead" for n in rng.sample(live, 5_000)]
    b = _new_db(env)
    b.merge_rows([_row(n) for n in live] + [_row(n, deleted=True) for n in dead])
    info = b.get_info()
    assert info is not None and info.stats["object_count"] == len(live)
    seeds = [*_prefixes(live, rng, 200), ""]
    return b, live, sorted_keys(live), seeds


def _prefixes(names: list[str], rng: random.Random, count: int) -> list[str]:
    picks = [rng.choice(names) for _ in range(count)]
    return [p[: rng.randint(0, min(len(p), 420))] for p in picks]


text_st = st.one_of(st.just(""), st.sampled_from(SEGMENTS), st.integers(0, 10**6).map(str))


@settings(
    database=None,
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_big_listing_matches_reference(big, data: st.DataObject) -> None:
    broker, live, keys, seed_list = big
    seeds = st.sampled_from(seed_list)
    p = ListingParams(
        prefix=data.draw(seeds),
        delimiter=data.draw(st.sampled_from(["", "/", "-", "é", "c/"])),
        marker=data.draw(st.one_of(seeds, text_st)),
        end_marker=data.draw(st.one_of(st.just(""), seeds)),
        limit=data.draw(st.integers(0, 60)),
        reverse=data.draw(st.booleans()),
        path=data.draw(st.one_of(st.none(), st.none(), seeds)),
    )
    got = broker.list_rows(p)
    assert got is not None
    assert _names(p, got[1]) == reference_listing(live, p, keys)


name_st = st.one_of(
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5).map("".join),
    st.lists(st.sampled_from(SEGMENTS), max_size=4).map(lambda s: LONG_HEAD + "".join(s)),
)


@settings(
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    names=st.lists(name_st, max_size=30),
    dead=st.lists(name_st, max_size=10),
    prefix=st.one_of(st.just(""), st.sampled_from(["a", "c/", LONG_HEAD, LONG_HEAD + "a"])),
    delimiter=st.sampled_from(["", "/", "a"]),
    marker=st.one_of(st.just(""), name_st),
    reverse=st.booleans(),
    limit=st.integers(0, 40),
)
def test_small_random_dbs_match_reference(
    env: ListingEnv,
    names: list[str],
    dead: list[str],
    prefix: str,
    delimiter: str,
    marker: str,
    reverse: bool,
    limit: int,
) -> None:
    b = _new_db(env)
    dead_only = [n for n in dead if n not in names]
    b.merge_rows([_row(n) for n in names] + [_row(n, deleted=True) for n in dead_only])
    p = ListingParams(
        prefix=prefix, delimiter=delimiter, marker=marker, reverse=reverse, limit=limit
    )
    got = b.list_rows(p)
    assert got is not None
    assert _names(p, got[1]) == reference_listing(names, p)
