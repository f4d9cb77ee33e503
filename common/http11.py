"""HTTP/1.1 rules both lean sides apply (sans-IO): the client's response parser and request
serializer (common/leanhttp) and the server lane's request parser and response serializer
(common/leanserver). Each side raises its own error types around these."""

from __future__ import annotations

import re
from collections.abc import Sequence

from multidict import CIMultiDict

__all__ = ["NOT_TARGET", "content_length", "encode_head", "keep_alive"]

# Characters a request target may not contain (controls, space, DEL).
NOT_TARGET = re.compile(r"[\x00-\x20\x7f]")
# Controls a header line may not contain (TAB is allowed in values).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Below 10**18: fits an int64, and no body is that big anyway.
_LENGTH_DIGITS_MAX = 18


def content_length(values: Sequence[str]) -> int | None:
    """The length the Content-Length header values say (repeats must agree), or None when
    they are malformed (not ASCII digits, too long, or disagreeing)."""
    first = values[0]
    if (
        not first.isascii()
        or not first.isdigit()
        or len(first) > _LENGTH_DIGITS_MAX
        or any(v != first for v in values)
    ):
        return None
    return int(first)


def keep_alive(headers: CIMultiDict[str], default: bool) -> bool:
    """Whether the connection stays open after this message: the version's `default`,
    turned off by `Connection: close` or on by `Connection: keep-alive`."""
    conn = headers.get("Connection")
    if conn is None:
        return default
    tokens = {t.strip().lower() for t in conn.split(",")}
    if "close" in tokens:
        return False
    return default or "keep-alive" in tokens


def encode_head(lines: list[str]) -> bytes:
    """A message head (start line, then "Name: value" lines) as bytes, with its blank line.
    Raises ValueError when any line holds a control character (CR and LF included: no
    header injection)."""
    if any(_CONTROL.search(line) for line in lines):
        raise ValueError("control character in a message head")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
