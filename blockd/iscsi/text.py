"""iSCSI text key=value pairs (RFC 7143 6.1): NUL-terminated ``key=value`` strings, UTF-8."""

from __future__ import annotations

import re

__all__ = ["TextError", "decode_text", "encode_text"]

KEY_BYTES_MAX = 63
VALUE_BYTES_MAX = 8192  # RFC 7143 6.1: values up to 255 bytes, CHAP binary values up to 8192
TEXT_BYTES_MAX = 64 * 1024  # our cap on one text exchange, across continuation PDUs
PAIRS_MAX = 256
_KEY_RE = re.compile(r"[A-Za-z0-9.\-+@_]+\Z")


class TextError(ValueError):
    """Malformed text data: the initiator broke the key=value syntax."""


def decode_text(data: bytes) -> list[tuple[str, str]]:
    """The pairs in ``data``, in order. Empty strings (extra NUL padding) are skipped."""
    if len(data) > TEXT_BYTES_MAX:
        raise TextError(f"text data of {len(data)} bytes exceeds {TEXT_BYTES_MAX}")
    if data and not data.endswith(b"\x00"):
        raise TextError("text data does not end with a NUL")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in data.split(b"\x00"):
        if not raw:
            continue
        key_b, sep, value_b = raw.partition(b"=")
        if not sep:
            raise TextError("text item without '='")
        try:
            key, value = key_b.decode("ascii"), value_b.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextError("text item is not valid UTF-8") from exc
        if len(key_b) > KEY_BYTES_MAX or not _KEY_RE.match(key):
            raise TextError(f"bad key name {key[:KEY_BYTES_MAX]!r}")
        if len(value_b) > VALUE_BYTES_MAX:
            raise TextError(f"value of {key} is too long")
        if key in seen:
            raise TextError(f"key {key} given twice")
        seen.add(key)
        pairs.append((key, value))
        if len(pairs) > PAIRS_MAX:
            raise TextError("too many keys")
    return pairs


def encode_text(pairs: list[tuple[str, str]]) -> bytes:
    """``key=value\\0`` for each pair."""
    return b"".join(f"{key}={value}".encode() + b"\x00" for key, value in pairs)
