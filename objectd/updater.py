"""One pass of the object updater: retry every saved async pending, drop each once delivered.

`objectd.daemons` calls `run_once` every `updater_interval_s`; tests call it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from common.fsutil import fsync_dir, makedirs_durable
from common.log import get_logger
from objectd.asyncpending import (
    PENDING_BYTES_MAX,
    AsyncPending,
    PendingFormatError,
    decode_pending,
    list_pendings,
    write_pending,
)
from objectd.container_update import send_updates
from objectd.layout import valid_device_name

__all__ = ["UpdaterStats", "run_once"]

log = get_logger("cairn.object-updater")


@dataclass
class UpdaterStats:
    found: int = 0
    delivered: int = 0  # pendings fully delivered and removed
    failed: int = 0  # pendings with at least one replica still to tell
    obsolete: int = 0  # superseded by a newer pending for the same object, removed
    bad: int = 0  # undecodable files moved to quarantined/async_pending


def _newest_per_object(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(newest pending per object hash, older ones), by the timestamp in the name."""
    from common.timestamps import Timestamp

    best: dict[str, tuple[Timestamp, Path]] = {}
    older: list[Path] = []
    for p in paths:
        h, _, ts_raw = p.name.partition("-")
        ts = Timestamp.parse(ts_raw)
        cur = best.get(h)
        if cur is None or cur[0] < ts:
            if cur is not None:
                older.append(cur[1])
            best[h] = (ts, p)
        else:
            older.append(p)
    return [p for _, p in best.values()], older


def _device_names(devices_dir: Path) -> list[str]:
    try:
        return sorted(d for d in os.listdir(devices_dir) if valid_device_name(d))
    except FileNotFoundError:
        return []


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fsync_dir(path.parent)


def _read(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(PENDING_BYTES_MAX + 1)


def _quarantine(device_root: Path, path: Path) -> None:
    dest = device_root / "quarantined" / "async_pending"
    makedirs_durable(dest)
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, dest / path.name)
        fsync_dir(dest)


async def _process(
    session: aiohttp.ClientSession, device_root: Path, path: Path, timeout_s: float
) -> str:
    try:
        p = decode_pending(await asyncio.to_thread(_read, path))
    except FileNotFoundError:
        return "gone"
    except PendingFormatError as e:
        log.warning("bad async pending", extra={"fields": {"path": str(path), "error": str(e)}})
        await asyncio.to_thread(_quarantine, device_root, path)
        return "bad"
    failed = await send_updates(
        session, p.op, p.targets, p.account, p.container, p.obj, p.headers, timeout_s
    )
    if not failed:
        await asyncio.to_thread(_remove, path)
        return "delivered"
    if failed != p.targets:
        remaining = AsyncPending(
            p.op, p.account, p.container, p.obj, p.timestamp, p.headers, failed, p.hash_hex
        )
        await asyncio.to_thread(write_pending, device_root, remaining)
    return "failed"


async def run_once(
    devices_dir: Path,
    session: aiohttp.ClientSession,
    *,
    timeout_s: float = 1.0,
    concurrency: int = 8,
    devices: list[str] | None = None,
) -> UpdaterStats:
    """Retry the async pendings of every device (or just `devices`) under `devices_dir`."""
    assert concurrency >= 1
    stats = UpdaterStats()
    if devices is None:
        devices = await asyncio.to_thread(_device_names, devices_dir)
    sem = asyncio.Semaphore(concurrency)

    async def one(root: Path, path: Path) -> None:
        async with sem:
            outcome = await _process(session, root, path, timeout_s)
        if outcome == "delivered":
            stats.delivered += 1
        elif outcome == "failed":
            stats.failed += 1
        elif outcome == "bad":
            stats.bad += 1

    for device in devices:
        root = devices_dir / device
        paths = await asyncio.to_thread(list_pendings, root)
        stats.found += len(paths)
        current, older = _newest_per_object(paths)
        for p in older:
            await asyncio.to_thread(_remove, p)
        stats.obsolete += len(older)
        await asyncio.gather(*(one(root, p) for p in current))
    log.info("updater pass", extra={"fields": vars(stats)})
    return stats
