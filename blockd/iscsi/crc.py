"""CRC32C (Castagnoli) for iSCSI header and data digests.

Uses the ``crc32c`` package (hardware-accelerated with its own software fallback) when installed,
else a table-driven pure-Python implementation, which is correct but slow.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["crc32c", "digest_bytes"]

_POLY_REFLECTED = 0x82F63B78


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc32c_table(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Table-driven CRC32C (RFC 3720 appendix B.4 polynomial), one byte at a time."""
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_fast_crc32c: Callable[[bytes | bytearray | memoryview], int] | None
try:
    from crc32c import crc32c as _fast_crc32c
except ImportError:  # pragma: no cover - depends on the environment
    _fast_crc32c = None


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C of ``data`` as an unsigned 32-bit integer."""
    if _fast_crc32c is not None:
        return int(_fast_crc32c(data))
    return crc32c_table(data)


def digest_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """The 4-byte digest as sent on the wire: CRC32C in little-endian byte order (RFC 7143 13.1)."""
    return crc32c(data).to_bytes(4, "little")
