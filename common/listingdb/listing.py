"""The listing algorithm: prefix, delimiter, marker, end_marker, limit, reverse, path.

It works on any sorted source that can seek (LMDB cursors in production, a sorted list in
tests), so a delimiter roll-up never scans a sub-tree: after emitting subdir ``S`` it seeks
past every name starting with ``S`` (forward: to ``S + 0xFF``, a byte UTF-8 never uses;
reverse: to just below ``S``). Names are compared as UTF-8 bytes, i.e. by code point.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["LISTING_LIMIT_MAX", "ListingParams", "SortedSource", "Subdir", "list_rows"]

LISTING_LIMIT_MAX = 10_000
_PAST = b"\xff"  # sorts after every UTF-8 continuation of a name
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True)
class Subdir:
    name: str


@dataclass(frozen=True)
class ListingParams:
    prefix: str = ""
    delimiter: str = ""
    marker: str = ""
    end_marker: str = ""
    limit: int = LISTING_LIMIT_MAX
    reverse: bool = False
    # Swift's `path`: list only the objects directly under this pseudo-directory.
    path: str | None = None


class SortedSource(Protocol[R_co]):
    """Live rows in name order; each call starts a fresh seek."""

    def forward(self, start: bytes) -> Iterator[tuple[bytes, R_co]]:
        """Rows with name >= start, ascending."""
        ...

    def reverse(self, before: bytes | None) -> Iterator[tuple[bytes, R_co]]:
        """Rows with name < before (all when None), descending."""
        ...


@dataclass(frozen=True)
class _Bounds:
    prefix: bytes
    delimiter: bytes
    marker: bytes
    end_marker: bytes
    path_mode: bool


def _bounds(p: ListingParams) -> _Bounds:
    prefix, delimiter = p.prefix, p.delimiter
    if p.path is not None:
        prefix = p.path.rstrip("/") + "/" if p.path else ""
        delimiter = "/"
    return _Bounds(
        prefix.encode(),
        delimiter.encode(),
        p.marker.encode(),
        p.end_marker.encode(),
        p.path is not None,
    )


def list_rows(src: SortedSource[R], p: ListingParams) -> list[R | Subdir]:
    """One page of a listing."""
    if p.limit <= 0:
        return []
    b = _bounds(p)
    return _list_reverse(src, p, b) if p.reverse else _list_forward(src, p, b)


def _list_forward(src: SortedSource[R], p: ListingParams, b: _Bounds) -> list[R | Subdir]:
    out: list[R | Subdir] = []
    start = b.prefix
    if b.marker and b.marker >= start:
        start = b.marker + b"\x00"  # the smallest name greater than the marker
    it = src.forward(start)
    while len(out) < p.limit:
        item = next(it, None)
        if item is None:
            break
        name, row = item
        if (b.end_marker and name >= b.end_marker) or not name.startswith(b.prefix):
            break
        cut = name.find(b.delimiter, len(b.prefix)) if b.delimiter else -1
        if cut < 0:
            out.append(row)
            continue
        sub = name[: cut + len(b.delimiter)]
        if b.path_mode:
            if len(name) == len(sub):  # "dir/" itself is an object directly under path
                out.append(row)
                continue
        elif sub != b.marker:
            out.append(Subdir(sub.decode()))
        it = src.forward(sub + _PAST)
    return out


def _list_reverse(src: SortedSource[R], p: ListingParams, b: _Bounds) -> list[R | Subdir]:
    out: list[R | Subdir] = []
    before: bytes | None = b.marker or None
    if b.prefix:
        top = b.prefix + _PAST
        before = top if before is None else min(before, top)
    it = src.reverse(before)
    while len(out) < p.limit:
        item = next(it, None)
        if item is None:
            break
        name, row = item
        if (b.end_marker and name <= b.end_marker) or not name.startswith(b.prefix):
            break
        cut = name.find(b.delimiter, len(b.prefix)) if b.delimiter else -1
        if cut < 0:
            out.append(row)
            continue
        sub = name[: cut + len(b.delimiter)]
        if b.path_mode:
            if len(name) == len(sub):
                out.append(row)
                continue
            it = src.reverse(sub + b"\x00")  # keep "dir/" itself, skip what is below it
            continue
        if sub != b.marker:
            out.append(Subdir(sub.decode()))
        it = src.reverse(sub)
    return out
