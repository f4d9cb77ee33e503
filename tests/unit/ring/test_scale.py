"""Part power 20 x 3 replicas x 1,000 devices: rebalances finish, stay balanced and dispersed.

No timing asserts (the machine may be shared); the figures are in bench/ring_bench.py. This
test proves the flat-array code paths work at full size and that memory stays small.
"""

from __future__ import annotations

import resource

import pytest

from ring.builder import RingBuilder
from ring.devspec import NewDevice


def add(b: RingBuilder, i: int) -> None:
    server = i // 10
    ip = f"10.{server // 250}.0.{server % 250 + 1}"
    b.add(NewDevice(1, i % 5, ip, 6200, ip, 6200, f"d{i}", 100.0))


@pytest.mark.slow
def test_part_power_20_with_1000_devices() -> None:
    b = RingBuilder(20, 3, 1)
    for i in range(1000):
        add(b, i)
    first = b.rebalance(seed=1, now=0)
    assert first.balance <= 1.0 and first.dispersion == 0
    for i in range(1000, 1100):
        add(b, i)
    grown = b.rebalance(seed=1, now=7200)
    assert abs(grown.moved / (3 << 20) - 100 / 1100) < 0.01
    assert grown.balance <= 1.0 and grown.dispersion == 0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # whole test process
    assert peak_kib < 1 << 20  # under 1 GiB; the tables themselves are 6 MiB
    b.validate()
