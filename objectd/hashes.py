"""Suffix hashes: a per-partition digest of which files each suffix holds (for replication).

``<partition>/hashes.cache`` (msgpack, atomic, versioned; see docs/object-replication.md) maps
each suffix to the MD5 of its hash dirs' current file names. Only suffixes listed in
``hashes.invalid`` (or asked for) are recomputed; the same walk removes obsolete files,
tombstones older than ``reclaim_age_s`` and empty directories.

Locking (all flock, so it works across the server's and the daemons' processes):

* one hasher per partition at a time: an exclusive lock on the partition directory;
* writers hold a shared lock on hashes.invalid from their append until their rename is done
  (`layout.suffix_invalidated`); the hasher takes the exclusive lock only to read the list
  and, after hashing, to drop the entries it read (keeping any appended since) and remove
  empty directories. So every entry it drops belonged to a change it has already seen.

Everything here blocks; run it in the device's thread pool.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from common.fsutil import atomic_write_bytes, fsync_dir
from objectd.layout import (
    HASHES_INVALID,
    HASHES_INVALID_HEADER,
    INVALID_TEMP_PREFIX,
    DeviceLayout,
    open_locked,
    select_files,
)

__all__ = [
    "CACHE_VERSION",
    "HASHES_CACHE",
    "HashStats",
    "decode_cache",
    "encode_cache",
    "get_hashes",
    "hash_suffix",
    "is_hash_name",
    "is_suffix_name",
    "partition_lock",
]

HASHES_CACHE = "hashes.cache"
CACHE_VERSION = 1
CACHE_BYTES_MAX = 1 << 20  # 4096 suffixes x ~45 bytes fits with room to spare
INVALID_BYTES_MAX = 64 << 20  # a runaway hashes.invalid is rehashed whole, not read
_HEX = frozenset("0123456789abcdef")


def is_suffix_name(name: str) -> bool:
    return len(name) == 3 and set(name) <= _HEX


def is_hash_name(name: str) -> bool:
    return len(name) == 32 and set(name) <= _HEX


@dataclass
class HashStats:
    suffixes_hashed: int = 0
    # Suffixes a full rehash found different from the cache without an invalidation:
    # files changed behind the object server's back (deleted by hand, lost by the disk).
    stale_suffixes: int = 0
    files_removed: int = 0  # obsolete files
    tombstones_reclaimed: int = 0
    empty_dirs: list[Path] = field(default_factory=list)


def encode_cache(hashes: dict[str, str]) -> bytes:
    rec = {"v": CACHE_VERSION, "hashes": dict(sorted(hashes.items()))}
    data: bytes = msgpack.packb(rec, use_bin_type=True)
    return data


def decode_cache(data: bytes) -> dict[str, str] | None:
    """The cached map, or None if the bytes are not a valid version 1 cache."""
    if len(data) > CACHE_BYTES_MAX:
        return None
    try:
        rec = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None
    if not isinstance(rec, dict) or rec.get("v") != CACHE_VERSION:
        return None
    hashes = rec.get("hashes")
    if not isinstance(hashes, dict):
        return None
    for k, v in hashes.items():
        if not (isinstance(k, str) and is_suffix_name(k) and isinstance(v, str) and len(v) == 32):
            return None
    return dict(hashes)


@contextlib.contextmanager
def partition_lock(part_dir: Path) -> Iterator[bool]:
    """Exclusive flock on the partition dir (one hasher/remover at a time); False if gone."""
    try:
        fd = os.open(part_dir, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield part_dir.is_dir()
    finally:
        os.close(fd)


def _reclaimable(seconds: float, now_s: float, reclaim_age_s: float) -> bool:
    return seconds < now_s - reclaim_age_s


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _clean_hash_dir(hash_dir: Path, now_s: float, reclaim_age_s: float, st: HashStats) -> list[str]:
    """Remove obsolete and reclaimable files; the current file names left (sorted)."""
    try:
        names = os.listdir(hash_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    files = select_files(names)
    removed = False
    for name in files.obsolete:
        if _unlink(hash_dir / name):
            st.files_removed += 1
            removed = True
    current = [n for n in (files.file_name(), files.meta_name()) if n is not None]
    if files.base is not None and files.base[1] == "ts":
        if _reclaimable(files.base[0].seconds, now_s, reclaim_age_s):
            if _unlink(hash_dir / current[0]):
                st.tombstones_reclaimed += 1
                removed = True
            current = []
    elif (
        files.base is None
        and files.meta is not None
        and _reclaimable(files.meta.seconds, now_s, reclaim_age_s)
    ):
        # A .meta whose data never arrived within reclaim_age will not be needed.
        removed = _unlink(hash_dir / current[0]) or removed
        current = []
    if removed:
        fsync_dir(hash_dir)
    return sorted(current)


def hash_suffix(
    suffix_dir: Path, now_s: float, reclaim_age_s: float, st: HashStats | None = None
) -> str | None:
    """MD5 over each hash dir's name and current file names; None if the suffix is empty.

    Empty hash dirs and an empty suffix dir are recorded in `st.empty_dirs` for removal
    under the hashes.invalid lock (a writer may be about to use them).
    """
    st = st if st is not None else HashStats()
    st.suffixes_hashed += 1
    md5 = hashlib.md5()
    found = False
    try:
        entries = sorted(os.listdir(suffix_dir))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for hash_hex in entries:
        if not (is_hash_name(hash_hex) and hash_hex.endswith(suffix_dir.name)):
            continue
        current = _clean_hash_dir(suffix_dir / hash_hex, now_s, reclaim_age_s, st)
        if not current:
            st.empty_dirs.append(suffix_dir / hash_hex)
            continue
        found = True
        md5.update(f"{hash_hex}:{','.join(current)};".encode("ascii"))
    if not found:
        st.empty_dirs.append(suffix_dir)
        return None
    return md5.hexdigest()


def _suffix_dirs(part_dir: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(part_dir) if is_suffix_name(n))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_invalid(path: Path) -> tuple[int, set[str] | None]:
    """(bytes read, suffixes listed); suffixes None means: unreadable, rehash everything."""
    fd = open_locked(path, fcntl.LOCK_EX)
    try:
        size = os.fstat(fd).st_size
        if size > INVALID_BYTES_MAX:
            return size, None
        data = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if not data.startswith(HASHES_INVALID_HEADER):
        return len(data), None
    lines = data[len(HASHES_INVALID_HEADER) :].split(b"\n")
    return len(data), {ln.decode("ascii") for ln in lines if is_suffix_name(ln.decode("latin-1"))}


def _consume_invalid(path: Path, consumed: int, empty_dirs: list[Path]) -> None:
    """Drop the first `consumed` bytes' entries (keep later appends); remove empty dirs."""
    fd = open_locked(path, fcntl.LOCK_EX)
    try:
        st = os.fstat(fd)
        size = st.st_size
        if st.st_nlink > 1:
            _unlink_stale_names(path, st.st_ino)
        tail = os.pread(fd, max(0, size - consumed), consumed) if size > consumed else b""
        if consumed > len(HASHES_INVALID_HEADER) or size > consumed:
            # Replaced while we hold the old inode's lock; writers waiting on it retry.
            atomic_write_bytes(path, HASHES_INVALID_HEADER + tail)
        for d in empty_dirs:
            with contextlib.suppress(OSError):  # not empty any more, or already gone
                os.rmdir(d)
        if empty_dirs:
            for parent in {d.parent for d in empty_dirs}:
                with contextlib.suppress(FileNotFoundError):
                    fsync_dir(parent)
    finally:
        os.close(fd)


def _unlink_stale_names(path: Path, ino: int) -> None:
    """Remove the temp names still linked to hashes.invalid (inode `ino`), which the caller
    holds exclusively locked: a writer that made the file on the event loop keeps its temp
    name until its step has fsynced the partition's directories (objectd/splitwrite.py), and
    one whose step failed leaves it. Under this lock no such writer is still at work."""
    with os.scandir(path.parent) as it:
        for e in it:
            if e.name.startswith(INVALID_TEMP_PREFIX) and e.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if e.inode() == ino:
                        os.unlink(e.path)


def _load_cache(part_dir: Path) -> dict[str, str] | None:
    try:
        with (part_dir / HASHES_CACHE).open("rb") as f:
            return decode_cache(f.read(CACHE_BYTES_MAX + 1))
    except FileNotFoundError:
        return None


def get_hashes(
    layout: DeviceLayout,
    partition: int,
    *,
    now_s: float,
    reclaim_age_s: float,
    recalculate: Iterable[str] = (),
    full: bool = False,
    stats: HashStats | None = None,
) -> dict[str, str]:
    """The partition's suffix -> hash map, recomputing invalidated (and `recalculate`) suffixes.

    `full` rehashes every suffix from a directory listing, whatever the cache says (the
    auditor does this for each partition it walks: it catches changes no writer recorded).
    Suffixes with no current file are absent. A missing or damaged cache means a full
    rehash. The cache file is rewritten only when its content changes.
    """
    st = stats if stats is not None else HashStats()
    part_dir = layout.partition_dir(partition)
    with partition_lock(part_dir) as present:
        if not present:
            return {}
        invalid_path = part_dir / HASHES_INVALID
        consumed, listed = _read_invalid(invalid_path)
        cached = _load_cache(part_dir)
        wanted = {s for s in recalculate if is_suffix_name(s)}
        if cached is None or listed is None or full:
            todo = set(_suffix_dirs(part_dir)) | wanted | set(cached or ())
        else:
            todo = listed | wanted
        if cached is not None and not todo:
            return dict(cached)
        hashes, reclaimed = _rehash(part_dir, cached or {}, todo, now_s, reclaim_age_s, st)
        if cached is not None and full:
            known = (listed or set()) | reclaimed  # changes recorded, or made right here
            st.stale_suffixes += sum(
                1 for s in todo if s not in known and hashes.get(s) != cached.get(s)
            )
        if hashes != cached:
            atomic_write_bytes(part_dir / HASHES_CACHE, encode_cache(hashes))
        _consume_invalid(invalid_path, consumed, st.empty_dirs)
        return hashes


def _rehash(
    part_dir: Path,
    cached: dict[str, str],
    todo: set[str],
    now_s: float,
    reclaim_age_s: float,
    st: HashStats,
) -> tuple[dict[str, str], set[str]]:
    """`cached` with every suffix in `todo` recomputed from disk (absent when empty), and
    the suffixes in which this walk reclaimed a tombstone."""
    hashes = dict(cached)
    reclaimed: set[str] = set()
    for suffix in sorted(todo):
        before = st.tombstones_reclaimed
        h = hash_suffix(part_dir / suffix, now_s, reclaim_age_s, st)
        if st.tombstones_reclaimed != before:
            reclaimed.add(suffix)
        if h is None:
            hashes.pop(suffix, None)
        else:
            hashes[suffix] = h
    return hashes, reclaimed
