"""The object auditor: read every object file at a bounded rate and quarantine bad ones.

A full pass verifies each current file's footer, every block digest and the body's MD5
against the ETag (`diskfile.verify_file`), plus that the metadata names this hash dir, kind
and timestamp. The fast "zero-byte-files" pass only checks footers and metadata (it finds
truncated, zero-length or corrupt-metadata files without reading bodies). A bad file's hash
dir is quarantined and its suffix invalidated, so the replicator's next pass sees the
suffix hash change and restores a good copy from a peer.

After a full pass walks a partition it rehashes every suffix of it from directory listings
(`get_hashes(full=True)`): a file lost behind the object server's back (deleted by hand,
lost by a failing disk) changes the cached suffix hash, so the next REPLICATE from a peer
sees the difference and the copy is restored. The walk has just listed the same
directories, so this costs little more than the walk itself.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from common.clock import Clock
from common.log import get_logger
from objectd.diskfile import ChecksumMismatch, load_metadata, verify_file
from objectd.fileformat import FileFormatError, ObjectMetadata
from objectd.hashes import HashStats, get_hashes
from objectd.layout import (
    DeviceLayout,
    quarantine_hash_dir,
    select_files,
    suffix_invalidated,
)
from objectd.partition import local_partitions, partition_hash_dirs
from objectd.ratelimit import RateLimiter
from objectd.replicator import local_device_names
from ring.hashing import hash_path

__all__ = ["AuditorConf", "AuditorStats", "ObjectAuditor"]

log = get_logger("cairn.object-auditor")
STEP_BYTES = 1 << 20


@dataclass(frozen=True)
class AuditorConf:
    devices_dir: Path
    hash_path_prefix: str
    hash_path_suffix: str
    bytes_per_s: int = 10 * 1024 * 1024  # per device; 0 = unlimited
    zero_byte_only: bool = False
    # The cluster's reclaim age: the full pass's rehash reclaims tombstones as REPLICATE does.
    reclaim_age_s: float = 7 * 24 * 3600.0


@dataclass
class AuditorStats:
    files_checked: int = 0
    bytes_checked: int = 0
    quarantined: int = 0
    partitions_rehashed: int = 0  # full pass: partitions whose suffix hashes were refreshed
    stale_suffixes: int = 0  # suffix hashes that were stale (a change no writer recorded)
    errors: int = 0


class _Bad(Exception):
    pass


def _check_metadata(conf: AuditorConf, hash_dir: Path, name: str, md: ObjectMetadata) -> None:
    ts_text, _, kind = name.rpartition(".")
    if md.kind != kind or md.timestamp.internal != ts_text:
        raise _Bad(f"{hash_dir / name}: metadata does not match the file name")
    parts = md.name.split("/", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise _Bad(f"{hash_dir / name}: bad object name in metadata")
    expect = hash_path(conf.hash_path_prefix, conf.hash_path_suffix, *parts[1:])
    if expect != hash_dir.name:
        raise _Bad(f"{hash_dir / name}: object name does not hash to its directory")


def _current_files(hash_dir: Path) -> list[str]:
    try:
        files = select_files(os.listdir(hash_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [n for n in (files.file_name(), files.meta_name()) if n]


class ObjectAuditor:
    def __init__(self, conf: AuditorConf, clock: Clock) -> None:
        self.conf = conf
        self.clock = clock
        self.stats = AuditorStats()

    @property
    def name(self) -> str:
        return "object-auditor-zbf" if self.conf.zero_byte_only else "object-auditor"

    async def run_once(self) -> AuditorStats:
        self.stats = AuditorStats()
        for device in await asyncio.to_thread(local_device_names, self.conf.devices_dir):
            await self._audit_device(DeviceLayout(self.conf.devices_dir, device))
        log.info(f"{self.name} pass", extra={"fields": asdict(self.stats)})
        return self.stats

    async def _audit_device(self, layout: DeviceLayout) -> None:
        limiter = RateLimiter(self.conf.bytes_per_s, self.clock)
        for part in await asyncio.to_thread(local_partitions, layout):
            await self._audit_partition(layout, part, limiter)
            if not self.conf.zero_byte_only:
                # Every partition, even one whose files are all gone: a suffix dir removed by
                # hand leaves nothing to walk but a cache that still lists it.
                await asyncio.to_thread(self._rehash, layout, part)

    async def _audit_partition(self, layout: DeviceLayout, part: int, limiter: RateLimiter) -> None:
        walk: Iterator[tuple[str, Path]] = partition_hash_dirs(layout, part)
        while True:
            item = await asyncio.to_thread(next, walk, None)
            if item is None:
                return
            suffix, hash_dir = item
            for name in await asyncio.to_thread(_current_files, hash_dir):
                try:
                    await self._audit_file(hash_dir, name, limiter)
                except (FileFormatError, ChecksumMismatch, _Bad) as e:
                    await asyncio.to_thread(self._quarantine, layout, part, suffix, hash_dir, e)
                    break
                except FileNotFoundError:
                    break  # replaced or removed while we looked: nothing to audit
                except OSError as e:
                    self.stats.errors += 1
                    log.warning(
                        "audit failed", extra={"fields": {"path": str(hash_dir), "error": str(e)}}
                    )

    def _rehash(self, layout: DeviceLayout, part: int) -> None:
        """Refresh the partition's suffix hashes from disk (blocking)."""
        st = HashStats()
        try:
            get_hashes(
                layout,
                part,
                now_s=self.clock.time(),
                reclaim_age_s=self.conf.reclaim_age_s,
                full=True,
                stats=st,
            )
        except OSError as e:
            self.stats.errors += 1
            log.warning("rehash failed", extra={"fields": {"part": part, "error": str(e)}})
            return
        self.stats.partitions_rehashed += 1
        self.stats.stale_suffixes += st.stale_suffixes
        if st.stale_suffixes:
            log.warning(
                "suffix hashes were stale (files changed outside the object server)",
                extra={
                    "fields": {
                        "device": layout.device,
                        "part": part,
                        "suffixes": st.stale_suffixes,
                    }
                },
            )

    async def _audit_file(self, hash_dir: Path, name: str, limiter: RateLimiter) -> None:
        path = hash_dir / name
        md = await asyncio.to_thread(load_metadata, path)
        _check_metadata(self.conf, hash_dir, name, md)
        self.stats.files_checked += 1
        if self.conf.zero_byte_only:
            return
        steps = verify_file(path, STEP_BYTES)
        done = 0
        while True:
            upto = await asyncio.to_thread(next, steps, None)
            if upto is None:
                return
            await limiter.consume(upto - done)
            self.stats.bytes_checked += upto - done
            done = upto

    def _quarantine(
        self, layout: DeviceLayout, part: int, suffix: str, hash_dir: Path, why: Exception
    ) -> None:
        # Invalidate before the move is visible (the hashes.invalid rule, layout.py): a
        # REPLICATE hashing meanwhile either sees the dir gone or keeps the entry for later.
        with suffix_invalidated(layout, part, suffix):
            dest = quarantine_hash_dir(layout, hash_dir)
        if dest is None:
            return
        self.stats.quarantined += 1
        log.warning(
            "quarantined",
            extra={"fields": {"path": str(hash_dir), "to": str(dest), "why": str(why)}},
        )
