"""The ETag trailer of a large object PUT (proxy -> object server), format version 1.

A large PUT's MD5 is computed once, by the proxy, instead of once per replica. The proxy
sends each object server the body followed by this fixed-size trailer, and says so with two
backend headers (see docs/object-format.md, "PUT ETag trailer"):

    X-Backend-Etag-Trailer: 1         (the trailer's format version)
    X-Backend-Body-Length: L          (body bytes; Content-Length is L + TRAILER_BYTES)

Layout (big-endian, TRAILER_BYTES = 56):

    0   4  magic b"CRNT"
    4   1  version (1)
    5   1  action: 1 = commit, 2 = cancel (the proxy found the body bad: never commit)
    6   2  reserved, zero
    8   8  body length in bytes
    16 16  MD5 of the body (the ETag)
    32 16  xxh3-128 of the body
    48  8  xxh3-64 of bytes 0..47 (a garbled trailer is refused, never half-believed)

Version 2 (blockd's chunk objects, docs/object-format.md "ETag algorithms") has the same
layout and size; its ETag is the body's xxh3-128 (bytes 32..48), no MD5 is computed anywhere,
and bytes 16..32 are zero. It is announced with ``X-Backend-Etag-Trailer: 2`` (a server that
takes version 1 only refuses it with a 400) and sent only to servers whose answers carry
``X-Backend-Etag-Trailer-Versions`` naming it.

Sans-IO: `encode_trailer` and `decode_trailer` work on bytes only; `trailed_headers` makes a
PUT's headers announce the trailer, and `TrailerServers` remembers which object servers said
they take it. Both senders use them: the proxy and blockd's store client.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import xxhash
from multidict import CIMultiDict

from common.nodes import NodeLike

__all__ = [
    "BODY_LENGTH_HEADER",
    "TRAILER_BYTES",
    "TRAILER_HEADER",
    "TRAILER_SUPPORT_HEADER",
    "TRAILER_VERSION",
    "TRAILER_VERSIONS",
    "TRAILER_VERSIONS_HEADER",
    "TRAILER_VERSIONS_TEXT",
    "TRAILER_VERSION_XXH3_ETAG",
    "PutTrailer",
    "TrailerError",
    "TrailerServers",
    "decode_trailer",
    "encode_trailer",
    "trailed_headers",
]

TRAILER_VERSION = 1
TRAILER_HEADER = "X-Backend-Etag-Trailer"
# On every object-server response: the trailer version it takes. A proxy sends trailers only
# to servers it has seen say so (an older one would store the trailer as body bytes).
TRAILER_SUPPORT_HEADER = "X-Backend-Etag-Trailer-Support"
BODY_LENGTH_HEADER = "X-Backend-Body-Length"
# The version whose ETag is the xxh3-128 (no MD5), and the answer header that lists every
# version a server takes (the support header above keeps saying "1" for older senders).
TRAILER_VERSION_XXH3_ETAG = 2
TRAILER_VERSIONS = (TRAILER_VERSION, TRAILER_VERSION_XXH3_ETAG)
TRAILER_VERSIONS_HEADER = "X-Backend-Etag-Trailer-Versions"
TRAILER_VERSIONS_TEXT = " ".join(map(str, TRAILER_VERSIONS))

_MAGIC = b"CRNT"
_FIELDS = struct.Struct(">4sBBHQ16s16s")
_CHECK = struct.Struct(">Q")
TRAILER_BYTES = _FIELDS.size + _CHECK.size
_ACTIONS: dict[int, Literal["commit", "cancel"]] = {1: "commit", 2: "cancel"}
_ACTION_CODES = {v: k for k, v in _ACTIONS.items()}
_BODY_BYTES_MAX = 1 << 62


class TrailerError(ValueError):
    """The bytes are not a valid trailer (version 1 or 2)."""


def _hex16(name: str, value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise TrailerError(f"{name} is not hex") from None
    if len(raw) != 16:
        raise TrailerError(f"{name} must be 16 bytes, not {len(raw)}")
    return raw


@dataclass(frozen=True)
class PutTrailer:
    """What the proxy says about the body it sent: commit it (with these digests) or not."""

    action: Literal["commit", "cancel"]
    body_length: int
    md5_hex: str  # "" in a version 2 trailer (its ETag is the xxh3-128)
    xxh3_128_hex: str

    def __post_init__(self) -> None:
        if self.action not in _ACTION_CODES:
            raise TrailerError(f"unknown action {self.action!r}")
        if not 0 <= self.body_length < _BODY_BYTES_MAX:
            raise TrailerError(f"body length {self.body_length} out of range")
        if self.md5_hex:
            _hex16("md5", self.md5_hex)
        _hex16("xxh3-128", self.xxh3_128_hex)

    @property
    def version(self) -> int:
        return TRAILER_VERSION if self.md5_hex else TRAILER_VERSION_XXH3_ETAG

    @property
    def etag(self) -> str:
        """The ETag the body is stored with: its MD5 (version 1) or its xxh3-128."""
        return self.md5_hex or self.xxh3_128_hex

    @property
    def etag_alg(self) -> Literal["md5", "xxh3-128"]:
        return "md5" if self.md5_hex else "xxh3-128"


def encode_trailer(t: PutTrailer) -> bytes:
    fields = _FIELDS.pack(
        _MAGIC,
        t.version,
        _ACTION_CODES[t.action],
        0,
        t.body_length,
        _hex16("md5", t.md5_hex) if t.md5_hex else bytes(16),
        _hex16("xxh3-128", t.xxh3_128_hex),
    )
    return fields + _CHECK.pack(xxhash.xxh3_64_intdigest(fields))


def decode_trailer(data: bytes | bytearray | memoryview) -> PutTrailer:
    """The trailer in `data` (exactly TRAILER_BYTES); TrailerError for anything else."""
    raw = bytes(data)
    if len(raw) != TRAILER_BYTES:
        raise TrailerError(f"trailer is {len(raw)} bytes, not {TRAILER_BYTES}")
    fields = raw[: _FIELDS.size]
    (check,) = _CHECK.unpack(raw[_FIELDS.size :])
    magic, version, action, reserved, length, md5, xxh = _FIELDS.unpack(fields)
    if magic != _MAGIC:
        raise TrailerError("bad trailer magic")
    if version not in TRAILER_VERSIONS:
        raise TrailerError(f"unsupported trailer version {version}")
    if check != xxhash.xxh3_64_intdigest(fields):
        raise TrailerError("trailer checksum mismatch")
    if action not in _ACTIONS or reserved != 0:
        raise TrailerError("bad trailer action or reserved field")
    if version == TRAILER_VERSION_XXH3_ETAG:
        if md5 != bytes(16):
            raise TrailerError("a version 2 trailer carries no MD5")
        return PutTrailer(_ACTIONS[action], length, "", xxh.hex())
    return PutTrailer(_ACTIONS[action], length, md5.hex(), xxh.hex())


def trailed_headers(
    headers: Mapping[str, str], body_len: int, version: int = TRAILER_VERSION
) -> CIMultiDict[str]:
    """A copy of a PUT's `headers` announcing a trailer of `version` after `body_len` body
    bytes."""
    assert version in TRAILER_VERSIONS
    out = CIMultiDict(headers)
    out["Content-Length"] = str(body_len + TRAILER_BYTES)
    out[BODY_LENGTH_HEADER] = str(body_len)
    out[TRAILER_HEADER] = str(version)
    return out


class TrailerServers:
    """The object servers (ip:port, whatever the device) whose answers said they take this
    trailer version (TRAILER_SUPPORT_HEADER); a sender trails PUTs only to those."""

    def __init__(self) -> None:
        self._servers: set[tuple[str, int]] = set()
        self._xxh3_servers: set[tuple[str, int]] = set()  # those taking version 2 too

    def learn(self, node: NodeLike, headers: Mapping[str, str]) -> None:
        """Note what an answer from `node`'s server says. Version 1 support is only ever
        gained here (`forget` takes it back); an answer carrying the support header also sets
        whether the server takes version 2 exactly as its versions header says (absent: it
        does not), so a server rolled back to one taking version 1 only loses it at once."""
        if headers.get(TRAILER_SUPPORT_HEADER) == _VERSION_TEXT:
            key = (node.ip, node.port)
            self._servers.add(key)
            versions = headers.get(TRAILER_VERSIONS_HEADER, "").split()
            if str(TRAILER_VERSION_XXH3_ETAG) in versions:
                self._xxh3_servers.add(key)
            else:
                self._xxh3_servers.discard(key)

    def forget(self, node: NodeLike, version: int = TRAILER_VERSION) -> None:
        """The node mishandled a trailer of `version`: forgetting version 1 forgets every
        version; forgetting version 2 keeps version 1."""
        self._xxh3_servers.discard((node.ip, node.port))
        if version == TRAILER_VERSION:
            self._servers.discard((node.ip, node.port))

    def takes(self, node: NodeLike, version: int = TRAILER_VERSION) -> bool:
        """Whether `node`'s server was seen to take trailers of `version`."""
        known = self._servers if version == TRAILER_VERSION else self._xxh3_servers
        return (node.ip, node.port) in known

    def __len__(self) -> int:
        return len(self._servers)


_VERSION_TEXT = str(TRAILER_VERSION)
