"""The flat partition tables and the first layout.

Tables are flat: one ``array('H')`` per replica mapping partition -> device id, 0xFFFF meaning
"unassigned". Everything that touches every slot runs through C-level iteration (``map``,
``compress``, ``Counter``, slicing).

First layout: write the quota of every device as a run into one sequence of
``partitions x replicas`` slots, ordered by the failure-domain tree, and cut it into one column
per replica. Partition p gets the slots p, p + P, p + 2P, ... A domain whose run is at most P
long therefore holds at most one replica of any partition, and a run of length L holds at most
ceil(L / P) replicas of any partition: dispersion is optimal for every tier at once, and balance
is exact. Inside a run of at most P slots, devices are interleaved and scrambled so partitions
that share one device do not all share the others too (faster re-replication when a disk dies).
"""

from __future__ import annotations

import random
from array import array
from collections import Counter
from itertools import compress
from math import gcd
from operator import eq

from ring.tiers import LEVELS, Plan

__all__ = [
    "NONE",
    "initial_assignment",
    "move_stamp",
    "replica_lengths",
    "slot_counts",
    "violations",
]

NONE = 0xFFFF


def move_stamp(now_min: int) -> int:
    """What the last-moved table records for a move at minute `now_min` (0 = never moved)."""
    return now_min + 1


def replica_lengths(partitions: int, replicas: float) -> list[int]:
    """Column lengths: whole replicas cover every partition, a fraction covers a prefix."""
    whole = int(replicas)
    lengths = [partitions] * whole
    extra = round((replicas - whole) * partitions)
    if extra:
        lengths.append(extra)
    return lengths


def slot_counts(columns: list[array[int]]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for col in columns:
        counts.update(col)
    counts.pop(NONE, None)
    return counts


def _emit_group(group: list[int], quota: dict[int, int]) -> array[int]:
    """Interleave the group's devices: each round emits every device that still has quota."""
    out: array[int] = array("H")
    active = [d for d in group if quota[d] > 0]
    done = 0
    for level in sorted({quota[d] for d in active}):
        out.extend(array("H", active) * (level - done))
        done = level
        active = [d for d in active if quota[d] > level]
    return out


def _scramble(run: array[int], rng: random.Random) -> array[int]:
    """Permute a run by i -> i * step mod len, step coprime to len (C-speed maps).

    Any order inside a run keeps the dispersion guarantee; scrambling keeps a device's
    partitions from always pairing with the same few devices of the other runs, so when a
    disk dies its partitions are re-replicated from many disks, not two or three.
    """
    n = len(run)
    if n < 3:
        return run
    step = rng.randrange(n // 3, n) | 1
    while gcd(step, n) != 1:
        step += 2
    index = map(n.__rmod__, range(0, n * step, step))
    return array("H", map(run.__getitem__, index))


def initial_assignment(plan: Plan, lengths: list[int], rng: random.Random) -> list[array[int]]:
    seq: array[int] = array("H")
    for group in plan.layout:
        seq.extend(_scramble(_emit_group(group, plan.quota), rng))
    assert len(seq) == sum(lengths), "layout does not cover every slot"
    columns = []
    offset = 0
    for n in lengths:
        columns.append(seq[offset : offset + n])
        offset += n
    return columns


def _padded(table: list[int]) -> list[int]:
    return table + [-1] * (NONE + 1 - len(table))


def _exact_violation(
    p: int, columns: list[array[int]], plan: Plan, all_caps: list[list[int]]
) -> int:
    """The highest tier (0 region .. 3 device) crowded by partition p's replicas, or -1."""
    devs = [c[p] for c in columns if p < len(c) and c[p] != NONE]
    for level in range(len(LEVELS)):
        table, caps = plan.dom[level], all_caps[level]
        seen: dict[int, int] = {}
        for d in devs:
            x = table[d] if d < len(table) else -1
            if x >= 0:
                seen[x] = seen.get(x, 0) + 1
                if seen[x] > caps[x]:
                    return level
    return len(LEVELS) if len(set(devs)) < len(devs) else -1


def _pairs_equal(cols: list[list[int]] | list[array[int]], into: set[int]) -> None:
    for r in range(len(cols)):
        for s in range(r + 1, len(cols)):
            into.update(compress(range(len(cols[s])), map(eq, cols[r], cols[s])))


def violations(columns: list[array[int]], plan: Plan, topology: bool = False) -> dict[int, int]:
    """Partitions whose replicas crowd a failure domain more than necessary -> worst tier.

    Against the caps placement honours, or with `topology` against what spreading alone
    allows (the dispersion report: weight-forced crowding counts there).

    Candidates (two replicas in one domain) are found at C speed per tier; only those are
    checked exactly against the caps. Tiers where no domain can be crowded are skipped.
    """
    all_caps = plan.cap_topology if topology else plan.cap
    candidates: set[int] = set()
    for level in range(len(LEVELS)):
        caps = all_caps[level]
        if caps and min(caps) < plan.replicas_max:
            table = _padded(plan.dom[level])
            _pairs_equal([list(map(table.__getitem__, c)) for c in columns], candidates)
            if max(caps) == 1:
                break  # two replicas in one lower domain share this one too: already found
    else:
        _pairs_equal(columns, candidates)
    out = {}
    for p in sorted(candidates):
        level = _exact_violation(p, columns, plan, all_caps)
        if level >= 0:
            out[p] = level
    return out
