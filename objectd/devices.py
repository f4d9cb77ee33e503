"""The devices of one node: which are usable, a bounded thread pool each, and DiskFile lookup."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from common.syncring import SyncRing, raise_first_error
from objectd.diskfile import DiskFile, RealDiskFile
from objectd.faulty import FaultPlan, FaultyDiskFile
from objectd.layout import DeviceLayout, valid_device_name
from ring.hashing import hash_path

__all__ = ["DeviceBusy", "DeviceUnavailable", "Devices"]

P = ParamSpec("P")
R = TypeVar("R")


# After a step on a device times out, its work stays wholly in the pool for this long.
SICK_S = 300.0


def _nothing() -> None:
    pass


class DeviceUnavailable(Exception):
    """The device is not there (not mounted / directory missing): 507."""


class DeviceBusy(Exception):
    """Too many operations queued on the device, or one took too long: 503, try elsewhere."""


class Devices:
    """Per-device thread pools and DiskFiles. Waits for the disk (fsync, large writes) never run
    on the event loop; calls that only touch memory may (objectd/splitwrite.py)."""

    def __init__(
        self,
        devices_dir: Path,
        hash_path_prefix: str,
        hash_path_suffix: str,
        *,
        mount_check: bool,
        threads_per_device: int,
        ops_queued_max: int = 256,
        disk_timeout_s: float = 60.0,
        on_quarantine: Callable[[Path], None] | None = None,
        fault_plan: FaultPlan | None = None,
    ) -> None:
        assert threads_per_device >= 1
        self.devices_dir = devices_dir
        self._prefix = hash_path_prefix
        self._suffix = hash_path_suffix
        self.mount_check = mount_check
        self._threads = threads_per_device
        self._pools: dict[str, ThreadPoolExecutor] = {}
        # Bound on operations waiting for or running in a device's pool: a hung disk makes
        # requests fail fast (503) instead of piling up without limit.
        self._ops_queued_max = ops_queued_max
        self._disk_timeout_s = disk_timeout_s
        self._inflight: dict[str, int] = {}
        self._timed_out: dict[str, float] = {}  # device -> loop time of its last step timeout
        self._on_quarantine = on_quarantine
        # Tests only: every DiskFile made is a FaultyDiskFile following this plan.
        self.fault_plan = fault_plan
        # fsyncs run by the kernel from the event loop (common/syncring.py), set by the
        # server once its loop runs; None: every fsync goes through the pools.
        self.ring: SyncRing | None = None

    def layout(self, device: str) -> DeviceLayout:
        if not valid_device_name(device) or device == "recon":  # recon/ holds daemon stats
            raise DeviceUnavailable(f"bad device name {device!r}")
        return DeviceLayout(self.devices_dir, device)

    def check(self, device: str) -> DeviceLayout:
        """The device's layout if it can be used (blocking: call via `run`)."""
        layout = self.layout(device)
        if self.mount_check:
            if not layout.root.is_dir():
                raise DeviceUnavailable(f"device {device} is not present")
        else:
            layout.root.mkdir(parents=True, exist_ok=True)
        return layout

    def diskfile(
        self, device: str, partition: int, account: str, container: str, obj: str
    ) -> DiskFile:
        layout = self.layout(device)
        hash_hex = hash_path(self._prefix, self._suffix, account, container, obj)
        name = f"/{account}/{container}/{obj}"
        real = RealDiskFile(layout, partition, hash_hex, name, self._on_quarantine)
        if self.fault_plan is not None:
            return FaultyDiskFile(real, self.fault_plan)
        return real

    def _pool(self, device: str) -> ThreadPoolExecutor:
        pool = self._pools.get(device)
        if pool is None:
            pool = ThreadPoolExecutor(self._threads, thread_name_prefix=f"disk-{device}")
            self._pools[device] = pool
        return pool

    async def run(self, device: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking `fn` in `device`'s pool; DeviceBusy if the device is swamped or hung.

        On timeout the thread still finishes its step; only the waiting request gives up.
        """
        return await self.run_owned(device, _nothing, fn, *args, **kwargs)

    async def run_owned(
        self,
        device: str,
        release: Callable[[], None],
        fn: Callable[P, R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """`run`, for a step that uses what its caller holds (open descriptors, a temp file):
        if it raises, times out or is cancelled, `release` is called exactly once, when the
        step is over (at once when it already is; else by the thread that ends it), so
        nothing is closed under a step still running. Not called when `fn` returns."""
        self._admit(device, release)
        done = self._pool(device).submit(functools.partial(fn, *args, **kwargs))
        return await self._await_owned(device, release, asyncio.wrap_future(done), done)

    async def _await_owned(
        self,
        device: str,
        release: Callable[[], None],
        waited: Awaitable[R],
        done: Future[Any] | asyncio.Future[Any],
    ) -> R:
        """Wait for `waited` (which ends with `done`, the operation itself) under the disk
        timeout; an admitted operation's end (`_admit`). On a failure, timeout or
        cancellation `release` runs once `done` is over; a timeout marks the device sick."""
        try:
            return await asyncio.wait_for(waited, self._disk_timeout_s)
        except BaseException as e:
            done.add_done_callback(lambda _f: release())
            if isinstance(e, TimeoutError):
                raise self._timed_out_now(device) from None
            raise
        finally:
            self._inflight[device] -= 1

    def _admit(self, device: str, release: Callable[[], None]) -> None:
        """Count one more operation queued on `device`; DeviceBusy (after `release`) when
        it already has `ops_queued_max`. The caller decrements `_inflight` when it ends."""
        inflight = self._inflight.get(device, 0)
        if inflight >= self._ops_queued_max:
            release()
            raise DeviceBusy(f"device {device} has {inflight} operations queued")
        self._inflight[device] = inflight + 1

    def _timed_out_now(self, device: str) -> DeviceBusy:
        """An operation on `device` took over the disk timeout: the device counts as sick
        for SICK_S (`healthy`); the error to raise."""
        self._timed_out[device] = asyncio.get_running_loop().time()
        return DeviceBusy(f"device {device} took over {self._disk_timeout_s}s")

    async def sync_owned(
        self, device: str, release: Callable[[], None], fds: list[int], what: list[str]
    ) -> None:
        """fsync `fds` in order through `ring` (which must be set); OSError for the first
        that failed (`what` names each one). The same bounds as `run_owned`: DeviceBusy when
        the device has too many operations queued or the chain takes over the disk timeout,
        and on any failure, timeout or cancellation `release` is called exactly once, when
        the chain is over (the kernel looks up each descriptor only when it gets to it)."""
        assert self.ring is not None
        self._admit(device, release)
        try:
            done = self.ring.fsync(fds)
        except BaseException:
            self._inflight[device] -= 1
            release()
            raise
        results = await self._await_owned(device, release, asyncio.shield(done), done)
        try:
            raise_first_error(results, what)
        except OSError:
            release()
            raise

    def healthy(self, device: str) -> bool:
        """True unless a step on `device` timed out in the last SICK_S seconds (callers then
        keep every system call of their work in the pool, where a hung disk costs one
        request a 503 instead of stalling the event loop; objectd/splitwrite.py)."""
        at = self._timed_out.get(device)
        return at is None or asyncio.get_running_loop().time() - at > SICK_S

    def usable_devices(self) -> list[str]:
        """Devices present under devices_dir (blocking)."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(
                d
                for d in os.listdir(self.devices_dir)
                if valid_device_name(d) and d != "recon" and (self.devices_dir / d).is_dir()
            )
        return []

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools.clear()
