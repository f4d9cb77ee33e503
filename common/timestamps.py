"""Swift-style timestamps.

A timestamp is a wall-clock time with 10-microsecond resolution plus an optional offset that
orders several events stamped with the same time (for example a POST after a PUT that share a
client-supplied X-Timestamp).

* normal form: ``"1700000000.12345"`` (16 characters, zero-padded, 5 decimals)
* internal form: the normal form, then ``"_"`` and the offset as 16 hex digits when the
  offset is non-zero: ``"1700000000.12345_000000000000000a"``

Values are held as integers (ticks of 10 µs, offset) so ordering and equality are exact.
"""

from __future__ import annotations

import functools
import re

__all__ = ["MAX_OFFSET", "Timestamp", "TimestampError"]

TICKS_PER_SECOND = 100_000
MAX_OFFSET = (1 << 64) - 1
MAX_TICKS = 9_999_999_999_99999  # the normal form has 10 integer digits
_RE = re.compile(r"^(\d{1,10})(?:\.(\d{1,5}))?(?:_([0-9a-fA-F]{1,16}))?$")


class TimestampError(ValueError):
    """A string or number that is not a valid timestamp."""


@functools.total_ordering
class Timestamp:
    __slots__ = ("offset", "ticks")

    ticks: int
    offset: int

    def __init__(self, ticks: int, offset: int = 0) -> None:
        if not 0 <= ticks <= MAX_TICKS:
            raise TimestampError(f"timestamp out of range: {ticks} ticks")
        if not 0 <= offset <= MAX_OFFSET:
            raise TimestampError(f"timestamp offset out of range: {offset}")
        self.ticks = ticks
        self.offset = offset

    @classmethod
    def from_float(cls, seconds: float, offset: int = 0) -> Timestamp:
        return cls(round(seconds * TICKS_PER_SECOND), offset)

    @classmethod
    def parse(cls, text: str | bytes) -> Timestamp:
        """Parse the normal or internal form (and plain integer seconds)."""
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        m = _RE.match(text.strip())
        if m is None:
            raise TimestampError(f"invalid timestamp: {text!r}")
        whole, frac, off = m.groups()
        ticks = int(whole) * TICKS_PER_SECOND + int((frac or "").ljust(5, "0"))
        return cls(ticks, int(off, 16) if off else 0)

    @property
    def seconds(self) -> float:
        return self.ticks / TICKS_PER_SECOND

    @property
    def normal(self) -> str:
        whole, frac = divmod(self.ticks, TICKS_PER_SECOND)
        return f"{whole:010d}.{frac:05d}"

    @property
    def internal(self) -> str:
        if self.offset:
            return f"{self.normal}_{self.offset:016x}"
        return self.normal

    def with_offset(self, offset: int) -> Timestamp:
        return Timestamp(self.ticks, offset)

    def _key(self) -> tuple[int, int]:
        return (self.ticks, self.offset)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: Timestamp) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.internal

    def __repr__(self) -> str:
        return f"Timestamp({self.internal!r})"

    @property
    def http_date(self) -> str:
        """RFC 7231 date for Last-Modified headers (second resolution, rounded up like Swift)."""
        import math

        return _http_date(math.ceil(self.seconds))

    @property
    def isoformat(self) -> str:
        """ISO 8601 with microseconds, as in Swift's JSON listings (``last_modified``)."""
        import datetime

        dt = datetime.datetime.fromtimestamp(self.ticks / TICKS_PER_SECOND, datetime.UTC)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:
    """formatdate(seconds, usegmt=True), remembered: every object GET and HEAD answers a
    Last-Modified, and the same objects are read again and again (a volume's chunks)."""
    import email.utils

    return email.utils.formatdate(seconds, usegmt=True)
