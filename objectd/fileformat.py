"""The object file format: body bytes, then a msgpack metadata record, then a 32-byte trailer.

Every file in a hash directory (``.data``, ``.meta``, ``.ts``) has this shape; ``.meta`` and
``.ts`` simply have an empty body. The trailer sits at the end because the ETag and the
per-block checksums are known only after the whole body has streamed in; with the body first
the object bytes start at offset 0, so a GET can hand ``[offset, offset+count)`` of the file
straight to ``sendfile``. See docs/object-format.md.

Trailer (big-endian, 32 bytes)::

    magic      8s   b"CAIRNOBJ"
    version    u16  1, or 2 for a .data file whose ETag is not an MD5 (its record then
                    names the ETag's algorithm, ``etag_alg``; see docs/object-format.md)
    flags      u16  0 (reserved)
    meta_len   u32  length of the msgpack record
    body_len   u64  length of the object body
    checksum   u64  xxh3-64 of (msgpack record + first 24 trailer bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import msgpack
import xxhash

from common.timestamps import Timestamp, TimestampError

__all__ = [
    "BLOCK_BYTES",
    "ETAG_ALGS",
    "FORMAT_VERSION",
    "FORMAT_VERSION_ETAG_ALG",
    "MAGIC",
    "META_BYTES_MAX",
    "TRAILER",
    "EtagAlg",
    "FileFormatError",
    "Kind",
    "ObjectMetadata",
    "block_count",
    "decode_trailer",
    "encode_footer",
    "parse_footer",
]

MAGIC = b"CAIRNOBJ"
FORMAT_VERSION = 1
# Files whose ETag is not the body's MD5 (blockd's chunk objects: the xxh3-128 its store
# client computes once, docs/object-format.md "ETag algorithms") are written as version 2,
# so that an older reader refuses them instead of checking an MD5 they do not hold.
FORMAT_VERSION_ETAG_ALG = 2
_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_ETAG_ALG)
EtagAlg = Literal["md5", "xxh3-128"]
ETAG_ALGS: tuple[EtagAlg, ...] = ("md5", "xxh3-128")
TRAILER = struct.Struct(">8sHHIQQ")
BLOCK_BYTES = 64 * 1024
DIGEST_BYTES = 8
# Metadata of a 5 GiB object carries 80 Ki block digests (640 KiB); leave room for headers.
META_BYTES_MAX = 4 * 1024 * 1024

_T = TypeVar("_T")

Kind = Literal["data", "meta", "ts"]
_KINDS: tuple[Kind, ...] = ("data", "meta", "ts")


class FileFormatError(ValueError):
    """An object file whose trailer or metadata is not valid: treat the file as corrupt."""


def block_count(length: int, block_bytes: int) -> int:
    return (length + block_bytes - 1) // block_bytes


@dataclass(frozen=True)
class ObjectMetadata:
    """What one object file records about itself."""

    kind: Kind
    name: str  # "/account/container/object"
    timestamp: Timestamp
    content_type: str = ""
    content_length: int = 0
    etag: str = ""  # hex digest of the body (the ETag): MD5 unless `etag_alg` says otherwise
    # User metadata (X-Object-Meta-*), sysmeta and the other persisted headers, title-cased.
    headers: dict[str, str] = field(default_factory=dict)
    block_bytes: int = BLOCK_BYTES
    block_xxh3: bytes = b""  # xxh3-64 digests of each block, 8 bytes big-endian each
    etag_alg: EtagAlg = "md5"  # how `etag` was computed from the body

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.kind not in _KINDS:
            raise FileFormatError(f"unknown kind {self.kind!r}")
        if not self.name.startswith("/"):
            raise FileFormatError("object name must start with '/'")
        if self.content_length < 0 or self.block_bytes <= 0:
            raise FileFormatError("negative length or block size")
        want = block_count(self.content_length, self.block_bytes) * DIGEST_BYTES
        if self.kind == "data" and len(self.block_xxh3) != want:
            raise FileFormatError(f"block digests: {len(self.block_xxh3)} bytes, want {want}")
        if self.kind != "data" and (self.content_length or self.block_xxh3):
            raise FileFormatError(f"a .{self.kind} file has no body")
        if self.etag_alg not in ETAG_ALGS:
            raise FileFormatError(f"unknown ETag algorithm {self.etag_alg!r}")
        if self.kind != "data" and self.etag_alg != "md5":
            raise FileFormatError(f"a .{self.kind} file has no ETag")

    @property
    def format_version(self) -> int:
        return FORMAT_VERSION if self.etag_alg == "md5" else FORMAT_VERSION_ETAG_ALG

    def block_digest(self, index: int) -> bytes:
        return self.block_xxh3[index * DIGEST_BYTES : (index + 1) * DIGEST_BYTES]

    def to_record(self) -> dict[str, Any]:
        # Fixed key order and sorted headers: identical metadata gives identical bytes.
        rec = {
            "kind": self.kind,
            "name": self.name,
            "timestamp": self.timestamp.internal,
            "content_type": self.content_type,
            "content_length": self.content_length,
            "etag": self.etag,
            "headers": dict(sorted(self.headers.items())),
            "block_bytes": self.block_bytes,
            "block_xxh3": self.block_xxh3,
        }
        if self.etag_alg != "md5":  # (version 1 records never carry the key)
            rec["etag_alg"] = self.etag_alg
        return rec

    @classmethod
    def from_record(cls, rec: object) -> ObjectMetadata:
        if not isinstance(rec, dict):
            raise FileFormatError("metadata is not a map")
        try:
            headers = rec["headers"]
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                raise FileFormatError("headers must map str to str")
            alg = _typed(rec, "etag_alg", str) if "etag_alg" in rec else "md5"
            if "etag_alg" in rec and alg == "md5":  # version 1 records never carry the key
                raise FileFormatError("a version 1 record carries etag_alg")
            md = cls(
                kind=_typed(rec, "kind", str),  # type: ignore[arg-type]
                name=_typed(rec, "name", str),
                timestamp=Timestamp.parse(_typed(rec, "timestamp", str)),
                content_type=_typed(rec, "content_type", str),
                content_length=_typed(rec, "content_length", int),
                etag=_typed(rec, "etag", str),
                headers=headers,
                block_bytes=_typed(rec, "block_bytes", int),
                block_xxh3=_typed(rec, "block_xxh3", bytes),
                etag_alg=cast(EtagAlg, alg),  # (validate() checks it)
            )
        except (KeyError, TimestampError) as e:
            raise FileFormatError(f"bad metadata: {e}") from None
        return md


def _typed(rec: dict[Any, Any], key: str, tp: type[_T]) -> _T:
    value = rec[key]
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise FileFormatError(f"metadata field {key!r} has type {type(value).__name__}")
    return value


def encode_footer(md: ObjectMetadata) -> bytes:
    """The bytes to append after the body: msgpack record + trailer."""
    md.validate()
    meta: bytes = msgpack.packb(md.to_record(), use_bin_type=True)
    if len(meta) > META_BYTES_MAX:
        raise FileFormatError(f"metadata of {len(meta)} bytes exceeds {META_BYTES_MAX}")
    head = TRAILER.pack(MAGIC, md.format_version, 0, len(meta), md.content_length, 0)[:24]
    checksum = xxhash.xxh3_64_intdigest(meta + head)
    return meta + head + checksum.to_bytes(8, "big")


def decode_trailer(trailer: bytes, file_size: int) -> tuple[int, int, int]:
    """Validate a trailer against the file size; returns (meta_len, body_len, checksum)."""
    return _decode_trailer(trailer, file_size)[1:]


def _decode_trailer(trailer: bytes, file_size: int) -> tuple[int, int, int, int]:
    """(format version, meta_len, body_len, checksum) of a valid trailer."""
    if len(trailer) != TRAILER.size:
        raise FileFormatError(f"file too short for a trailer ({file_size} bytes)")
    magic, version, flags, meta_len, body_len, checksum = TRAILER.unpack(trailer)
    if magic != MAGIC:
        raise FileFormatError("bad magic")
    if version not in _VERSIONS:
        raise FileFormatError(f"unsupported format version {version}")
    if flags != 0:
        raise FileFormatError(f"unknown flags {flags:#x}")
    if meta_len > META_BYTES_MAX or body_len + meta_len + TRAILER.size != file_size:
        raise FileFormatError("lengths in the trailer do not match the file size")
    return version, meta_len, body_len, checksum


def parse_footer(meta: bytes, trailer: bytes, file_size: int) -> ObjectMetadata:
    """Check and decode the footer read from the end of a file of `file_size` bytes."""
    version, meta_len, body_len, checksum = _decode_trailer(trailer, file_size)
    if len(meta) != meta_len:
        raise FileFormatError("short metadata read")
    if xxhash.xxh3_64_intdigest(meta + trailer[:24]) != checksum:
        raise FileFormatError("metadata checksum mismatch")
    try:
        rec = msgpack.unpackb(meta, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as e:
        raise FileFormatError(f"metadata is not msgpack: {e}") from None
    md = ObjectMetadata.from_record(rec)
    if md.content_length != body_len:
        raise FileFormatError("metadata length differs from the trailer's")
    if md.format_version != version:
        raise FileFormatError(f"a version {version} file with ETag algorithm {md.etag_alg}")
    return md
