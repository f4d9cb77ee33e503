"""The runtime ring: what proxies and storage servers use to find where a name lives.

It loads a ring file (see ringfile.py), answers lookups from flat tables, and reloads itself
when the file on disk changes (checked at most every `reload_interval_s` seconds, on the
injected clock). A reload that finds a bad file keeps serving the old ring and logs why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from common.clock import Clock, SystemClock
from common.log import get_logger
from ring.device import Device
from ring.errors import RingError, RingFileError
from ring.hashing import hash_path, partition_of_hash
from ring.ringfile import RingData, read_ring

__all__ = ["Ring"]

log = get_logger(__name__)
_GOLDEN = 0x9E3779B97F4A7C15  # odd multiplier: the handoff walk strides by a Weyl sequence


class Ring:
    """Partition and device lookups over a ring file, reloaded when the file changes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        hash_path_prefix: str,
        hash_path_suffix: str,
        *,
        reload_interval_s: float = 15.0,
        clock: Clock | None = None,
    ) -> None:
        if not hash_path_prefix and not hash_path_suffix:
            raise RingError("hash_path_prefix or hash_path_suffix must be set")
        self.path = Path(path)
        self.prefix = hash_path_prefix
        self.suffix = hash_path_suffix
        self.reload_interval_s = reload_interval_s
        self.clock: Clock = clock or SystemClock()
        self._stamp = self._file_stamp()
        self._load(read_ring(self.path))
        self._next_check = self.clock.monotonic() + reload_interval_s

    # ---- loading -----------------------------------------------------------------------
    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise RingFileError(
                f"cannot stat ring file {str(self.path)!r}: {exc.strerror}"
            ) from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, data: RingData) -> None:
        self._data = data
        by_id: list[Device | None] = [None] * (max((d.id for d in data.devices), default=-1) + 1)
        for d in data.devices:
            by_id[d.id] = d
        self._by_id = by_id
        self._columns = data.columns
        self._part_shift = 32 - data.part_power
        # Domains the handoff walk can reach: those of devices that hold partitions.
        held: set[int] = set()
        for col in data.columns:
            held.update(col)
        holders = [d for d in data.devices if d.id in held]
        self._held_count = len(holders)
        self._regions = {d.region for d in holders}
        self._zones = {(d.region, d.zone) for d in holders}
        self._servers = {d.server for d in holders}

    def _maybe_reload(self) -> None:
        now = self.clock.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.reload_interval_s
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            data = read_ring(self.path)
        except RingError as exc:
            log.warning(
                "ring reload failed; keeping the loaded ring",
                extra={"fields": {"path": str(self.path), "error": str(exc)}},
            )
            return
        self._stamp = stamp
        self._load(data)
        log.info(
            "ring reloaded", extra={"fields": {"path": str(self.path), "version": data.version}}
        )

    # ---- shape -------------------------------------------------------------------------
    @property
    def part_power(self) -> int:
        self._maybe_reload()
        return self._data.part_power

    @property
    def partition_count(self) -> int:
        self._maybe_reload()
        return 1 << self._data.part_power

    @property
    def replica_count(self) -> float:
        self._maybe_reload()
        return self._data.replicas

    @property
    def version(self) -> int:
        self._maybe_reload()
        return self._data.version

    @property
    def devs(self) -> list[Device | None]:
        """Devices indexed by id (None where an id is unused)."""
        self._maybe_reload()
        return list(self._by_id)

    # ---- lookups -----------------------------------------------------------------------
    def get_part(self, account: str, container: str | None = None, obj: str | None = None) -> int:
        self._maybe_reload()
        digest = hash_path(self.prefix, self.suffix, account, container, obj)
        return partition_of_hash(digest, self._data.part_power)

    def get_part_nodes(self, part: int) -> list[Device]:
        """The primary devices of a partition, in replica order."""
        self._maybe_reload()
        if not 0 <= part < (1 << self._data.part_power):
            raise RingError(f"partition {part} out of range")
        out = []
        for col in self._columns:
            if part < len(col):
                dev = self._by_id[col[part]]
                assert dev is not None
                out.append(dev)
        return out

    def get_nodes(
        self, account: str, container: str | None = None, obj: str | None = None
    ) -> tuple[int, list[Device]]:
        part = self.get_part(account, container, obj)
        return part, self.get_part_nodes(part)

    def get_more_nodes(self, part: int) -> Iterator[Device]:
        """Handoff devices for a partition, never a primary, each at most once.

        Order: first devices in regions no primary uses, then unused zones, then unused
        servers, then any other device. Candidates come from walking other partitions'
        assignments in a fixed stride from `part`, so the order is deterministic and
        weight-proportional, and different partitions hand off to different devices.
        """
        primaries = self.get_part_nodes(part)
        return self._handoffs(part, primaries)

    def _walk(self, part: int) -> Iterator[int]:
        parts = 1 << self._data.part_power
        stride = (_GOLDEN >> (64 - self._data.part_power)) | 1 if self._data.part_power else 1
        q = part
        for _ in range(parts):
            q = (q + stride) % parts
            for col in self._columns:
                if q < len(col):
                    yield col[q]

    def _handoffs(self, part: int, primaries: list[Device]) -> Iterator[Device]:
        used_dev = {d.id for d in primaries}
        used: list[set[object]] = [
            {d.region for d in primaries},
            {(d.region, d.zone) for d in primaries},
            {d.server for d in primaries},
        ]
        totals = [len(self._regions), len(self._zones), len(self._servers)]
        keys: tuple[Callable[[Device], object], ...] = (
            lambda d: d.region,
            lambda d: (d.region, d.zone),
            lambda d: d.server,
        )
        for tier in range(3):
            if len(used[tier]) >= totals[tier]:
                continue
            for dev_id in self._walk(part):
                dev = self._by_id[dev_id]
                assert dev is not None
                if dev_id in used_dev or keys[tier](dev) in used[tier]:
                    continue
                used_dev.add(dev_id)
                for t in range(3):
                    used[t].add(keys[t](dev))
                yield dev
                if len(used[tier]) >= totals[tier]:
                    break
        if len(used_dev) < self._held_count:
            for dev_id in self._walk(part):
                if dev_id not in used_dev:
                    used_dev.add(dev_id)
                    dev = self._by_id[dev_id]
                    assert dev is not None
                    yield dev
                    if len(used_dev) >= self._held_count:
                        break
        for dev in sorted(self._data.devices, key=lambda d: d.id):
            if dev.id not in used_dev:
                used_dev.add(dev.id)
                yield dev
