"""Body integrity for S3 uploads: Content-MD5, x-amz-checksum-*, x-amz-content-sha256.

`BodyVerifier` is fed the (decoded) body piece by piece and, at `finish()`, raises the S3
error a client expects (BadDigest, XAmzContentSHA256Mismatch) or returns the digests the
store keeps (the MD5 is the object's ETag; the flexible checksum is echoed on GET/HEAD).

CRC32 comes from zlib. CRC32C comes from the `crc32c` package (hardware accelerated) when
it is installed, else from the table-driven implementation here. CRC64NVME is table-driven
here (pure Python: fine for the small bodies SDKs send it with; slow for huge ones).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import xxhash

from proxy.s3.errors import S3Error
from proxy.s3.headers import HeaderMap, HeadersLike

__all__ = [
    "BodyDigests",
    "BodyVerifier",
    "ChecksumAlgorithm",
    "Hasher",
    "checksum_from_headers",
    "crc32c_py",
    "crc64nvme_py",
    "new_hasher",
    "parse_content_md5",
]


class ChecksumAlgorithm(StrEnum):
    CRC32 = "CRC32"
    CRC32C = "CRC32C"
    CRC64NVME = "CRC64NVME"
    SHA1 = "SHA1"
    SHA256 = "SHA256"
    SHA512 = "SHA512"
    XXHASH64 = "XXHASH64"
    XXHASH3 = "XXHASH3"
    XXHASH128 = "XXHASH128"

    @property
    def header(self) -> str:
        return "x-amz-checksum-" + self.value.lower()

    @property
    def digest_bytes(self) -> int:
        return _DIGEST_BYTES[self.value]

    @classmethod
    def from_name(cls, name: str) -> ChecksumAlgorithm:
        try:
            return cls(name.upper())
        except ValueError:
            raise S3Error(
                "InvalidRequest", f"Checksum algorithm {name[:32]!r} is not supported."
            ) from None


_DIGEST_BYTES = {
    "CRC32": 4,
    "CRC32C": 4,
    "CRC64NVME": 8,
    "SHA1": 20,
    "SHA256": 32,
    "SHA512": 64,
    "XXHASH64": 8,
    "XXHASH3": 8,
    "XXHASH128": 16,
}


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


# ---- CRC tables ---------------------------------------------------------------------------


def _table(poly: int, width: int) -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc & ((1 << width) - 1))
    return table


_CRC32C_TABLE = _table(0x82F63B78, 32)
_CRC64NVME_TABLE = _table(0x9A6C9329AC4BC9B5, 64)
_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF


def crc32c_py(data: bytes, value: int = 0) -> int:
    """CRC-32C (Castagnoli), reflected, init and xorout all ones; continues from `value`."""
    crc = value ^ _MASK32
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK32


def crc64nvme_py(data: bytes, value: int = 0) -> int:
    """CRC-64/NVME, reflected, init and xorout all ones; continues from `value`."""
    crc = value ^ _MASK64
    table = _CRC64NVME_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK64


def _load_crc32c() -> Callable[[bytes, int], int]:
    try:
        import crc32c
    except ImportError:
        return crc32c_py
    fast: Callable[[bytes, int], int] = crc32c.crc32c
    return fast


_crc32c = _load_crc32c()


class _Crc:
    __slots__ = ("_fn", "_size", "_value")

    def __init__(self, fn: Callable[[bytes, int], int], size: int) -> None:
        self._fn = fn
        self._size = size
        self._value = 0

    def update(self, data: bytes, /) -> None:
        self._value = self._fn(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")


def new_hasher(algorithm: ChecksumAlgorithm) -> Hasher:
    if algorithm is ChecksumAlgorithm.CRC32:
        return _Crc(zlib.crc32, 4)
    if algorithm is ChecksumAlgorithm.CRC32C:
        return _Crc(_crc32c, 4)
    if algorithm is ChecksumAlgorithm.CRC64NVME:
        return _Crc(crc64nvme_py, 8)
    if algorithm is ChecksumAlgorithm.SHA1:
        return hashlib.sha1()  # an integrity checksum S3 clients choose
    if algorithm is ChecksumAlgorithm.SHA256:
        return hashlib.sha256()
    if algorithm is ChecksumAlgorithm.SHA512:
        return hashlib.sha512()
    factory = {
        ChecksumAlgorithm.XXHASH64: xxhash.xxh64,
        ChecksumAlgorithm.XXHASH3: xxhash.xxh3_64,
        ChecksumAlgorithm.XXHASH128: xxhash.xxh3_128,
    }[algorithm]
    hasher: Hasher = factory()
    return hasher


# ---- header parsing -----------------------------------------------------------------------

_NOT_CHECKSUMS = frozenset(
    {"x-amz-checksum-type", "x-amz-checksum-mode", "x-amz-checksum-algorithm"}
)


def _decode_b64(value: str, size: int) -> bytes | None:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def checksum_from_headers(headers: HeadersLike) -> tuple[ChecksumAlgorithm, str] | None:
    """The one x-amz-checksum-<alg> header of a request, validated, or None."""
    hmap = headers if isinstance(headers, HeaderMap) else HeaderMap(headers)
    found = [n for n in hmap.names() if n.startswith("x-amz-checksum-") and n not in _NOT_CHECKSUMS]
    if not found:
        return None
    if len(found) > 1:
        raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header")
    algorithm = ChecksumAlgorithm.from_name(found[0][len("x-amz-checksum-") :])
    value = hmap.get(found[0]) or ""
    if _decode_b64(value, algorithm.digest_bytes) is None:
        raise S3Error("InvalidRequest", f"Value for {algorithm.header} header is invalid.")
    declared = hmap.get("x-amz-sdk-checksum-algorithm")
    if declared is not None and declared.upper() != algorithm.value:
        raise S3Error(
            "InvalidRequest",
            f"Value for x-amz-sdk-checksum-algorithm header is invalid: {declared[:32]!r}",
        )
    return algorithm, value.strip()


def parse_content_md5(value: str) -> bytes:
    """A Content-MD5 header -> the 16 digest bytes, or InvalidDigest."""
    raw = _decode_b64(value, 16)
    if raw is None:
        raise S3Error("InvalidDigest")
    return raw


# ---- verification -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyDigests:
    """What was computed over a whole body."""

    size_bytes: int
    md5_hex: str
    checksum: tuple[ChecksumAlgorithm, str] | None  # (algorithm, base64 value)


class BodyVerifier:
    """Feed the decoded body; `finish()` checks every digest the client committed to.

    `content_md5` (raw 16 bytes), `checksum` ((algorithm, base64)), `sha256_hex` (the
    x-amz-content-sha256 value when it is a digest) are each optional. `compute` names a
    flexible checksum to compute even without an expected value (for trailers, whose value
    arrives after the body: pass it to `finish(trailer_checksum=...)`).
    """

    def __init__(
        self,
        *,
        content_md5: bytes | None = None,
        checksum: tuple[ChecksumAlgorithm, str] | None = None,
        sha256_hex: str | None = None,
        compute: ChecksumAlgorithm | None = None,
    ) -> None:
        self._md5 = hashlib.md5()
        self._content_md5 = content_md5
        self._expected = checksum
        self._algorithm = checksum[0] if checksum else compute
        self._flex = new_hasher(self._algorithm) if self._algorithm else None
        self._sha256_hex = sha256_hex
        self._sha256 = hashlib.sha256() if sha256_hex is not None else None
        self._size = 0
        self._done = False

    def update(self, data: bytes) -> None:
        assert not self._done, "update after finish"
        self._size += len(data)
        self._md5.update(data)
        if self._flex is not None:
            self._flex.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)

    def finish(
        self, *, trailer_checksum: tuple[ChecksumAlgorithm, str] | None = None
    ) -> BodyDigests:
        self._done = True
        if self._sha256 is not None and self._sha256.hexdigest() != self._sha256_hex:
            raise S3Error(
                "XAmzContentSHA256Mismatch",
                extra=[
                    ("ClientComputedContentSHA256", self._sha256_hex or ""),
                    ("S3ComputedContentSHA256", self._sha256.hexdigest()),
                ],
            )
        md5 = self._md5.digest()
        if self._content_md5 is not None and md5 != self._content_md5:
            raise S3Error("BadDigest")
        return BodyDigests(self._size, md5.hex(), self._check_flex(trailer_checksum))

    def _check_flex(
        self, trailer: tuple[ChecksumAlgorithm, str] | None
    ) -> tuple[ChecksumAlgorithm, str] | None:
        expected = trailer or self._expected
        if self._flex is None or self._algorithm is None:
            assert expected is None, "a trailer checksum needs `compute` set up front"
            return None
        actual = base64.b64encode(self._flex.digest()).decode("ascii")
        if expected is not None:
            if expected[0] is not self._algorithm:
                raise S3Error(
                    "InvalidRequest", "The checksum algorithm does not match the trailer."
                )
            if expected[1] != actual:
                raise S3Error(
                    "BadDigest",
                    f"The {self._algorithm.value} you specified did not match the calculated "
                    "checksum.",
                )
        return self._algorithm, actual
