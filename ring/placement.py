"""Rebalancing existing tables: gather the slots that must or should move, then place them.

Gather slots that must or should move -- all slots of removed devices, one replica of each
partition whose replicas crowd a failure domain, and the excess of devices over quota -- never
more than one replica of a partition per round unless its device was removed, and none of a
partition moved within min_part_hours. Then place each gathered slot on a device with spare
quota, aiming at the zone the gathering booked for it and taking the first device that does not
crowd a domain this partition already uses. Python-level work is per *moved* slot only.
"""

from __future__ import annotations

import random
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress

from ring.errors import RebalanceError
from ring.tables import NONE, move_stamp, slot_counts, violations
from ring.tiers import LEVELS, Plan

__all__ = ["RoundResult", "rebalance_round"]

_SCAN_MAX = 512  # devices examined for one slot before settling for the least-bad one
_REPAIR_TRIES = 32  # full devices examined when freeing room for a slot that fits nowhere
_REPAIR_SCAN = 64  # devices with spare examined for the slot being displaced
_LEVEL_PENALTY = (1_000_000, 10_000, 100)  # crowding a region is worse than a zone, ...

Progress = Callable[[str], None]


@dataclass
class RoundResult:
    gathered: int = 0
    moved: int = 0
    unplaceable_dispersion: int = 0
    moved_partitions: list[int] = field(default_factory=list)


class _Round:
    """One gather-and-place pass over the tables (mutates `columns` and `last_moved`)."""

    def __init__(
        self,
        columns: list[array[int]],
        plan: Plan,
        last_moved: array[int],
        now_min: int,
        min_part_minutes: int,
        removed: set[int],
        counts: Counter[int],
    ) -> None:
        self.columns = columns
        self.removed = removed
        self.plan = plan
        self.parts = plan.partitions
        self.last_moved = last_moved
        self.stamp = move_stamp(now_min)
        self.min_part_minutes = min_part_minutes
        self.flag = bytearray(self.parts)
        self.counts = counts  # slot_counts(columns), kept current as slots move
        self.full = all(len(c) == self.parts for c in columns)
        self.slots: list[int] = []
        self.origin: list[int] = []
        self.aim: list[int] = []
        self._slot_cache: dict[int, list[tuple[int, int]]] = {}
        self._tables()
        self.ledger: _ZoneLedger | None = None

    def eligible(self, p: int) -> bool:
        last = self.last_moved[p]
        return not self.flag[p] and (last == 0 or self.stamp - last >= self.min_part_minutes)

    def take(self, slot: int, aim: int = -1) -> None:
        """Unassign a slot; `aim` is the zone placement should try first (-1: its own)."""
        self.aim.append(aim)
        r, p = divmod(slot, self.parts)
        d = self.columns[r][p]
        self.columns[r][p] = NONE
        self.flag[p] = 1
        self.counts[d] -= 1
        self.slots.append(slot)
        self.origin.append(d)

    def excess(self, d: int) -> int:
        return self.counts[d] - self.plan.quota.get(d, 0)

    def gather_removed(self, removed: set[int]) -> None:
        if not removed:
            return
        for r, col in enumerate(self.columns):
            base = r * self.parts
            for p in list(compress(range(len(col)), map(removed.__contains__, col))):
                self.take(base + p)

    def gather_crowded(self) -> None:
        """Free one replica of each partition that crowds a failure domain (if allowed to move)."""
        for p, level in violations(self.columns, self.plan).items():
            if not self.eligible(p):
                continue
            reps = [r for r, c in enumerate(self.columns) if p < len(c) and c[p] != NONE]
            devs = {r: self.columns[r][p] for r in reps}
            if level >= len(LEVELS):
                per: Counter[int] = Counter(devs.values())
                crowded = [r for r in reps if per[devs[r]] > 1]
            else:
                table, caps = self.plan.dom[level], self.plan.cap[level]
                per = Counter(table[d] for d in devs.values())
                crowded = [r for r in reps if per[table[devs[r]]] > caps[table[devs[r]]]]
            if crowded:
                pick = max(crowded, key=lambda r: (self.excess(devs[r]), r))
                self.take(pick * self.parts + p)

    def gather_excess(self, rng: random.Random) -> None:
        """Free each over-quota device's excess, visiting partitions in a seeded random cycle.

        An odd stride modulo a power of two visits every partition once; the scan stops as
        soon as no device is over quota, so its cost follows the amount that must move.
        This is the hot loop of a big rebalance, so the common case is written inline.
        """
        need = [0] * (NONE + 1)
        remaining = 0
        for d in self.counts:
            need[d] = max(0, self.excess(d))
            remaining += need[d]
        ledger = self.ledger or _ZoneLedger(self)
        shed, local, zone_of = ledger.shed, ledger.local, ledger.zone_of
        parts, cols, ncols = self.parts, self.columns, len(self.columns)
        lens = [len(c) for c in cols]
        rotations = [[(k + i) % ncols for i in range(ncols)] for k in range(ncols)]
        mask, flag, last = parts - 1, self.flag, self.last_moved
        counts, slots, origin, aims = self.counts, self.slots, self.origin, self.aim
        stride = rng.randrange(parts) | 1
        p = rng.randrange(parts)
        oldest = self.stamp - self.min_part_minutes
        for k in range(parts):
            if remaining <= 0:
                break
            p = (p + stride) & mask
            if flag[p] or oldest < last[p] != 0:
                continue
            for r in rotations[k % ncols]:
                if p >= lens[r]:
                    continue
                d = cols[r][p]
                if need[d] <= 0:
                    continue
                z = zone_of[d]
                if shed[z] <= 0 and local[z] > 0:
                    local[z] -= 1  # stays in its zone: the common case, booked inline
                    aim = z
                else:
                    aim = ledger.reserve(d, p, r)
                    if aim < 0:
                        continue
                need[d] -= 1
                remaining -= 1
                cols[r][p] = NONE
                flag[p] = 1
                counts[d] -= 1
                slots.append(r * parts + p)
                origin.append(d)
                aims.append(aim)
                break

    def _tables(self) -> None:
        """Per device, its domains as global ids (one id space over all tiers), caps, penalties."""
        self.path: list[tuple[int, ...]] = [()] * (NONE + 1)
        self.capg: list[int] = []
        self.pen: list[int] = []
        offsets = []
        for level in range(len(LEVELS)):
            offsets.append(len(self.capg))
            self.capg.extend(self.plan.cap[level])
            self.pen.extend([_LEVEL_PENALTY[level]] * len(self.plan.cap[level]))
        dom = self.plan.dom
        for d in range(len(dom[0])):
            if dom[0][d] >= 0:
                self.path[d] = tuple(offsets[lv] + dom[lv][d] for lv in range(len(LEVELS)))

    def _used(self, others: list[int]) -> dict[int, int]:
        used: dict[int, int] = {}
        for o in others:
            for g in self.path[o]:
                used[g] = used.get(g, 0) + 1
        return used

    def _score(self, c: int, used: dict[int, int]) -> int:
        """0 if device c can take one more replica of a partition whose domains are `used`."""
        score = 0
        for g in self.path[c]:
            if used.get(g, 0) >= self.capg[g]:
                score += self.pen[g]
        return score

    def _fallback(self, others: list[int]) -> int:
        """No device with spare quota fits: take the least-bad device not holding the partition."""
        used = self._used(others)
        best, best_score = -1, -1
        for c in self.plan.order:
            if c in others:
                continue
            score = self._score(c, used)
            if best < 0 or score < best_score:
                best, best_score = c, score
        if best < 0:
            raise RebalanceError("no device can hold another replica of a partition")
        return best

    def _others(self, p: int, skip: int = -1) -> list[int]:
        if skip < 0 and self.full:
            held = [c[p] for c in self.columns]
            while NONE in held:
                held.remove(NONE)
            return held
        return [
            c[p] for r, c in enumerate(self.columns) if r != skip and p < len(c) and c[p] != NONE
        ]

    def _pick(
        self,
        order: list[int],
        cursor: int,
        spare: list[int],
        others: list[int],
        limit: int = _SCAN_MAX,
    ) -> tuple[int, int, int]:
        """(device, score, index in order) of the first clean device with spare, else least bad."""
        used = self._used(others)
        chosen, best_score, at, n = -1, -1, cursor, len(order)
        for k in range(min(n, limit)):
            i = (cursor + k) % n
            c = order[i]
            if spare[c] <= 0 or c in others:
                continue
            score = self._score(c, used)
            if score == 0:
                return c, 0, i
            if chosen < 0 or score < best_score:
                chosen, best_score, at = c, score, i
        return chosen, best_score, at

    def _repair(
        self,
        p: int,
        others: list[int],
        order: list[int],
        spare: list[int],
        placed: dict[int, list[int]],
        final: list[int],
    ) -> int:
        """Free a clean device for p by moving another replica off it (an augmenting step).

        Device c suits p but is full. First try moving a slot placed on c in this round to a
        device with spare that suits that slot; then an older slot on c whose partition may
        move (min_part_hours). Bounded by _REPAIR_TRIES devices; returns c or -1.
        """
        used = self._used(others)
        clean = [c for c in self.plan.order if c not in others and self._score(c, used) == 0]
        for c in clean[:_REPAIR_TRIES]:
            for j in placed.get(c, [])[-2:]:
                rq, q = divmod(self.slots[j], self.parts)
                e, score, _ = self._pick(order, 0, spare, self._others(q, skip=rq), _REPAIR_SCAN)
                if e >= 0 and score == 0:
                    self._shift(rq, q, c, e, spare)
                    placed[c].remove(j)
                    placed.setdefault(e, []).append(j)
                    final[j] = e
                    return c
        for c in clean[:_REPAIR_TRIES]:
            for rq, q in self._slots_on(c, _REPAIR_SCAN):
                if not self.eligible(q):
                    continue
                e, score, _ = self._pick(order, 0, spare, self._others(q, skip=rq), _REPAIR_SCAN)
                if e >= 0 and score == 0:
                    self._shift(rq, q, c, e, spare)
                    self.flag[q] = 1
                    self.slots.append(rq * self.parts + q)
                    self.origin.append(c)
                    self.aim.append(-1)
                    final.append(e)
                    placed.setdefault(e, []).append(len(final) - 1)
                    return c
        return -1

    def _shift(self, r: int, p: int, src: int, dst: int, spare: list[int]) -> None:
        self.columns[r][p] = dst
        spare[dst] -= 1
        spare[src] += 1
        self.counts[dst] += 1
        self.counts[src] -= 1

    def _slots_on(self, dev: int, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` (replica, partition) slots held by `dev` (cached for the round)."""
        cached = self._slot_cache.get(dev)
        if cached is None:
            cached = self._slot_cache[dev] = self._find_slots(dev, limit)
        return [(r, p) for r, p in cached if self.columns[r][p] == dev]

    def _find_slots(self, dev: int, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` slots of `dev`, found with array.index (C speed)."""
        out: list[tuple[int, int]] = []
        for r, col in enumerate(self.columns):
            at = 0
            while len(out) < limit:
                try:
                    at = col.index(dev, at) + 1
                except ValueError:
                    break
                out.append((r, at - 1))
        return out

    def _quick(self, j: int, others: list[int], st: _PlaceState) -> int:
        """The common case of _choose, inline: a clean device at the aimed zone's cursor."""
        zone = self.aim[j]
        mine = st.local.get(zone)
        if not mine:
            return -1
        path, capg, spare = self.path, self.capg, st.spare
        start, n = st.local_cursor.get(zone, 0), len(mine)
        for k in range(min(n, 4)):
            c = mine[(start + k) % n]
            if spare[c] <= 0 or c in others:
                continue
            for g in path[c]:
                crowd = 0
                for o in others:
                    if g in path[o]:  # domain ids are unique across tiers
                        crowd += 1
                if crowd >= capg[g]:
                    break
            else:
                st.local_cursor[zone] = start + k + 1
                return c
        return -1

    def _choose(self, j: int, others: list[int], st: _PlaceState) -> tuple[int, int]:
        """(device, crowding score) for gathered slot j whose partition is held by `others`.

        Prefer a device with spare quota in the slot's own zone (zone totals rarely change, so
        this rarely crowds anything), then anywhere; then an augmenting repair; then leave the
        slot where it was (dispersion beats balance); only a removed device's slot may crowd.
        """
        p = self.slots[j] % self.parts
        origin = self.origin[j]
        zone = (
            self.aim[j] if self.aim[j] >= 0 else self.path[origin][1] if self.path[origin] else -1
        )
        mine = st.local.get(zone)
        if mine:
            c, score, at = self._pick(mine, st.local_cursor.get(zone, 0), st.spare, others)
            if score == 0:
                st.local_cursor[zone] = at + 1
                return c, 0
        c, score, at = self._pick(st.order, st.cursor, st.spare, others)
        if score == 0:
            st.cursor = at + 1
            return c, 0
        fixed = self._repair(p, others, st.order, st.spare, st.placed, st.final)
        if fixed >= 0:
            return fixed, 0
        used = self._used(others)
        if origin not in self.removed and origin not in others and self._score(origin, used) == 0:
            return origin, 0
        over = self._overflow(others, used)
        if over >= 0:
            return over, 0
        if c < 0:
            c = self._fallback(others)
        return c, self._score(c, used)

    def _overflow(self, others: list[int], used: dict[int, int]) -> int:
        """A device that does not crowd the partition, over quota by the least, or -1."""
        best, best_over = -1, 0
        quota = self.plan.quota
        for c in self.plan.order:
            if c in others or self._score(c, used):
                continue
            over = self.counts[c] - quota[c]
            if best < 0 or over < best_over:
                best, best_over = c, over
        return best

    def place(self) -> RoundResult:
        """Put every gathered slot on a device with spare quota, least crowding first."""
        spare = [0] * (NONE + 1)
        for d, q in self.plan.quota.items():
            spare[d] = q - self.counts[d]
        st = _PlaceState(spare, [d for d in self.plan.order if spare[d] > 0])
        for d in st.order:
            st.local.setdefault(self.path[d][1], []).append(d)
        st.final = [NONE] * len(self.slots)
        result = RoundResult(gathered=len(self.slots))
        for j in range(len(self.slots)):  # repairs append displaced slots, already placed
            r, p = divmod(self.slots[j], self.parts)
            others = self._others(p)
            chosen, score = self._quick(j, others, st), 0
            if chosen < 0:
                chosen, score = self._choose(j, others, st)
            if score:
                result.unplaceable_dispersion += 1
            self.columns[r][p] = chosen
            self.counts[chosen] += 1
            spare[chosen] -= 1
            st.placed.setdefault(chosen, []).append(j)
            st.final[j] = chosen
            if spare[chosen] == 0:
                zone = self.path[chosen][1]
                mine = st.local.get(zone, [])
                st.local_spent[zone] = st.local_spent.get(zone, 0) + 1
                if st.local_spent[zone] * 2 > len(mine):
                    st.local[zone] = [d for d in mine if spare[d] > 0]
                    st.local_cursor[zone], st.local_spent[zone] = 0, 0
                st.exhausted += 1
                if st.exhausted * 2 > len(st.order):
                    st.order = [d for d in st.order if spare[d] > 0] or st.order
                    st.cursor, st.exhausted = 0, 0
        moved_parts = set()
        for j, slot in enumerate(self.slots):
            if st.final[j] != self.origin[j]:
                p = slot % self.parts
                result.moved += 1
                self.last_moved[p] = self.stamp
                moved_parts.add(p)
        result.moved_partitions = sorted(moved_parts)
        return result


class _ZoneLedger:
    """Zone-level supply and demand while gathering excess.

    Of the excess slots taken from a zone, as many as its devices have room for can stay in
    the zone; the rest (`shed`) must move to a zone with room that the partition does not use.
    Each take is booked as one or the other, and placement is told which zone to aim for, so
    gathering never frees a slot that could only be placed by crowding a zone. Zones are the
    global domain ids of _Round.path; tables are lists indexed by them.
    """

    def __init__(self, rnd: _Round) -> None:
        self.rnd = rnd
        size = len(rnd.capg) + 1
        self.zone_of = [p[1] if p else size - 1 for p in rnd.path]
        self.shed = [0] * size
        self.local = [0] * size
        for d, q in rnd.plan.quota.items():
            z = self.zone_of[d]
            diff = rnd.counts.get(d, 0) - q
            self.shed[z] += diff
            self.local[z] += max(0, -diff)
        for d, n in rnd.counts.items():
            if d not in rnd.plan.quota:
                self.shed[self.zone_of[d]] += n
        self.shed[size - 1] = 0  # the bucket for unknown devices never takes anything
        self.local[size - 1] = 0
        self.room = {z: -v for z, v in enumerate(self.shed) if v < 0}

    def _used(self, p: int, r: int) -> set[int]:
        return {self.zone_of[o] for o in self.rnd._others(p, skip=r)}

    def aim_gathered(self) -> None:
        """Book a zone for every slot gathered so far (removed devices, crowded partitions)."""
        rnd = self.rnd
        for j, slot in enumerate(rnd.slots):
            r, p = divmod(slot, rnd.parts)
            used = self._used(p, r)
            own = self.zone_of[rnd.origin[j]]
            # Other zones first: the slot's own zone suits every slot from it, so its room
            # is the best fallback for the slots that fit nowhere else.
            z = self._roomiest(used | {own})
            if z < 0 and self.room.get(own, 0) > 0 and own not in used:
                z = own
            if z >= 0:
                self.room[z] -= 1
                rnd.aim[j] = z

    def _roomiest(self, used: set[int]) -> int:
        """The zone with the most room that the partition does not use, or -1."""
        best, most = -1, 0
        for z, n in self.room.items():
            if n > most and z not in used:
                best, most = z, n
        return best

    def reserve(self, dev: int, p: int, r: int) -> int:
        """The zone a slot taken from `dev` should go to, or -1 to leave it where it is."""
        zone = self.zone_of[dev]
        if self.shed[zone] > 0:
            z = self._roomiest(self._used(p, r))
            if z >= 0:
                self.room[z] -= 1
                self.shed[zone] -= 1
                return z
        if self.local[zone] > 0:
            self.local[zone] -= 1
            return zone
        return -1


@dataclass
class _PlaceState:
    spare: list[int]
    order: list[int]
    cursor: int = 0
    exhausted: int = 0
    local: dict[int, list[int]] = field(default_factory=dict)
    local_cursor: dict[int, int] = field(default_factory=dict)
    local_spent: dict[int, int] = field(default_factory=dict)
    placed: dict[int, list[int]] = field(default_factory=dict)
    final: list[int] = field(default_factory=list)


def rebalance_round(
    columns: list[array[int]],
    plan: Plan,
    last_moved: array[int],
    removed: set[int],
    now_min: int,
    min_part_minutes: int,
    rng: random.Random,
    progress: Progress,
    counts: Counter[int] | None = None,
) -> RoundResult:
    """Gather what must or should move, then place it; mutates `columns` and `last_moved`.

    `counts` (slots per device, as slot_counts gives) is updated in place when given.
    """
    if counts is None:
        counts = slot_counts(columns)
    rnd = _Round(columns, plan, last_moved, now_min, min_part_minutes, removed, counts)
    rnd.gather_removed(removed)
    rnd.gather_crowded()
    rnd.ledger = _ZoneLedger(rnd)
    rnd.ledger.aim_gathered()
    progress(f"gathered {len(rnd.slots)} slots from removed devices and crowded partitions")
    rnd.gather_excess(rng)
    progress(f"gathered {len(rnd.slots)} slots in all; placing")
    return rnd.place()
