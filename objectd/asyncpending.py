"""Async pendings: container updates that failed, saved on the object's device for the updater.

A record is a msgpack map (see docs/object-format.md), written atomically to
``<device>/async_pending/<suffix>/<hash>-<timestamp>``. It names the operation, the object,
the headers to send and the container replicas still to be told; each replica that accepts
the update is removed from the record, and the file is deleted when none is left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgpack

from common.fsutil import atomic_write_bytes, makedirs_durable
from common.timestamps import Timestamp, TimestampError

__all__ = [
    "PENDING_BYTES_MAX",
    "PENDING_VERSION",
    "AsyncPending",
    "ContainerTarget",
    "PendingFormatError",
    "decode_pending",
    "encode_pending",
    "list_pendings",
    "pending_path",
    "write_pending",
]

PENDING_VERSION = 1
PENDING_BYTES_MAX = 64 * 1024


class PendingFormatError(ValueError):
    """An async pending file that cannot be decoded."""


@dataclass(frozen=True)
class ContainerTarget:
    host: str  # "ip:port"
    device: str
    partition: int


@dataclass(frozen=True)
class AsyncPending:
    op: str  # "PUT" or "DELETE"
    account: str
    container: str
    obj: str
    timestamp: Timestamp
    headers: dict[str, str]
    targets: tuple[ContainerTarget, ...]
    # Object hash: names the file; replicas and the updater group by it.
    hash_hex: str = ""

    def __post_init__(self) -> None:
        if self.op not in ("PUT", "DELETE"):
            raise PendingFormatError(f"bad op {self.op!r}")
        if len(self.hash_hex) != 32:
            raise PendingFormatError("hash_hex must be 32 hex digits")


def encode_pending(p: AsyncPending) -> bytes:
    rec = {
        "v": PENDING_VERSION,
        "op": p.op,
        "account": p.account,
        "container": p.container,
        "obj": p.obj,
        "timestamp": p.timestamp.internal,
        "hash": p.hash_hex,
        "headers": dict(sorted(p.headers.items())),
        "targets": [[t.host, t.device, t.partition] for t in p.targets],
    }
    data: bytes = msgpack.packb(rec, use_bin_type=True)
    assert len(data) <= PENDING_BYTES_MAX
    return data


def decode_pending(data: bytes) -> AsyncPending:
    if len(data) > PENDING_BYTES_MAX:
        raise PendingFormatError("async pending too large")
    try:
        rec = msgpack.unpackb(data, raw=False)
        if not isinstance(rec, dict) or rec.get("v") != PENDING_VERSION:
            raise PendingFormatError("not a version 1 async pending")
        targets = tuple(ContainerTarget(str(h), str(d), int(p)) for h, d, p in rec["targets"])
        headers = {str(k): str(v) for k, v in rec["headers"].items()}
        return AsyncPending(
            op=str(rec["op"]),
            account=str(rec["account"]),
            container=str(rec["container"]),
            obj=str(rec["obj"]),
            timestamp=Timestamp.parse(str(rec["timestamp"])),
            headers=headers,
            targets=targets,
            hash_hex=str(rec["hash"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException) as e:
        if isinstance(e, PendingFormatError):
            raise
        raise PendingFormatError(f"bad async pending: {e}") from None


def pending_path(device_root: Path, hash_hex: str, ts: Timestamp) -> Path:
    return device_root / "async_pending" / hash_hex[-3:] / f"{hash_hex}-{ts.internal}"


def write_pending(device_root: Path, p: AsyncPending) -> Path:
    """Save `p` atomically and durably (blocking; run in the device pool)."""
    path = pending_path(device_root, p.hash_hex, p.timestamp)
    makedirs_durable(path.parent)
    atomic_write_bytes(path, encode_pending(p))
    return path


def _is_pending_name(name: str) -> bool:
    h, sep, ts = name.partition("-")
    if not sep or len(h) != 32 or name.startswith("."):
        return False
    try:
        Timestamp.parse(ts)
    except TimestampError:
        return False
    return True


def list_pendings(device_root: Path) -> list[Path]:
    """Every pending file on a device, oldest suffix dir first (blocking)."""
    base = device_root / "async_pending"
    out: list[Path] = []
    try:
        suffixes = sorted(os.listdir(base))
    except FileNotFoundError:
        return out
    for sfx in suffixes:
        try:
            names = sorted(os.listdir(base / sfx))
        except (FileNotFoundError, NotADirectoryError):
            continue
        out.extend(base / sfx / n for n in names if _is_pending_name(n))
    return out
