"""A small case-insensitive multi-dict view of request headers, independent of any web stack.

Accepts a mapping (aiohttp's CIMultiDictProxy iterates `items()` with repeats) or a
sequence of (name, value) pairs, so the sans-IO S3 modules never import aiohttp.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Union

__all__ = ["HeaderMap", "HeadersLike"]

HeadersLike = Union[Mapping[str, str], Iterable[tuple[str, str]], "HeaderMap"]


class HeaderMap:
    """Lower-cased header names to their values, in arrival order."""

    __slots__ = ("_values",)

    def __init__(self, headers: HeadersLike = ()) -> None:
        self._values: dict[str, list[str]] = {}
        if isinstance(headers, HeaderMap):
            self._values = {k: list(v) for k, v in headers._values.items()}
            return
        pairs: Iterable[tuple[str, str]]
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in pairs:
            self._values.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name`, or `default`."""
        values = self._values.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def names(self) -> list[str]:
        """Every lower-cased header name present."""
        return list(self._values)

    def items(self) -> list[tuple[str, str]]:
        """Every (lower-cased name, value) pair."""
        return [(k, v) for k, vals in self._values.items() for v in vals]
