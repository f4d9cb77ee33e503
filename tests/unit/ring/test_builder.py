"""RingBuilder invariants: balance, dispersion, min_part_hours, movement, determinism, errors."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ring.builder import RingBuilder
from ring.devspec import DeviceChange, DeviceQuery
from ring.errors import (
    DeviceNotFoundError,
    DuplicateDeviceError,
    RebalanceError,
    RingBuilderError,
)
from tests.unit.ring._util import changed_replicas, grid, new_device, snapshot, zone_overlaps

HOUR = 3600.0
PROPS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(
    zones=st.integers(1, 6),
    servers=st.integers(1, 4),
    disks=st.integers(1, 4),
    replicas=st.sampled_from([1, 2, 3, 4]),
    seed=st.integers(0, 1000),
)
def test_uniform_weights_balance_within_one_percent(zones, servers, disks, replicas, seed) -> None:
    if zones * servers * disks < replicas:
        return
    b = grid(14, replicas, zones=zones, servers=servers, disks=disks)
    result = b.rebalance(seed=seed, now=0)
    assert result.balance <= 1.0
    assert b.balance() <= 1.0
    b.validate()


@PROPS
@given(
    weights=st.lists(st.integers(1, 100), min_size=3, max_size=24),
    zones=st.integers(3, 6),
    seed=st.integers(0, 1000),
)
def test_no_zone_overlap_when_zones_at_least_replicas(weights, zones, seed) -> None:
    b = RingBuilder(10, 3, 1)
    for i, w in enumerate(weights):
        b.add(new_device(1, i % zones, i // zones, 0, float(w)))
    if len({d.zone for d in b.devs}) < 3:
        return
    b.rebalance(seed=seed, now=0)
    assert zone_overlaps(b) == 0
    assert b.dispersion().crowded == 0
    # growth keeps zones unique too
    for i in range(len(weights), len(weights) + 3):
        b.add(new_device(1, i % zones, 50 + i, 1, 60.0))
    b.rebalance(seed=seed, now=2 * HOUR)
    assert zone_overlaps(b) == 0


@PROPS
@given(seed=st.integers(0, 1000), extra=st.integers(1, 6), min_part_hours=st.integers(1, 48))
def test_min_part_hours_respected(seed, extra, min_part_hours) -> None:
    b = grid(10, 3, zones=4, servers=2, disks=2, min_part_hours=min_part_hours)
    b.rebalance(seed=seed, now=0)
    for i in range(extra):
        b.add(new_device(1, 1 + i % 4, 9, i))
    t1 = min_part_hours * HOUR
    before = snapshot(b)
    first = b.rebalance(seed=seed, now=t1)
    after1 = snapshot(b)
    moved_parts = [p for p in range(b.partitions) if changed_replicas(before, after1, p)]
    assert first.moved > 0
    assert all(changed_replicas(before, after1, p) == 1 for p in moved_parts)
    # more weight, but less than min_part_hours later: those partitions must stay put
    b.set_weight(b.devs[-1].id, 300.0)
    b.rebalance(seed=seed, now=t1 + min_part_hours * HOUR - 60)
    after2 = snapshot(b)
    assert all(changed_replicas(after1, after2, p) == 0 for p in moved_parts)
    assert all(changed_replicas(after1, after2, p) <= 1 for p in range(b.partitions))


def test_min_part_hours_blocks_all_moves_until_it_passes() -> None:
    b = grid(10, 3, zones=3, min_part_hours=2)
    b.rebalance(seed=1, now=0)
    b.add(new_device(1, 1, 7, 0))
    assert b.rebalance(seed=1, now=HOUR).moved == 0
    assert b.rebalance(seed=1, now=2 * HOUR).moved > 0


def test_pretend_min_part_hours_passed_unlocks() -> None:
    b = grid(10, 3, zones=3, min_part_hours=24)
    b.rebalance(seed=1, now=0)
    b.add(new_device(1, 2, 7, 0))
    b.pretend_min_part_hours_passed()
    assert b.rebalance(seed=1, now=60).moved > 0


@PROPS
@given(
    added=st.integers(1, 12),
    seed=st.integers(0, 1000),
    weight=st.sampled_from([50.0, 100.0, 200.0]),
)
# Found by CI: the first pass left balance 8.2 (35 partitions short on the new devices, each
# already moving one replica); the second pass settles it.
@example(added=2, seed=403, weight=200.0)
def test_growth_moves_about_the_weight_added(added, seed, weight) -> None:
    """One rebalance moves about the share of weight added; balance is within 2% once a
    second rebalance may move what the first could not (at most one replica of a partition
    moves per rebalance, as with swift-ring-builder, which asks to rebalance again later)."""
    b = grid(11, 3, zones=4, servers=3, disks=2)
    b.rebalance(seed=seed, now=0)
    old_weight = sum(d.weight for d in b.devs)
    for i in range(added):
        b.add(new_device(1, 1 + i % 4, 10 + i // 4, i, weight))
    new_weight = sum(d.weight for d in b.devs)
    # at most one replica of a partition moves per rebalance, so cap the share added
    assume((new_weight - old_weight) / new_weight <= 0.3)
    result = b.rebalance(seed=seed, now=10 * HOUR)
    fraction = result.moved / (3 * b.partitions)
    expected = (new_weight - old_weight) / new_weight
    assert abs(fraction - expected) <= 0.03, (fraction, expected)
    if result.balance > 2.0:
        again = b.rebalance(seed=seed, now=20 * HOUR)
        assert again.moved <= 0.03 * 3 * b.partitions, again
        assert again.balance <= 2.0, again


def test_remove_device_moves_only_its_partitions() -> None:
    b = grid(12, 3, zones=4, servers=3, disks=2)
    b.rebalance(seed=5, now=0)
    gone = b.devs[4]
    held = b.device_parts()[gone.id]
    b.remove(gone.id)
    before = snapshot(b)
    result = b.rebalance(seed=5, now=HOUR / 2)  # removal ignores min_part_hours
    assert b.device_parts().get(gone.id) is None
    assert held <= result.moved <= held * 1.05
    assert zone_overlaps(b) == 0
    assert gone.id not in {d.id for d in b.devs}
    after = snapshot(b)
    assert all(changed_replicas(before, after, p) <= 1 for p in range(b.partitions))


def test_zero_weight_device_drains() -> None:
    b = grid(10, 3, zones=3)
    b.rebalance(seed=2, now=0)
    dev = b.devs[0]
    b.set_weight(dev.id, 0)
    b.rebalance(seed=2, now=10 * HOUR)
    assert b.device_parts()[dev.id] == 0


def test_same_seed_same_ring_different_seed_still_valid() -> None:
    def build(seed: int) -> RingBuilder:
        b = grid(11, 3, zones=4, servers=2, disks=3)
        b.rebalance(seed=seed, now=0)
        for i in range(3):
            b.add(new_device(1, 1 + i, 8, 0))
        b.rebalance(rng=random.Random(seed), now=10 * HOUR)
        return b

    a, b, c = build(7), build(7), build(8)
    assert snapshot(a) == snapshot(b)
    c.validate()


def test_fractional_replicas() -> None:
    b = grid(10, 2.5, zones=3)
    b.rebalance(seed=1, now=0)
    assert b.replica_lengths == [1024, 1024, 512]
    assert b.balance() <= 1.0
    assert zone_overlaps(b) == 0


def test_multi_region_spreads_regions_first() -> None:
    b = grid(10, 3, regions=3, zones=2, servers=2, disks=1)
    b.rebalance(seed=1, now=0)
    assert b.columns is not None
    region = {d.id: d.region for d in b.devs}
    for p in range(b.partitions):
        assert len({region[c[p]] for c in b.columns}) == 3


def test_dispersion_first_when_a_zone_is_too_heavy() -> None:
    b = RingBuilder(10, 3, 1)
    for z, w in ((1, 1000.0), (2, 100.0), (3, 100.0)):
        b.add(new_device(1, z, 0, 0, w))
    b.add(new_device(1, 1, 1, 0, 1000.0))
    b.rebalance(seed=1, now=0)
    assert zone_overlaps(b) == 0
    assert b.balance() > 100  # weight could not be honoured; balance says so


def test_errors() -> None:
    with pytest.raises(RebalanceError):
        RingBuilder(8, 3, 1).rebalance(now=0)
    b = RingBuilder(8, 3, 1)
    b.add(new_device(1, 1, 0, 0))
    b.add(new_device(1, 1, 0, 1))
    with pytest.raises(RebalanceError):
        b.rebalance(now=0)
    with pytest.raises(DuplicateDeviceError):
        b.add(new_device(1, 1, 0, 0))
    with pytest.raises(DeviceNotFoundError):
        b.remove(99)
    with pytest.raises(DeviceNotFoundError):
        b.set_weight(99, 1)
    with pytest.raises(DuplicateDeviceError):
        b.set_info(1, DeviceChange(device="sd0"))
    with pytest.raises(RingBuilderError):
        RingBuilder(30, 3, 1)
    with pytest.raises(RingBuilderError):
        RingBuilder(8, 0.5, 1)
    with pytest.raises(RingBuilderError):
        RingBuilder(8, 3, -1)
    with pytest.raises(RingBuilderError):
        b.ring_data()
    with pytest.raises(RingBuilderError):
        b.validate()


def test_search_and_list_parts() -> None:
    b = grid(8, 3, zones=3)
    b.rebalance(seed=1, now=0)
    in_zone = b.search(DeviceQuery(zone=2))
    assert in_zone and all(d.zone == 2 for d in in_zone)
    parts = b.list_parts(in_zone)
    assert len(parts) == b.partitions  # every partition has exactly one replica in zone 2
    assert all(n == 1 for _, n in parts)


def test_a_device_shares_partitions_with_many_devices() -> None:
    """When a disk dies, its partitions' other replicas must be spread over many disks."""
    b = grid(12, 3, zones=5, servers=3, disks=4)  # 60 devices, 48 outside any one zone
    b.rebalance(seed=3, now=0)
    assert b.columns is not None
    partners: dict[int, set[int]] = {d.id: set() for d in b.devs}
    for p in range(b.partitions):
        held = [c[p] for c in b.columns]
        for d in held:
            partners[d].update(held)
    assert min(len(s) - 1 for s in partners.values()) >= 24


def test_overload_zero_lets_weight_win_when_a_small_region_arrives() -> None:
    def grow(overload: float | None) -> tuple[float, float, float]:
        b = grid(11, 3, regions=1, zones=4, servers=3, disks=2)
        b.set_overload(overload)
        b.rebalance(seed=1, now=0)
        for z in range(2):
            for s in range(2):
                b.add(new_device(2, z + 1, s, 0, 100.0))
        r = b.rebalance(seed=1, now=2 * HOUR)
        return r.moved / (3 * b.partitions), r.balance, r.dispersion

    moved, balance, dispersion = grow(0.0)
    assert abs(moved - 4 / 28) < 0.01 and balance <= 1.0
    assert dispersion > 0  # honest: many partitions still have all replicas in region 1
    moved_first, balance_first, dispersion_first = grow(None)
    assert abs(moved_first - 1 / 3) < 0.01 and dispersion_first == 0 and balance_first > 100
    moved_some, balance_some, _ = grow(0.1)
    assert moved < moved_some < moved_first and balance_some <= 11


def test_overload_bounds() -> None:
    b = grid(6, 3)
    with pytest.raises(RingBuilderError):
        b.set_overload(-0.1)
    b.set_overload(0.25)
    assert b.overload == 0.25
