"""Sans-IO HTTP/1.1 for the server side: a request parser fed bytes, and a response serializer.

`RequestParser` keeps every byte it has not handed out yet, so a connection can give them,
untouched, to another HTTP implementation (aiohttp) when a request is not one it serves
(`pending()`). It frames only Content-Length bodies; a request with Transfer-Encoding is
parsed up to its head (`RequestHead.framed` is False) and its body left alone.

Checks: the request line (method token, a target without control characters or spaces,
HTTP/1.0 or HTTP/1.1), header lines (no folding, no bare CR or LF, no NUL, a token name),
Content-Length (digits only, repeated values equal, at most `body_bytes_max`), and the head's
size (`header_bytes_max`). Names and values are decoded as aiohttp decodes them (UTF-8 with
surrogateescape), so a handler sees what it would have seen behind aiohttp.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from multidict import CIMultiDict

from common.http11 import NOT_TARGET, content_length, encode_head, keep_alive
from common.leanserver._errors import BadRequest, BodyTooLarge, HeadersTooLarge, Truncated

__all__ = [
    "BODY_BYTES_MAX",
    "DIRECT_BODY_BYTES_MIN",
    "HEADER_BYTES_MAX",
    "RequestHead",
    "RequestParser",
    "serialize_response",
    "serialize_response_parts",
]

HEADER_BYTES_MAX = 64 * 1024
BODY_BYTES_MAX = 1024 * 1024
# Bodies at least this long are kept as the pieces they arrive in once their head is parsed
# and joined once when whole: appending every piece to the buffer and copying the body out
# of it would copy each byte twice (a 1 MiB body: ~0.3 ms more CPU per request, measured).
BODY_PIECES_BYTES_MIN = 64 * 1024
# A body at least this long that the protocol asks to receive directly (`receive_direct`) is
# read by the socket straight into one buffer of its length: no copy in user space at all.
DIRECT_BODY_BYTES_MIN = 128 * 1024
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSIONS = {"HTTP/1.1": (1, 1), "HTTP/1.0": (1, 0)}


@dataclass(slots=True)
class RequestHead:
    """One request's line and headers.

    `target` is raw (percent-encoded, query included); `path` is the target up to any "?".
    `content_length` is 0 when absent. `framed`: the body is delimited by Content-Length (or
    absent), so the parser can take it; False with Transfer-Encoding. `keep_alive`: the
    connection may carry another request after this one. `head_bytes`: the size of the line
    and headers with their final blank line.
    """

    method: str
    target: str
    path: str
    version: tuple[int, int]
    headers: CIMultiDict[str]
    content_length: int
    framed: bool
    keep_alive: bool
    head_bytes: int


class RequestParser:
    """Requests from one connection, one after another: `feed` bytes, then `head()` for the
    next request's head (None until it is whole) and `take_body(head)` for its body (None
    until it is whole; it also consumes the head). `feed_eof` when the peer closed."""

    def __init__(
        self, *, header_bytes_max: int = HEADER_BYTES_MAX, body_bytes_max: int = BODY_BYTES_MAX
    ) -> None:
        assert header_bytes_max > 0 and body_bytes_max >= 0
        self.header_bytes_max = header_bytes_max
        self.body_bytes_max = body_bytes_max
        self._buf = bytearray()
        self._head: RequestHead | None = None
        # The bytes received after `_buf` while a large body arrives (None otherwise).
        self._pieces: list[bytes] | None = None
        self._pieces_bytes = 0
        # The current request's body while it is received directly (`receive_direct`): the
        # buffer of its whole length and how much of it has arrived.
        self._direct: bytearray | None = None
        self._direct_filled = 0

    def feed(self, data: bytes) -> None:
        direct = self._direct
        if direct is not None:  # the body's missing bytes first, the rest is what follows it
            n = min(len(direct) - self._direct_filled, len(data))
            with memoryview(data) as view:
                direct[self._direct_filled : self._direct_filled + n] = view[:n]
                self._buf += view[n:]
            self._direct_filled += n
        elif self._pieces is not None:
            self._pieces.append(data)
            self._pieces_bytes += len(data)
        else:
            self._buf += data

    def pending(self) -> bytes:
        """Every byte received and not yet handed out as a request (head and body). Not
        available while a body is received directly (its head is no longer kept)."""
        assert self._direct is None, "a body is being received directly"
        if self._pieces:
            return b"".join((self._buf, *self._pieces))
        return bytes(self._buf)

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) + self._pieces_bytes + self._direct_filled

    # -- receiving a body directly -----------------------------------------------------
    def receive_direct(self, head: RequestHead, buffer: bytearray | None = None) -> None:
        """From now on, the rest of the current request's (incomplete) body goes straight
        into one buffer of its length: `direct_buffer` is where the next bytes belong,
        `direct_received(n)` says that `n` of them arrived there. `take_body_parts` then
        returns (a view of) that buffer as the body's only part. What was buffered of the
        body is copied in once; `feed` keeps working (it fills the buffer first).

        `buffer`: the buffer to use, exactly the body's length (common/leanserver/_bodies.py);
        its old bytes are all overwritten before the body is handed out. A new one if None."""
        assert head is self._head and head.framed and self._direct is None
        start = head.head_bytes
        have = len(self._buf) + self._pieces_bytes
        assert have < start + head.content_length, "the body is whole already"
        if buffer is None:
            body = bytearray(head.content_length)
        else:
            assert len(buffer) == head.content_length, "a buffer of the body's length"
            body = buffer
        pos = len(self._buf) - start
        body[:pos] = memoryview(self._buf)[start:]
        for piece in self._pieces or ():
            body[pos : pos + len(piece)] = piece
            pos += len(piece)
        self._buf = bytearray()
        self._pieces, self._pieces_bytes = None, 0
        self._direct, self._direct_filled = body, pos

    @property
    def receiving_direct(self) -> bool:
        return self._direct is not None

    def direct_buffer(self) -> memoryview | None:
        """Where the body's next bytes belong while it is received directly (never empty),
        else None."""
        direct = self._direct
        if direct is None or self._direct_filled == len(direct):
            return None
        return memoryview(direct)[self._direct_filled :]

    def direct_received(self, n: int) -> None:
        """`n` bytes were written at the start of the last `direct_buffer`."""
        assert self._direct is not None and 0 <= n <= len(self._direct) - self._direct_filled
        self._direct_filled += n

    def _take_direct(self) -> bytearray | None:
        direct = self._direct
        assert direct is not None
        if self._direct_filled < len(direct):
            return None
        self._direct, self._direct_filled, self._head = None, 0, None
        return direct

    def head(self) -> RequestHead | None:
        """The next request's head once it is whole (not consumed); raises a LeanServerError
        for what cannot be a request."""
        if self._head is not None:
            return self._head
        buf = self._buf
        # A client may send blank lines between requests (RFC 9112 2.2): skip them.
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n", 0, self.header_bytes_max + 1)
        if end < 0:
            if len(buf) > self.header_bytes_max:
                raise HeadersTooLarge(f"request head longer than {self.header_bytes_max} bytes")
            first = buf.find(b"\r\n")
            if first >= 0:
                self._request_line(bytes(buf[:first]))  # fail early on a bad line
            return None
        if end + 4 > self.header_bytes_max:
            raise HeadersTooLarge(f"request head longer than {self.header_bytes_max} bytes")
        self._head = head = self._parse(bytes(buf[:end]), end + 4)
        if head.framed and head.content_length >= BODY_PIECES_BYTES_MIN:
            self._pieces = []
        return head

    def take_body(self, head: RequestHead) -> bytes | None:
        """The body of `head` (the current request) once it is whole; the request is then
        consumed and the parser moves on to the next one."""
        assert head is self._head and head.framed
        if self._direct is not None:
            direct = self._take_direct()
            return None if direct is None else bytes(direct)
        buf = self._buf
        start = head.head_bytes
        end = start + head.content_length
        if len(buf) + self._pieces_bytes < end:
            return None
        if self._pieces is not None:
            return self._join_body(start, end)
        with memoryview(buf) as view:
            body = bytes(view[start:end])
        del buf[:end]
        self._head = None
        return body

    def take_body_parts(self, head: RequestHead) -> list[memoryview] | None:
        """`take_body`, with the body as views of the pieces it arrived in (not copied: a
        handler that can use a body in parts, e.g. writes it with one writev)."""
        assert head is self._head and head.framed
        if self._direct is not None:
            direct = self._take_direct()
            return None if direct is None else [memoryview(direct)]
        start = head.head_bytes
        end = start + head.content_length
        if len(self._buf) + self._pieces_bytes < end:
            return None
        pieces = self._pieces
        if not pieces:  # the whole body came with its head: as one part
            body = self.take_body(head)
            assert body is not None
            return [memoryview(body)]
        excess = self._excess(end)
        if excess > len(pieces[-1]):
            body = self._join_body(start, end)
            return [memoryview(body)]
        self._pieces, self._pieces_bytes, self._head = None, 0, None
        # The first part is a view of the old buffer, which is never written again: the
        # parser carries on with a new one.
        first = memoryview(self._buf)[start:]
        last = memoryview(pieces[-1])
        self._buf = bytearray(last[len(last) - excess :])
        parts = [first, *(memoryview(p) for p in pieces[:-1]), last[: len(last) - excess]]
        return [p for p in parts if len(p)]

    def _excess(self, end: int) -> int:
        """The bytes received past `end` (the start of the next request)."""
        return len(self._buf) + self._pieces_bytes - end

    def _join_body(self, start: int, end: int) -> bytes:
        """The body from its part in `_buf` and the pieces after it, copied once; any bytes
        past its end (the next request) become the new buffer."""
        assert self._pieces is not None
        excess = self._excess(end)
        pieces, self._pieces = self._pieces, None
        self._pieces_bytes = 0
        self._head = None
        if not pieces or excess > len(pieces[-1]):
            # The body ends in `_buf` or before the last piece (pieces kept arriving while
            # the peer was not reading its answers): one join of everything, then the cut.
            joined = b"".join((self._buf, *pieces))
            self._buf = bytearray(memoryview(joined)[end:])
            return joined[start:end]
        last = memoryview(pieces[-1])
        with memoryview(self._buf) as view:
            body = b"".join((view[start:], *pieces[:-1], last[: len(last) - excess]))
        self._buf = bytearray(last[len(last) - excess :])
        return body

    def feed_eof(self) -> None:
        """The peer closed: raises Truncated if part of a request had arrived."""
        if self._buf.strip(b"\r\n"):
            raise Truncated("connection closed in the middle of a request")

    # -- the head ----------------------------------------------------------------------
    def _request_line(self, line: bytes) -> tuple[str, str, tuple[int, int]]:
        return _request_line(line.decode("utf-8", "surrogateescape"))

    def _parse(self, head: bytes, head_bytes: int) -> RequestHead:
        lines_n = head.count(b"\r\n") + 1
        if head.count(b"\n") != lines_n - 1 or head.count(b"\r") != lines_n - 1:
            raise BadRequest("bare CR or LF in the request head")
        if b"\x00" in head:
            raise BadRequest("NUL in the request head")
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        method, target, version = _request_line(lines[0])
        pairs: list[tuple[str, str]] = []
        names: list[str] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name:
                raise BadRequest(f"malformed header line {line[:80]!r}")
            names.append(name)
            pairs.append((name, value.strip(" \t")))
        # (one match for every name: a token each, joined, is a token)
        if names and not _TOKEN.fullmatch("".join(names)):
            bad = next(n for n in names if not _TOKEN.fullmatch(n))
            raise BadRequest(f"malformed header name {bad[:80]!r}")
        headers: CIMultiDict[str] = CIMultiDict(pairs)
        framed = "Transfer-Encoding" not in headers
        length = _request_content_length(headers, self.body_bytes_max) if framed else 0
        path = target.partition("?")[0]
        return RequestHead(
            method,
            target,
            path,
            version,
            headers,
            length,
            framed,
            keep_alive(headers, version == (1, 1)),
            head_bytes,
        )


def _request_line(line: str) -> tuple[str, str, tuple[int, int]]:
    parts = line.split(" ")
    if len(parts) != 3:
        raise BadRequest(f"bad request line {line[:80]!r}")
    method, target, raw_version = parts
    version = _VERSIONS.get(raw_version)
    if version is None:
        raise BadRequest(f"unsupported HTTP version {raw_version[:20]!r}")
    if not _TOKEN.fullmatch(method):
        raise BadRequest(f"bad method {method[:20]!r}")
    if not target or NOT_TARGET.search(target):
        raise BadRequest(f"bad request target {target[:80]!r}")
    return method, target, version


def _request_content_length(headers: CIMultiDict[str], body_bytes_max: int) -> int:
    values = headers.getall("Content-Length", None)
    if values is None:
        return 0
    length = content_length(values)
    if length is None:
        raise BadRequest(f"bad Content-Length {values!r:.80}")
    if length > body_bytes_max:
        raise BodyTooLarge(f"Content-Length {length} is more than {body_bytes_max} bytes")
    return length


# -- responses ---------------------------------------------------------------------------
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


class _DateCache:
    """The Date header's value, formatted at most once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self.second:
            self.second = second
            self.value = formatdate(t, usegmt=True)
        return self.value


_date = _DateCache()


def serialize_response(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
    head_request: bool = False,
) -> bytes:
    """`serialize_response_parts` as one bytes object."""
    parts = serialize_response_parts(
        status, headers, body, keep_alive=keep_alive, head_request=head_request
    )
    return parts[0] if len(parts) == 1 else b"".join(parts)


# A body at least this long is sent after the head as a buffer of its own (writelines), not
# copied behind it (a 1 MiB object GET's answer).
JOIN_BODY_BYTES_MAX = 64 * 1024


def serialize_response_parts(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
    head_request: bool = False,
) -> list[bytes]:
    """One HTTP/1.1 response as the buffers to write in order: the head with a body shorter
    than JOIN_BODY_BYTES_MAX joined to it, or the head and then the body (not copied).

    Content-Length comes from `body` (Content-Length, Transfer-Encoding and Connection in
    `headers` are replaced); a Date header is added when `headers` has none. Control
    characters in a header raise ValueError (no injection).
    `head_request`: the answer to a HEAD keeps its Content-Length but sends no body; with an
    empty `body`, a Content-Length in `headers` (the length a GET would get; ASCII digits, else
    ValueError) is sent as it is, and none is sent when `headers` has none (as aiohttp
    answers a HEAD with an empty body)."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    has_date = False
    length: int | None = None if head_request and not body else len(body)
    for name, value in headers:
        low = name.lower()
        if low in _FRAMING:
            if head_request and not body and low == "content-length":
                length = _head_length(value)
            continue
        if low == "date":
            has_date = True
        lines.append(f"{name}: {value}")
    if not has_date:
        lines.append(f"Date: {_date.now()}")
    if length is not None and status >= 200 and status not in (204, 304):
        lines.append(f"Content-Length: {length}")
    if not keep_alive:
        lines.append("Connection: close")
    head = encode_head(lines)  # ValueError on a control character in a header
    if head_request or not body or status in (204, 304):
        return [head]
    if len(body) < JOIN_BODY_BYTES_MAX:
        return [head + body]
    return [head, body]


def _head_length(value: str) -> int:
    length = content_length([value])
    if length is None:
        raise ValueError(f"bad Content-Length {value!r:.40} for a HEAD answer")
    return length
