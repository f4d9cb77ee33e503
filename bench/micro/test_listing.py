"""A 10,000-object container listing from the LMDB broker, rows and JSON body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.listingdb import EnvOptions, ListingParams, acquire_env, release_env
from common.listingdb.formats import render_json
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker, ObjectRow

ROWS = 10_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerBroker]:
    path = Path(tmp_path_factory.mktemp("listing")) / "containers.lmdb"
    env = acquire_env(path, EnvOptions(map_bytes=1 << 30, threads=1))
    try:
        b = ContainerBroker(env, 0, "0" * 32)
        b.create_or_update("AUTH_bench", "c", Timestamp.from_float(1.0), {})
        b.merge_rows([
            {"name": f"o{i:06d}", "t": "1700000000.00000", "s": 4096,
             "c": "application/octet-stream", "e": "0" * 32, "d": False}
            for i in range(ROWS)
        ])  # fmt: skip
        yield b
    finally:
        release_env(env)


def test_list_rows(benchmark, broker: ContainerBroker) -> None:
    got = benchmark(lambda: broker.list_rows(ListingParams(limit=ROWS)))
    assert got is not None and len(got[1]) == ROWS


def test_list_and_render_json(benchmark, broker: ContainerBroker) -> None:
    def listing() -> bytes:
        got = broker.list_rows(ListingParams(limit=ROWS))
        assert got is not None
        return render_json(got[1], ObjectRow.listing_fields)

    body = benchmark(listing)
    assert body.count(b'"name"') == ROWS
