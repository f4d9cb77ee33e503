"""Ring lookups: name -> partition -> primary devices, as the proxy does per request."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ring import Ring, RingBuilder, parse_add, write_ring


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Ring:
    """The all-in-one's shape: part power 10, 3 replicas, 4 devices in 2 zones."""
    builder = RingBuilder(10, 3, 1)
    for zone, port, dev in ((1, 6200, "d1"), (1, 6200, "d2"), (2, 6210, "d3"), (2, 6210, "d4")):
        builder.add(parse_add(f"r1z{zone}-127.0.0.1:{port}/{dev}", 100.0))
    builder.rebalance(seed=1)
    path = Path(tmp_path_factory.mktemp("ring")) / "object.ring"
    write_ring(path, builder.ring_data())
    return Ring(path, "prefix", "suffix")


def test_get_nodes(benchmark, ring: Ring) -> None:
    names = itertools.cycle([f"obj-{i}" for i in range(4096)])

    def lookup() -> int:
        part, nodes = ring.get_nodes("AUTH_bench", "c", next(names))
        return part + len(nodes)

    assert benchmark(lookup) >= 3


def test_get_part_only(benchmark, ring: Ring) -> None:
    names = itertools.cycle([f"obj-{i}" for i in range(4096)])
    part = benchmark(lambda: ring.get_part("AUTH_bench", "c", next(names)))
    assert 0 <= part < ring.partition_count
