"""The runtime Ring: lookups agree with the builder, handoffs, and reloading on file change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.clock import ManualClock
from ring import Ring, RingBuilder, hash_path, partition_of_hash
from ring.errors import RingError, RingFileError
from ring.ringfile import write_ring
from tests.unit.ring._util import grid, new_device

PREFIX, SUFFIX = "pre", "suf"


def built(tmp_path: Path, b: RingBuilder | None = None) -> tuple[RingBuilder, Path]:
    if b is None:
        b = grid(8, 3, regions=2, zones=3, servers=2, disks=2)
        b.rebalance(seed=1, now=0)
    path = tmp_path / "object.ring"
    write_ring(path, b.ring_data())
    return b, path


def test_lookups_agree_with_builder(tmp_path: Path) -> None:
    b, path = built(tmp_path)
    ring = Ring(path, PREFIX, SUFFIX)
    assert (ring.part_power, ring.partition_count, ring.replica_count) == (8, 256, 3.0)
    assert b.columns is not None
    by_id = {d.id: d for d in b.devs}
    for i in range(200):
        names = ("AUTH_a", f"c{i % 7}", f"o{i}")
        part, nodes = ring.get_nodes(*names)
        assert part == partition_of_hash(hash_path(PREFIX, SUFFIX, *names), 8)
        assert nodes == [by_id[c[part]] for c in b.columns]
        assert len({n.id for n in nodes}) == 3
    assert ring.get_part("AUTH_a") == partition_of_hash(hash_path(PREFIX, SUFFIX, "AUTH_a"), 8)
    assert [d for d in ring.devs if d is not None] == b.devs


def test_handoffs_never_repeat_and_prefer_new_domains(tmp_path: Path) -> None:
    b, path = built(tmp_path)
    ring = Ring(path, PREFIX, SUFFIX)
    for part in range(0, ring.partition_count, 7):
        primaries = ring.get_part_nodes(part)
        handoffs = list(ring.get_more_nodes(part))
        ids = [d.id for d in primaries + handoffs]
        assert len(ids) == len(set(ids)) == len(b.devs)  # every device once, primaries first
        zones_used = {(d.region, d.zone) for d in primaries}
        all_zones = {(d.region, d.zone) for d in b.devs}
        first = handoffs[: len(all_zones - zones_used)]
        assert {(d.region, d.zone) for d in first} == all_zones - zones_used
        assert list(ring.get_more_nodes(part)) == handoffs  # deterministic


def test_handoffs_include_unweighted_devices_last(tmp_path: Path) -> None:
    b = grid(6, 3, zones=3, servers=1, disks=1)
    b.rebalance(seed=1, now=0)
    idle = b.add(new_device(1, 1, 5, 0, 0.0))
    b.rebalance(seed=1, now=10**6)
    _, path = built(tmp_path, b)
    ring = Ring(path, PREFIX, SUFFIX)
    assert list(ring.get_more_nodes(0))[-1] == idle


def test_reload_on_change_at_most_every_interval(tmp_path: Path) -> None:
    b, path = built(tmp_path)
    clock = ManualClock()
    ring = Ring(path, PREFIX, SUFFIX, reload_interval_s=10, clock=clock)
    v1 = ring.version
    b.add(new_device(3, 1, 0, 0))
    b.pretend_min_part_hours_passed()
    b.rebalance(seed=2, now=10**6)
    write_ring(path, b.ring_data())
    clock.advance(5)
    assert ring.version == v1  # not checked yet
    clock.advance(5)
    assert ring.version == b.version != v1
    assert len([d for d in ring.devs if d is not None]) == len(b.devs)


def test_bad_reload_keeps_serving_the_old_ring(tmp_path: Path) -> None:
    _, path = built(tmp_path)
    clock = ManualClock()
    ring = Ring(path, PREFIX, SUFFIX, reload_interval_s=1, clock=clock)
    before = ring.get_nodes("a", "c", "o")
    path.write_bytes(b"CRNG garbage")
    os.utime(path, ns=(1, 1))
    clock.advance(2)
    assert ring.get_nodes("a", "c", "o") == before


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(RingFileError):
        Ring(tmp_path / "missing.ring", PREFIX, SUFFIX)
    _, path = built(tmp_path)
    with pytest.raises(RingError):
        Ring(path, "", "")
    ring = Ring(path, PREFIX, SUFFIX)
    with pytest.raises(RingError):
        ring.get_part_nodes(256)
    with pytest.raises(ValueError):
        ring.get_part("a", None, "o")
