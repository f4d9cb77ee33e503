"""Partition-level disk helpers for replication: what a partition holds, and removing it.

All blocking; run in the device's thread pool.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from common.fsutil import fsync_dir, makedirs_durable
from objectd.hashes import is_hash_name, is_suffix_name, partition_lock
from objectd.layout import HASHES_INVALID, DeviceLayout, HashDirFiles, open_locked, select_files
from objectd.ssync_proto import OfferEntry

__all__ = [
    "hash_dir_files",
    "list_offers",
    "local_partitions",
    "partition_hash_dirs",
    "remove_partition",
]


def hash_dir_files(hash_dir: Path) -> HashDirFiles:
    try:
        return select_files(os.listdir(hash_dir))
    except (FileNotFoundError, NotADirectoryError):
        return select_files([])


def list_offers(layout: DeviceLayout, partition: int, suffixes: Iterable[str]) -> list[OfferEntry]:
    """One entry per object with a current file in the given suffixes, sorted by hash."""
    out: list[OfferEntry] = []
    part_dir = layout.partition_dir(partition)
    for suffix in sorted(s for s in suffixes if is_suffix_name(s)):
        try:
            names = sorted(os.listdir(part_dir / suffix))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for hash_hex in names:
            if not (is_hash_name(hash_hex) and hash_hex.endswith(suffix)):
                continue
            files = hash_dir_files(part_dir / suffix / hash_hex)
            if files.base is None and files.meta is None:
                continue
            base = (files.base[0], str(files.base[1])) if files.base else None
            out.append(OfferEntry(hash_hex, base, files.meta))
    return out


def local_partitions(layout: DeviceLayout) -> list[int]:
    try:
        names = os.listdir(layout.objects)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(n) for n in names if n.isdigit() and len(n) <= 10)


def _sorted_names(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def partition_hash_dirs(layout: DeviceLayout, partition: int) -> Iterator[tuple[str, Path]]:
    """(suffix, hash dir) for every hash dir of one partition, one listing at a time."""
    part_dir = layout.partition_dir(partition)
    for suffix in _sorted_names(part_dir):
        if not is_suffix_name(suffix):
            continue
        for hash_hex in _sorted_names(part_dir / suffix):
            if is_hash_name(hash_hex) and hash_hex.endswith(suffix):
                yield suffix, part_dir / suffix / hash_hex


def remove_partition(layout: DeviceLayout, partition: int, expected: dict[str, str]) -> bool:
    """Delete a handed-off partition if it still holds exactly what was pushed.

    `expected` is the suffix-hash map the push started from; the caller recomputed the
    hashes just before calling, under no lock. Here, under the hasher's lock and the
    exclusive hashes.invalid lock (no write can be mid-rename), a non-empty hashes.invalid
    means something changed since: keep the partition for the next pass.
    """
    from objectd.hashes import HASHES_CACHE, decode_cache

    part_dir = layout.partition_dir(partition)
    with partition_lock(part_dir) as present:
        if not present:
            return True
        fd = open_locked(part_dir / HASHES_INVALID, fcntl.LOCK_EX)
        try:
            pending = os.fstat(fd).st_size > len(b"cairn-hashes-invalid 1\n")
            try:
                cached = decode_cache((part_dir / HASHES_CACHE).read_bytes())
            except FileNotFoundError:
                cached = None
            if pending or cached != expected:
                return False
            # Rename first: the partition vanishes at once; writers that locked the old
            # hashes.invalid see it replaced and recreate the partition for themselves.
            makedirs_durable(layout.tmp)
            doomed = layout.tmp / f"removing-{partition}.{os.urandom(4).hex()}"
            os.rename(part_dir, doomed)
            fsync_dir(layout.objects)
        finally:
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(doomed)
    return True
