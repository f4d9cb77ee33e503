"""Parsing of a single HTTP byte range against a known length (RFC 9110 section 14)."""

from __future__ import annotations

__all__ = ["parse_single_range"]


def parse_single_range(value: str, length: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a one-range `bytes=` header, or None if unusable.

    None covers both "unsatisfiable" and "not a single byte range"; callers decide whether
    to answer 416 or ignore the header.
    """
    v = value.strip()
    if not v.lower().startswith("bytes="):
        return None
    spec = v[6:].strip()
    if "," in spec or "-" not in spec:
        return None
    a, b = (x.strip() for x in spec.split("-", 1))
    if not a:
        if not b.isdigit():
            return None
        n = int(b)
        if n == 0 or length == 0:
            return None
        return max(0, length - n), length - 1
    if not a.isdigit() or (b and not b.isdigit()):
        return None
    first = int(a)
    last = int(b) if b else length - 1
    if last < first:
        return None
    if first >= length:
        return None
    return first, min(last, length - 1)
