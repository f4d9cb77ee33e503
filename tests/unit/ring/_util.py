"""Builders for tests: regular topologies made from plain parameters."""

from __future__ import annotations

from array import array

from ring.builder import RingBuilder
from ring.devspec import NewDevice


def new_device(region: int, zone: int, server: int, disk: int, weight: float = 100.0) -> NewDevice:
    ip = f"10.{region}.{zone}.{server + 1}"
    return NewDevice(region, zone, ip, 6200, ip, 6200, f"sd{disk}", weight)


def grid(
    part_power: int,
    replicas: float,
    regions: int = 1,
    zones: int = 3,
    servers: int = 2,
    disks: int = 2,
    min_part_hours: int = 1,
    weight: float = 100.0,
) -> RingBuilder:
    """A builder with regions x zones x servers x disks devices of equal weight."""
    b = RingBuilder(part_power, replicas, min_part_hours)
    for r in range(regions):
        for z in range(zones):
            for s in range(servers):
                for d in range(disks):
                    b.add(new_device(r + 1, z + 1, s, d, weight))
    return b


def snapshot(b: RingBuilder) -> list[array[int]]:
    assert b.columns is not None
    return [array("H", c) for c in b.columns]


def zone_overlaps(b: RingBuilder) -> int:
    """Partitions with two replicas in one (region, zone)."""
    assert b.columns is not None
    zone = {d.id: (d.region, d.zone) for d in b.devs}
    bad = 0
    for p in range(b.partitions):
        zs = [zone[c[p]] for c in b.columns if p < len(c)]
        bad += len(set(zs)) < len(zs)
    return bad


def changed_replicas(before: list[array[int]], after: list[array[int]], p: int) -> int:
    return sum(1 for b, a in zip(before, after, strict=True) if p < len(b) and b[p] != a[p])
