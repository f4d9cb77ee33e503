"""The builder file: the operator's saved RingBuilder. Version 1 layout (see docs/ring.md)::

    0   4  magic b"CRNB"
    4   2  format version, big-endian u16 (1)
    6   n  msgpack map (keys below), arrays as little-endian bytes
    end 8  xxh3-64 (big-endian) of every byte before it

Written atomically (temp, fsync, rename, fsync dir), so a crash leaves the old or the new file.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from typing import Any

import msgpack
import xxhash

from common.clock import Clock
from common.fsutil import atomic_write_bytes
from ring.builder import RingBuilder
from ring.device import Device
from ring.errors import RingError, RingFileError

__all__ = [
    "BUILDER_FORMAT_VERSION",
    "decode_builder",
    "encode_builder",
    "load_builder",
    "save_builder",
]

MAGIC = b"CRNB"
BUILDER_FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sH")
_CHECKSUM_BYTES = 8
BUILDER_FILE_BYTES_MAX = 1 << 30


def _le(col: array[int]) -> bytes:
    if sys.byteorder == "little":
        return col.tobytes()
    copy = array(col.typecode, col)
    copy.byteswap()
    return copy.tobytes()


def _from_le(typecode: str, data: bytes) -> array[int]:
    col = array(typecode)
    if len(data) % col.itemsize:
        raise RingFileError("builder table has a partial entry")
    col.frombytes(data)
    if sys.byteorder != "little":
        col.byteswap()
    return col


def encode_builder(b: RingBuilder) -> bytes:
    body = {
        "part_power": b.part_power,
        "replicas": b.replicas,
        "min_part_hours": b.min_part_hours,
        "overload": b.overload,
        "version": b.version,
        "next_dev_id": b.next_dev_id,
        "devices": [d.to_dict() for d in b.devs],
        "removed": [d.to_dict() for d in b.pending_removal],
        "columns": None if b.columns is None else [_le(c) for c in b.columns],
        "last_moved_minutes": _le(b.last_moved),
    }
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    out = _PREFIX.pack(MAGIC, BUILDER_FORMAT_VERSION) + packed
    digest: bytes = xxhash.xxh3_64_digest(out)
    return out + digest


def _check_blob(blob: bytes) -> dict[str, Any]:
    if len(blob) < _PREFIX.size + _CHECKSUM_BYTES:
        raise RingFileError("builder file is truncated")
    magic, version = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise RingFileError("not a cairn builder file (bad magic)")
    if version != BUILDER_FORMAT_VERSION:
        raise RingFileError(f"unsupported builder format version {version}")
    if xxhash.xxh3_64_digest(blob[:-_CHECKSUM_BYTES]) != blob[-_CHECKSUM_BYTES:]:
        raise RingFileError("builder file checksum mismatch (corrupt or truncated)")
    try:
        body = msgpack.unpackb(blob[_PREFIX.size : -_CHECKSUM_BYTES], raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise RingFileError(f"builder body does not decode: {exc}") from None
    if not isinstance(body, dict):
        raise RingFileError("builder body is not a map")
    return body


def decode_builder(blob: bytes, clock: Clock | None = None) -> RingBuilder:
    body = _check_blob(blob)
    try:
        b = RingBuilder(body["part_power"], body["replicas"], body["min_part_hours"], clock=clock)
        columns = body["columns"]
        b.set_overload(body.get("overload"))
        b._restore(
            version=int(body["version"]),
            next_dev_id=int(body["next_dev_id"]),
            devs=[Device.from_dict(d) for d in body["devices"]],
            removed=[Device.from_dict(d) for d in body["removed"]],
            columns=None if columns is None else [_from_le("H", c) for c in columns],
            last_moved=_from_le("I", body["last_moved_minutes"]),
        )
    except KeyError as exc:
        raise RingFileError(f"builder file lacks {exc}") from None
    except (TypeError, ValueError) as exc:
        raise RingFileError(f"builder file has a bad value: {exc}") from None
    except RingError as exc:
        raise RingFileError(f"builder file is inconsistent: {exc}") from None
    return b


def save_builder(path: str | os.PathLike[str], b: RingBuilder) -> None:
    atomic_write_bytes(path, encode_builder(b))


def load_builder(path: str | os.PathLike[str], clock: Clock | None = None) -> RingBuilder:
    try:
        with open(path, "rb") as f:
            blob = f.read(BUILDER_FILE_BYTES_MAX + 1)
    except OSError as exc:
        raise RingFileError(
            f"cannot read builder file {os.fspath(path)!r}: {exc.strerror}"
        ) from None
    if len(blob) > BUILDER_FILE_BYTES_MAX:
        raise RingFileError(f"builder file is larger than {BUILDER_FILE_BYTES_MAX} bytes")
    return decode_builder(blob, clock)
