"""HTTP byte ranges, sans-IO: parse a Range header, plan a 206/416, frame multipart/byteranges.

Parsing follows RFC 9110 and Swift: a header that is not a well-formed ``bytes=`` list (or has
too many ranges) is ignored and the whole object is served; a well-formed list with no range
that overlaps the object is unsatisfiable (416 with ``Content-Range: bytes */<length>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "RANGES_MAX",
    "ByteRange",
    "MultipartPlan",
    "Unsatisfiable",
    "parse_range_header",
    "resolve_ranges",
]

RANGES_MAX = 50  # Swift's limit; more is a header we ignore
RANGE_HEADER_BYTES_MAX = 8192
_SPEC_RE = re.compile(r"^(\d*)-(\d*)$")
_DIGITS_MAX = 19


@dataclass(frozen=True)
class ByteRange:
    """An inclusive range [first, last] that lies inside the object."""

    first: int
    last: int

    def __post_init__(self) -> None:
        assert 0 <= self.first <= self.last, (self.first, self.last)

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.first}-{self.last}/{total}"


@dataclass(frozen=True)
class Unsatisfiable:
    """A valid header with no range inside the object: answer 416."""


# A parsed spec: (first, last) with last None for "a-", or (None, n) for the suffix "-n".
RawSpec = tuple[int | None, int | None]


def parse_range_header(value: str) -> list[RawSpec] | None:
    """The specs of a ``bytes=`` Range header, or None when the header must be ignored."""
    if len(value) > RANGE_HEADER_BYTES_MAX:
        return None
    unit, sep, rest = value.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs: list[RawSpec] = []
    for raw in rest.split(","):
        part = raw.strip()
        if not part:
            continue  # RFC 9110 allows empty list elements
        m = _SPEC_RE.match(part)
        if m is None:
            return None
        a, b = m.group(1), m.group(2)
        if (not a and not b) or len(a) > _DIGITS_MAX or len(b) > _DIGITS_MAX:
            return None
        if a and b and int(b) < int(a):
            return None
        specs.append((int(a) if a else None, int(b) if b else None))
    if not specs or len(specs) > RANGES_MAX:
        return None
    return specs


def resolve_ranges(specs: list[RawSpec], length: int) -> list[ByteRange] | Unsatisfiable:
    """Clamp specs to an object of `length` bytes, dropping those outside it."""
    out: list[ByteRange] = []
    for first, last in specs:
        if first is None:
            assert last is not None
            if last == 0 or length == 0:
                continue
            out.append(ByteRange(max(0, length - last), length - 1))
        elif first < length:
            end = length - 1 if last is None else min(last, length - 1)
            out.append(ByteRange(first, end))
    return out if out else Unsatisfiable()


@dataclass(frozen=True)
class MultipartPlan:
    """The framing of a multipart/byteranges body; the caller streams each part's bytes."""

    boundary: str
    content_type: str
    total: int
    ranges: tuple[ByteRange, ...]

    def __post_init__(self) -> None:
        assert re.fullmatch(r"[0-9A-Za-z'()+_,./:=?-]{1,70}", self.boundary), self.boundary
        assert "\r" not in self.content_type and "\n" not in self.content_type

    @property
    def response_content_type(self) -> str:
        return f"multipart/byteranges;boundary={self.boundary}"

    def part_header(self, r: ByteRange) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f"Content-Type: {self.content_type}\r\n"
            f"Content-Range: {r.content_range(self.total)}\r\n\r\n"
        ).encode("latin-1")

    def closing(self) -> bytes:
        return f"--{self.boundary}--".encode("ascii")

    def parts(self) -> Iterator[tuple[bytes, ByteRange, bytes]]:
        """(bytes before the range's data, the range, bytes after it) for each part."""
        last_index = len(self.ranges) - 1
        for i, r in enumerate(self.ranges):
            tail = b"\r\n" + (self.closing() if i == last_index else b"")
            yield self.part_header(r), r, tail

    @property
    def content_length(self) -> int:
        return sum(len(h) + r.length + len(t) for h, r, t in self.parts())
