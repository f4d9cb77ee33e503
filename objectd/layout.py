"""Where things live on a device, and which files in a hash directory are current.

::

    <devices_dir>/<device>/objects/<partition>/<suffix>/<hash>/<timestamp>.data|.meta|.ts
    <devices_dir>/<device>/objects/<partition>/hashes.invalid      suffixes changed since last hash
    <devices_dir>/<device>/tmp/                                     files being written
    <devices_dir>/<device>/quarantined/objects/<hash>[-<n>]/       corrupt hash directories
    <devices_dir>/<device>/async_pending/<suffix>/<hash>-<timestamp>

All of this runs in the device's thread pool, never on the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.fsutil import fsync_dir, makedirs_durable
from common.timestamps import Timestamp, TimestampError
from objectd.fileformat import Kind

__all__ = [
    "HASHES_INVALID",
    "HASHES_INVALID_HEADER",
    "INVALID_TEMP_PREFIX",
    "DeviceLayout",
    "HashDirFiles",
    "hold_suffix_invalidated",
    "invalidate_suffix",
    "link_new_invalid",
    "open_locked",
    "open_locked_appending",
    "read_invalid_suffixes",
    "select_files",
    "suffix_invalidated",
    "valid_device_name",
    "walk_hash_dirs",
]

HASHES_INVALID = "hashes.invalid"
HASHES_INVALID_HEADER = b"cairn-hashes-invalid 1\n"
# hashes.invalid's temp names (`link_new_invalid`): the prefix, then pid, random, ".tmp".
INVALID_TEMP_PREFIX = f".{HASHES_INVALID}."
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FILE_RE = re.compile(r"^([0-9]{10}\.[0-9]{5}(?:_[0-9a-f]{16})?)\.(data|meta|ts)$")
_HASH_RE = re.compile(r"[0-9a-f]{32}")
QUARANTINE_TRIES_MAX = 1000


def valid_device_name(name: str) -> bool:
    """A device is one path component made of safe characters (never '.', '..' or '/')."""
    return bool(_DEVICE_RE.match(name))


@dataclass(frozen=True)
class _DevicePaths:
    root: Path
    objects: Path
    tmp: Path
    quarantined: Path
    async_pending: Path


@functools.lru_cache(maxsize=1024)
def _device_paths(devices_dir: Path, device: str) -> _DevicePaths:
    # Every request builds a DeviceLayout and asks it for these: built once per device.
    root = devices_dir / device
    return _DevicePaths(
        root,
        root / "objects",
        root / "tmp",
        root / "quarantined" / "objects",
        root / "async_pending",
    )


@dataclass(frozen=True)
class DeviceLayout:
    devices_dir: Path
    device: str

    def __post_init__(self) -> None:
        assert valid_device_name(self.device), self.device

    @property
    def root(self) -> Path:
        return _device_paths(self.devices_dir, self.device).root

    @property
    def objects(self) -> Path:
        return _device_paths(self.devices_dir, self.device).objects

    @property
    def tmp(self) -> Path:
        return _device_paths(self.devices_dir, self.device).tmp

    @property
    def quarantined(self) -> Path:
        return _device_paths(self.devices_dir, self.device).quarantined

    @property
    def async_pending(self) -> Path:
        return _device_paths(self.devices_dir, self.device).async_pending

    def partition_dir(self, partition: int) -> Path:
        return self.objects / str(partition)

    def hash_dir(self, partition: int, hash_hex: str) -> Path:
        assert len(hash_hex) == 32 and _HASH_RE.fullmatch(hash_hex), hash_hex
        return self.objects.joinpath(str(partition), hash_hex[-3:], hash_hex)


@dataclass(frozen=True)
class HashDirFiles:
    """The outcome of looking at a hash directory's file names."""

    # The newest .data or .ts (whichever is newer), if any.
    base: tuple[Timestamp, Kind] | None
    # The newest .meta newer than a .data base.
    meta: Timestamp | None
    # Files made obsolete by newer ones (safe to delete).
    obsolete: tuple[str, ...]

    def file_name(self) -> str | None:
        return f"{self.base[0].internal}.{self.base[1]}" if self.base else None

    def meta_name(self) -> str | None:
        return f"{self.meta.internal}.meta" if self.meta else None


def _parse_name(name: str) -> tuple[Timestamp, Kind] | None:
    m = _FILE_RE.match(name)
    if m is None:
        return None
    try:
        ts = Timestamp.parse(m.group(1))
    except TimestampError:
        return None
    if ts.internal != m.group(1):  # only canonical names are ours
        return None
    return ts, m.group(2)  # type: ignore[return-value]


def select_files(names: list[str]) -> HashDirFiles:
    """Pick the current files: the newest .data/.ts wins; a .meta counts only above a .data."""
    parsed = sorted((p for n in names if (p := _parse_name(n)) is not None), reverse=True)
    base: tuple[Timestamp, Kind] | None = None
    meta: Timestamp | None = None
    obsolete: list[str] = []
    for ts, kind in parsed:
        name = f"{ts.internal}.{kind}"
        if kind == "meta":
            if base is None and meta is None:
                meta = ts
            else:
                obsolete.append(name)
        elif base is None:
            base = (ts, kind)
        else:
            obsolete.append(name)
    # A .meta above a tombstone means nothing. With no base at all it is kept: its data may
    # still arrive by replication.
    if meta is not None and base is not None and base[1] == "ts":
        obsolete.append(f"{meta.internal}.meta")
        meta = None
    return HashDirFiles(base, meta, tuple(obsolete))


def walk_hash_dirs(layout: DeviceLayout) -> Iterator[tuple[int, str, Path]]:
    """(partition, suffix, hash dir) for every hash dir on the device (for auditor/replicator).

    Lists one directory at a time, so memory stays small on big devices. Blocking.
    """
    for part in _sorted_entries(layout.objects):
        if not part.isdigit():
            continue
        for suffix in _sorted_entries(layout.objects / part):
            if len(suffix) != 3:
                continue
            for hash_hex in _sorted_entries(layout.objects / part / suffix):
                if len(hash_hex) == 32 and hash_hex.endswith(suffix):
                    yield int(part), suffix, layout.objects / part / suffix / hash_hex


def _sorted_entries(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def invalidate_suffix(layout: DeviceLayout, partition: int, suffix: str) -> None:
    """Record that `suffix` of `partition` changed, durably, before the change is visible.

    The replicator recomputes only the suffixes listed here. A spurious entry is harmless
    (one extra hash), a missing one is not, so callers invalidate before renaming the new
    file into place (use `suffix_invalidated` to hold the entry's lock over the rename).
    """
    with suffix_invalidated(layout, partition, suffix):
        pass


@contextlib.contextmanager
def suffix_invalidated(layout: DeviceLayout, partition: int, suffix: str) -> Iterator[None]:
    """Append `suffix` to hashes.invalid (durably), then hold a shared lock on it for the
    block.

    Writers hold the shared lock from the append until their rename is done; the hasher
    takes the exclusive lock to read the list (`objectd.hashes`), so every entry it reads
    belongs to a change that is already visible. Writers never block each other.
    """
    fd = hold_suffix_invalidated(layout, partition, suffix, sync=True)
    try:
        yield
    finally:
        os.close(fd)  # closing drops the lock


def hold_suffix_invalidated(
    layout: DeviceLayout, partition: int, suffix: str, *, sync: bool
) -> int:
    """`suffix_invalidated` without the block: the descriptor holding the shared lock,
    for the caller to close once its change is durable (a group commit closes it after its
    second syncfs, objectd/groupsync.py). With `sync=False` an append is not fsynced: the
    caller makes it durable with its rename (that syncfs) before acknowledging anything."""
    assert len(suffix) == 3
    path = layout.partition_dir(partition) / HASHES_INVALID
    line = suffix.encode("ascii") + b"\n"
    fd, appended = open_locked_appending(path, fcntl.LOCK_SH, line)
    try:
        if not appended:
            os.write(fd, line)  # one small O_APPEND write: atomic
            if sync:
                os.fsync(fd)
                if os.fstat(fd).st_nlink > 1:
                    # Made on an event loop and still linked under its creator's temp name:
                    # the creator's step has not yet made the partition's entries durable
                    # (objectd/splitwrite.py, `create_partition_now`).
                    fsync_dir(path.parent.parent)
                    fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_locked(path: Path, how: int) -> int:
    """Open hashes.invalid for appending with flock `how`, creating it with its header.

    The hasher replaces the file (rename) under the exclusive lock; a writer that locked
    the replaced inode notices and retries on the new file.
    """
    return open_locked_appending(path, how, None)[0]


def open_locked_appending(path: Path, how: int, first: bytes | None) -> tuple[int, bool]:
    """`open_locked`, and whether `first` (a writer's suffix line) is already in the file: a
    new partition's file is then created holding its header and `first`, locked before it is
    linked into place and durable once linked (one fsync of the file instead of two, and no
    reopen: on a fresh cluster most chunk PUTs land in a new partition, 7.6 fsyncs per
    replica PUT measured). A writer that loses the race to create it appends as usual."""
    for _ in range(QUARANTINE_TRIES_MAX):
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:  # a new partition (or its dir went away): create, retry
            with contextlib.suppress(FileNotFoundError):
                makedirs_durable(path.parent)
                made = _create_with_header(path, first or b"", None if first is None else how)
                if made is not None:
                    return made, True
            continue
        fcntl.flock(fd, how)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, False
        os.close(fd)
    raise OSError(f"{path}: replaced too often while locking")


def link_new_invalid(
    path: str, first: bytes, how: int | None, *, sync: bool
) -> tuple[int, str] | None:
    """Create hashes.invalid at `path` holding its header and `first`: written to a temp
    file, locked with the flock mode `how` (if given) before it is linked in (the hasher,
    which locks it exclusively, sees `first` only once the caller drops the lock), fsynced
    before the link when `sync`. Returns the open descriptor and the temp name, still linked
    to the file; None, with nothing left behind, when another writer linked it first (link()
    never replaces a file, so racing writers agree on one header)."""
    tmp = f"{os.path.dirname(path)}/{INVALID_TEMP_PREFIX}{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    try:
        if how is not None:
            fcntl.flock(fd, how)  # a fresh inode: nobody else can hold it
        os.write(fd, HASHES_INVALID_HEADER + first)
        if sync:
            os.fsync(fd)
        os.link(tmp, path)
    except BaseException as e:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, FileExistsError):
            return None
        raise
    return fd, tmp


def _create_with_header(path: Path, first: bytes = b"", how: int | None = None) -> int | None:
    """Create hashes.invalid holding its header and `first`, durably (`link_new_invalid`,
    then the temp name unlinked and the directory fsynced). With a flock mode `how` the
    locked descriptor is returned; None, or without `how`, closed. Either way None when
    another process created it first."""
    made = link_new_invalid(os.fspath(path), first, how, sync=True)
    fd: int | None = None
    if made is not None:
        fd, tmp = made
        with contextlib.suppress(FileNotFoundError):  # a hasher may have removed it
            os.unlink(tmp)
        if how is None:
            os.close(fd)
            fd = None
    try:
        fsync_dir(path.parent)
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return fd


def read_invalid_suffixes(layout: DeviceLayout, partition: int) -> set[str]:
    """The suffixes listed in a partition's hashes.invalid (for the replicator and tests)."""
    path = layout.partition_dir(partition) / HASHES_INVALID
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    if not data.startswith(HASHES_INVALID_HEADER):
        raise ValueError(f"{path}: not a version 1 hashes.invalid file")
    lines = data[len(HASHES_INVALID_HEADER) :].split(b"\n")
    return {ln.decode("ascii") for ln in lines if len(ln) == 3}


def quarantine_hash_dir(layout: DeviceLayout, hash_dir: Path) -> Path | None:
    """Move a whole hash directory aside; returns where it went (None if already gone)."""
    makedirs_durable(layout.quarantined)
    name = hash_dir.name
    for n in range(QUARANTINE_TRIES_MAX):
        dest = layout.quarantined / (name if n == 0 else f"{name}-{n}")
        if dest.exists():
            continue
        try:
            os.rename(hash_dir, dest)
        except FileNotFoundError:
            return None
        except OSError:  # raced with another quarantine of the same name (ENOTEMPTY/EEXIST)
            continue
        fsync_dir(layout.quarantined)
        fsync_dir(hash_dir.parent)
        return dest
    raise OSError(f"cannot quarantine {hash_dir}: {QUARANTINE_TRIES_MAX} copies already")
