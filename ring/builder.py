"""RingBuilder: the operator's model of the cluster, turned into a ring by `rebalance`.

Semantics follow Swift's swift-ring-builder (part power, replicas, min_part_hours, devices
with region/zone/ip/port/device/weight/meta, balance and dispersion), with a faster, flat-table
rebalance (see placement.py) and explicit time and randomness: `rebalance(now=..., seed=...)`.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import compress
from operator import eq

from common.clock import Clock, SystemClock
from ring.device import DEV_ID_MAX, Device
from ring.devspec import DeviceChange, DeviceQuery, NewDevice
from ring.errors import (
    DeviceNotFoundError,
    DuplicateDeviceError,
    InvalidDeviceError,
    RebalanceError,
    RingBuilderError,
)
from ring.placement import rebalance_round
from ring.ringfile import RingData
from ring.tables import (
    NONE,
    initial_assignment,
    move_stamp,
    replica_lengths,
    slot_counts,
    violations,
)
from ring.tiers import LEVELS, Plan, make_plan

__all__ = ["MAX_BALANCE", "DispersionReport", "RebalanceResult", "RingBuilder"]

PART_POWER_MAX = 24  # 16M partitions; 2 bytes per partition-replica
REPLICAS_MAX = 16
MIN_PART_HOURS_MAX = 0xFFFF
OVERLOAD_MAX = 100.0
MAX_BALANCE = 999.99  # what a device that should hold nothing but does is reported as
_ROUNDS_MAX = 4


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class DispersionReport:
    """Partitions whose replicas share a failure domain more than the topology requires."""

    partitions: int
    crowded: int
    by_tier: dict[str, int]

    @property
    def percent(self) -> float:
        return 100.0 * self.crowded / self.partitions if self.partitions else 0.0


@dataclass(frozen=True, slots=True)
class RebalanceResult:
    moved: int
    rounds: int
    balance: float
    dispersion: float
    crowded_after_placement: int = 0
    partitions_moved: int = 0


class RingBuilder:
    """Devices, their weights, and (after `rebalance`) the partition -> device tables."""

    def __init__(
        self, part_power: int, replicas: float, min_part_hours: int, clock: Clock | None = None
    ) -> None:
        if isinstance(part_power, bool) or not isinstance(part_power, int):
            raise RingBuilderError(f"part power must be an integer, got {part_power!r}")
        if not 0 <= part_power <= PART_POWER_MAX:
            raise RingBuilderError(f"part power must be in 0..{PART_POWER_MAX}, got {part_power}")
        _check_replicas(replicas)
        _check_min_part_hours(min_part_hours)
        self.part_power = part_power
        self.replicas = float(replicas)
        self.min_part_hours = min_part_hours
        self.overload: float | None = None  # None: dispersion first (see set_overload)
        self.clock: Clock = clock or SystemClock()
        self.version = 0
        self.next_dev_id = 0
        self._devs: dict[int, Device] = {}
        self._removed: dict[int, Device] = {}
        self._columns: list[array[int]] | None = None
        self._counts: Counter[int] | None = None
        self._last_moved: array[int] = array("I", bytes(4 * self.partitions))

    # ---- shape -------------------------------------------------------------------------
    @property
    def partitions(self) -> int:
        return 1 << self.part_power

    @property
    def replica_lengths(self) -> list[int]:
        return replica_lengths(self.partitions, self.replicas)

    @property
    def replicas_max(self) -> int:
        return math.ceil(self.replicas)

    @property
    def devs(self) -> list[Device]:
        """Devices in the builder (not those removed and awaiting rebalance), by id."""
        return [self._devs[i] for i in sorted(self._devs)]

    @property
    def pending_removal(self) -> list[Device]:
        return [self._removed[i] for i in sorted(self._removed)]

    @property
    def rebalanced(self) -> bool:
        return self._columns is not None

    @property
    def columns(self) -> list[array[int]] | None:
        """The replica -> partition -> device id tables (read-only by convention)."""
        return self._columns

    @property
    def last_moved(self) -> array[int]:
        return self._last_moved

    def set_min_part_hours(self, hours: int) -> None:
        _check_min_part_hours(hours)
        self.min_part_hours = hours
        self.version += 1

    def set_overload(self, overload: float | None) -> None:
        """How far (a fraction, 0.1 = 10%) dispersion may push a device over its weight share.

        None (the default) puts dispersion first without limit; 0 lets weight always win.
        """
        if overload is not None and not (0 <= overload <= OVERLOAD_MAX):
            raise RingBuilderError(f"overload must be in 0..{OVERLOAD_MAX}, got {overload}")
        self.overload = None if overload is None else float(overload)
        self.version += 1

    def pretend_min_part_hours_passed(self) -> None:
        """Let every partition move at the next rebalance."""
        self._last_moved = array("I", bytes(4 * self.partitions))
        self.version += 1

    # ---- devices -----------------------------------------------------------------------
    def get_device(self, dev_id: int) -> Device:
        try:
            return self._devs[dev_id]
        except KeyError:
            raise DeviceNotFoundError(f"no device with id {dev_id}") from None

    def _check_unique(self, dev: Device, ignore_id: int | None = None) -> None:
        for other in self._devs.values():
            if other.id != ignore_id and (other.ip, other.port, other.device) == (
                dev.ip,
                dev.port,
                dev.device,
            ):
                raise DuplicateDeviceError(
                    f"device {dev.ip}:{dev.port}/{dev.device} already exists as id {other.id}"
                )

    def add(self, new: NewDevice, dev_id: int | None = None) -> Device:
        """Add a device; the id is the next free one unless given."""
        if dev_id is None:
            dev_id = self.next_dev_id
        if dev_id in self._devs or dev_id in self._removed:
            raise DuplicateDeviceError(f"device id {dev_id} is already in use")
        if dev_id > DEV_ID_MAX:
            raise InvalidDeviceError(f"device id {dev_id} is over the limit of {DEV_ID_MAX}")
        dev = Device(
            id=dev_id,
            region=new.region,
            zone=new.zone,
            ip=new.ip,
            port=new.port,
            replication_ip=new.replication_ip,
            replication_port=new.replication_port,
            device=new.device,
            weight=float(new.weight),
            meta=new.meta,
        )
        self._check_unique(dev)
        self._devs[dev_id] = dev
        self.next_dev_id = max(self.next_dev_id, dev_id + 1)
        self.version += 1
        return dev

    def remove(self, dev_id: int) -> Device:
        """Mark a device for removal; its partitions are reassigned at the next rebalance."""
        dev = self.get_device(dev_id)
        del self._devs[dev_id]
        if self._columns is not None:
            self._removed[dev_id] = dev
        self.version += 1
        return dev

    def set_weight(self, dev_id: int, weight: float) -> Device:
        dev = replace(self.get_device(dev_id), weight=float(weight))
        self._devs[dev_id] = dev
        self.version += 1
        return dev

    def set_info(self, dev_id: int, change: DeviceChange) -> Device:
        dev = change.apply(self.get_device(dev_id))
        self._check_unique(dev, ignore_id=dev_id)
        self._devs[dev_id] = dev
        self.version += 1
        return dev

    def search(self, query: DeviceQuery) -> list[Device]:
        return [d for d in self.devs if query.matches(d)]

    # ---- rebalance ---------------------------------------------------------------------
    def _plan(self) -> Plan:
        devs = self.devs
        if not devs:
            raise RebalanceError("the builder has no devices")
        held = self._slot_counts()
        return make_plan(
            devs,
            self.partitions,
            sum(self.replica_lengths),
            self.replicas_max,
            held,
            retired=self.pending_removal,
            overload=self.overload,
        )

    def rebalance(
        self,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
        now: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> RebalanceResult:
        """Assign partition-replicas to devices; raises RebalanceError if it cannot.

        `now` (seconds since the epoch) defaults to the builder's clock; randomness comes only
        from `rng`, else `random.Random(seed)`, else a generator seeded with the builder version.
        """
        say = progress or _quiet
        now_s = self.clock.time() if now is None else now
        now_min = int(now_s // 60)
        rng = rng or random.Random(self.version if seed is None else seed)
        plan = self._plan()
        say(f"planned quotas for {len(plan.quota)} weighted devices")
        if self._columns is None:
            self._columns = initial_assignment(plan, self.replica_lengths, rng)
            self._counts = None
            self._last_moved = array("I", [move_stamp(now_min)]) * self.partitions
            moved, rounds, crowded_left, parts_moved = sum(self.replica_lengths), 1, 0, 0
            parts_moved = self.partitions
        else:
            moved, rounds, crowded_left, parts_moved = self._rebalance_existing(
                plan, now_min, rng, say
            )
        self._removed.clear()
        self.version += 1
        say("computing balance and dispersion")
        return RebalanceResult(
            moved=moved,
            rounds=rounds,
            balance=self.balance(),
            dispersion=self.dispersion(plan).percent,
            crowded_after_placement=crowded_left,
            partitions_moved=parts_moved,
        )

    def _rebalance_existing(
        self, plan: Plan, now_min: int, rng: random.Random, say: Callable[[str], None]
    ) -> tuple[int, int, int, int]:
        assert self._columns is not None
        removed = set(self._removed)
        moved = rounds = crowded_left = 0
        parts: set[int] = set()
        for rounds in range(1, _ROUNDS_MAX + 1):
            say(f"round {rounds}")
            res = rebalance_round(
                self._columns,
                plan,
                self._last_moved,
                removed,
                now_min,
                self.min_part_hours * 60,
                rng,
                say,
                self._slot_counts(),
            )
            removed = set()
            moved += res.moved
            crowded_left += res.unplaceable_dispersion
            parts.update(res.moved_partitions)
            counts = self._slot_counts()
            balanced = all(counts.get(d, 0) == q for d, q in plan.quota.items())
            if res.moved == 0 or (balanced and crowded_left == 0):
                break
        return moved, rounds, crowded_left, len(parts)

    # ---- reports -----------------------------------------------------------------------
    def _slot_counts(self) -> Counter[int]:
        """Partition-replicas per device id; cached, and kept current by rebalance rounds."""
        if self._columns is None:
            return Counter()
        if self._counts is None:
            self._counts = slot_counts(self._columns)
        return self._counts

    def device_parts(self) -> dict[int, int]:
        """Partition-replicas held by each device (removed devices included until rebalance)."""
        counts = self._slot_counts()
        ids = list(self._devs) + list(self._removed)
        return {i: counts.get(i, 0) for i in sorted(ids)}

    def device_balance(self) -> dict[int, float]:
        """Per device: percent over (+) or under (-) its weight share of partition-replicas."""
        parts = self.device_parts()
        total_weight = sum(d.weight for d in self._devs.values())
        slots = sum(self.replica_lengths)
        out: dict[int, float] = {}
        for i, held in parts.items():
            dev = self._devs.get(i)
            want = slots * dev.weight / total_weight if dev and total_weight > 0 else 0.0
            if not self.rebalanced:
                out[i] = 0.0
            elif want == 0:
                out[i] = 0.0 if held == 0 else MAX_BALANCE
            else:
                out[i] = min(MAX_BALANCE, 100.0 * (held / want - 1.0))
        return out

    def balance(self) -> float:
        """The worst absolute percent deviation of a device from its weight share."""
        return max((abs(b) for b in self.device_balance().values()), default=0.0)

    def dispersion(self, plan: Plan | None = None) -> DispersionReport:
        if self._columns is None or not self._devs:
            return DispersionReport(self.partitions, 0, {t: 0 for t in (*LEVELS, "device")})
        try:
            plan = plan or self._plan()
        except RebalanceError:
            return DispersionReport(self.partitions, 0, {t: 0 for t in (*LEVELS, "device")})
        found = violations(self._columns, plan, topology=True)
        tiers = (*LEVELS, "device")
        by_tier = Counter(tiers[level] for level in found.values())
        return DispersionReport(self.partitions, len(found), {t: by_tier[t] for t in tiers})

    def list_parts(self, devices: Iterable[Device]) -> list[tuple[int, int]]:
        """(partition, replicas on the given devices), most matches first."""
        ids = {d.id for d in devices}
        hits: Counter[int] = Counter()
        for col in self._columns or []:
            hits.update(compress(range(len(col)), map(ids.__contains__, col)))
        return sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))

    def validate(self) -> None:
        """Raise RingBuilderError naming the first inconsistency in the tables."""
        if self._columns is None:
            raise RingBuilderError("the builder has not been rebalanced yet")
        if len(self._last_moved) != self.partitions:
            raise RingBuilderError("last-moved table has the wrong length")
        known = set(self._devs) | set(self._removed)
        for r, (col, want) in enumerate(zip(self._columns, self.replica_lengths, strict=False)):
            if len(col) != want:
                raise RingBuilderError(f"replica {r} covers {len(col)} partitions, not {want}")
            unknown = set(col) - known
            if unknown:
                raise RingBuilderError(f"replica {r} names unknown devices {sorted(unknown)[:5]}")
        if len(self._columns) != len(self.replica_lengths):
            raise RingBuilderError("the tables do not match the replica count")
        for r in range(len(self._columns)):
            for s in range(r + 1, len(self._columns)):
                same = next(compress(range(len(self._columns[s])), map(eq, *self._pair(r, s))), -1)
                if same >= 0:
                    raise RingBuilderError(f"partition {same} has two replicas on one device")

    def _pair(self, r: int, s: int) -> tuple[array[int], array[int]]:
        assert self._columns is not None
        return self._columns[r], self._columns[s]

    def ring_data(self) -> RingData:
        if self._columns is None:
            raise RingBuilderError("rebalance before writing a ring")
        if self._removed:
            raise RingBuilderError("devices were removed since the last rebalance; rebalance first")
        return RingData(
            part_power=self.part_power,
            replicas=self.replicas,
            devices=self.devs,
            columns=[array("H", c) for c in self._columns],
            version=self.version,
        )

    # ---- persistence helpers (see builder_file.py) ---------------------------------------
    def _restore(
        self,
        *,
        version: int,
        next_dev_id: int,
        devs: list[Device],
        removed: list[Device],
        columns: list[array[int]] | None,
        last_moved: array[int],
    ) -> None:
        self.version = version
        self.next_dev_id = next_dev_id
        self._devs = {d.id: d for d in devs}
        self._removed = {d.id: d for d in removed}
        self._columns = columns
        self._counts = None
        self._last_moved = last_moved
        if columns is not None:
            self.validate()
        assert NONE not in set(self._devs)


def _check_replicas(replicas: float) -> None:
    if isinstance(replicas, bool) or not isinstance(replicas, int | float):
        raise RingBuilderError(f"replicas must be a number, got {replicas!r}")
    if not 1 <= replicas <= REPLICAS_MAX:
        raise RingBuilderError(f"replicas must be in 1..{REPLICAS_MAX}, got {replicas}")


def _check_min_part_hours(hours: int) -> None:
    if isinstance(hours, bool) or not isinstance(hours, int):
        raise RingBuilderError(f"min_part_hours must be an integer, got {hours!r}")
    if not 0 <= hours <= MIN_PART_HOURS_MAX:
        raise RingBuilderError(f"min_part_hours must be in 0..{MIN_PART_HOURS_MAX}, got {hours}")
