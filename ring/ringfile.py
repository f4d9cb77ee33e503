"""The ring file: what servers and proxies load. Version 1 layout (see docs/ring.md)::

    0   4  magic  b"CRNG"
    4   2  format version, big-endian u16 (1)
    6   2  flags, u16: bit 0 = body is zlib-compressed
    8   4  header length H, u32
    12  8  body length B (as stored), u64
    20  H  header: canonical JSON (sorted keys, no spaces, UTF-8)
    20+H B body: the replica columns, each `replica_lengths[r]` little-endian u16 device ids
    end 8  xxh3-64 (big-endian) of every byte before it

The same ring data always gives the same bytes: no timestamps, canonical JSON, fixed zlib level.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass
from typing import Any

import xxhash

from common.fsutil import atomic_write_bytes
from ring.device import Device
from ring.errors import InvalidDeviceError, RingFileError

__all__ = [
    "RING_FORMAT_VERSION",
    "RingData",
    "decode_ring",
    "encode_ring",
    "read_ring",
    "write_ring",
]

MAGIC = b"CRNG"
RING_FORMAT_VERSION = 1
FLAG_ZLIB = 1
_PREFIX = struct.Struct(">4sHHIQ")
_CHECKSUM_BYTES = 8
_ZLIB_LEVEL = 6
RING_FILE_BYTES_MAX = 1 << 30
HEADER_BYTES_MAX = 64 << 20


@dataclass(frozen=True)
class RingData:
    """Everything in a ring file: shape, devices and the replica -> partition -> device tables."""

    part_power: int
    replicas: float
    devices: list[Device]
    columns: list[array[int]]
    version: int = 0

    @property
    def replica_lengths(self) -> list[int]:
        return [len(c) for c in self.columns]


def _le_bytes(col: array[int]) -> bytes:
    if sys.byteorder == "little":
        return col.tobytes()
    swapped = array("H", col)
    swapped.byteswap()
    return swapped.tobytes()


def _from_le(data: bytes) -> array[int]:
    col = array("H")
    col.frombytes(data)
    if sys.byteorder != "little":
        col.byteswap()
    return col


def _header(data: RingData) -> dict[str, Any]:
    return {
        "part_power": data.part_power,
        "replicas": data.replicas,
        "replica_lengths": data.replica_lengths,
        "dev_id_bytes": 2,
        "version": data.version,
        "devices": [d.to_dict() for d in sorted(data.devices, key=lambda d: d.id)],
    }


def encode_ring(data: RingData, compress: bool = True) -> bytes:
    header = json.dumps(_header(data), sort_keys=True, separators=(",", ":")).encode()
    body = b"".join(_le_bytes(c) for c in data.columns)
    if compress:
        body = zlib.compress(body, _ZLIB_LEVEL)
    flags = FLAG_ZLIB if compress else 0
    out = _PREFIX.pack(MAGIC, RING_FORMAT_VERSION, flags, len(header), len(body)) + header + body
    digest: bytes = xxhash.xxh3_64_digest(out)
    return out + digest


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RingFileError(f"ring header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise RingFileError("ring header is not a JSON object")
    for key in ("part_power", "replicas", "replica_lengths", "dev_id_bytes", "devices"):
        if key not in header:
            raise RingFileError(f"ring header lacks {key!r}")
    if header["dev_id_bytes"] != 2:
        raise RingFileError(f"unsupported device id width {header['dev_id_bytes']!r}")
    pp = header["part_power"]
    if not isinstance(pp, int) or not 0 <= pp <= 32:
        raise RingFileError(f"bad part power {pp!r}")
    lengths = header["replica_lengths"]
    if not isinstance(lengths, list) or not all(
        isinstance(n, int) and 0 < n <= (1 << pp) for n in lengths
    ):
        raise RingFileError("bad replica lengths")
    replicas = header["replicas"]
    if not isinstance(replicas, int | float) or math.ceil(replicas) != len(lengths):
        raise RingFileError("replica count does not match the tables")
    return header


def decode_ring(blob: bytes) -> RingData:
    """Parse and verify a ring file's bytes; RingFileError on anything unexpected."""
    if len(blob) < _PREFIX.size + _CHECKSUM_BYTES:
        raise RingFileError("ring file is truncated")
    magic, version, flags, hlen, blen = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise RingFileError("not a cairn ring file (bad magic)")
    if version != RING_FORMAT_VERSION:
        raise RingFileError(f"unsupported ring format version {version}")
    if flags & ~FLAG_ZLIB:
        raise RingFileError(f"unknown ring flags {flags:#x}")
    if hlen > HEADER_BYTES_MAX or _PREFIX.size + hlen + blen + _CHECKSUM_BYTES != len(blob):
        raise RingFileError("ring file length does not match its header (truncated?)")
    if xxhash.xxh3_64_digest(blob[:-_CHECKSUM_BYTES]) != blob[-_CHECKSUM_BYTES:]:
        raise RingFileError("ring file checksum mismatch (corrupt)")
    header = _parse_header(blob[_PREFIX.size : _PREFIX.size + hlen])
    body = blob[_PREFIX.size + hlen : _PREFIX.size + hlen + blen]
    want = 2 * sum(header["replica_lengths"])
    if flags & FLAG_ZLIB:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(body, want + 1)
        except zlib.error as exc:
            raise RingFileError(f"ring body does not decompress: {exc}") from None
    if len(body) != want:
        raise RingFileError("ring body has the wrong size")
    columns, offset = [], 0
    for n in header["replica_lengths"]:
        columns.append(_from_le(body[offset : offset + 2 * n]))
        offset += 2 * n
    try:
        devices = [Device.from_dict(d) for d in header["devices"]]
    except (TypeError, ValueError, InvalidDeviceError) as exc:
        raise RingFileError(f"bad device in ring header: {exc}") from None
    ids = {d.id for d in devices}
    for col in columns:
        if not set(col) <= ids:
            raise RingFileError("ring tables name a device that is not in the header")
    return RingData(
        header["part_power"], float(header["replicas"]), devices, columns, header.get("version", 0)
    )


def write_ring(path: str | os.PathLike[str], data: RingData, compress: bool = True) -> None:
    """Write the ring file atomically (temp, fsync, rename, fsync dir)."""
    atomic_write_bytes(path, encode_ring(data, compress))


def read_ring(path: str | os.PathLike[str]) -> RingData:
    try:
        with open(path, "rb") as f:
            blob = f.read(RING_FILE_BYTES_MAX + 1)
    except OSError as exc:
        raise RingFileError(f"cannot read ring file {os.fspath(path)!r}: {exc.strerror}") from None
    if len(blob) > RING_FILE_BYTES_MAX:
        raise RingFileError(f"ring file is larger than {RING_FILE_BYTES_MAX} bytes")
    return decode_ring(blob)
