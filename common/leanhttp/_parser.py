"""Sans-IO HTTP/1.1 for the client side: a response parser fed bytes, and a request serializer.

The parser is written for the answers of our own storage servers (aiohttp): simple framing,
small heads. It still checks every byte it relies on and refuses what it cannot frame safely
(both Content-Length and Transfer-Encoding, a Transfer-Encoding other than chunked, folded
or malformed header lines, bytes after the end of a response) with a `ProtocolError`, and it
enforces two limits: `header_bytes_max` (status line and headers, and chunked trailers) and
`body_bytes_max`. Header names and values are decoded as aiohttp does (UTF-8 with
surrogateescape), so values pass through the proxy byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from multidict import CIMultiDict

from common.http11 import NOT_TARGET, content_length, encode_head, keep_alive
from common.leanhttp._errors import (
    BodyTooLarge,
    ConnectionClosed,
    HeadersTooLarge,
    InvalidRequest,
    ProtocolError,
)

__all__ = [
    "BODY_BYTES_MAX",
    "HEADER_BYTES_MAX",
    "JOIN_BODY_BYTES_MAX",
    "Body",
    "Response",
    "ResponseParser",
    "serialize_request",
    "serialize_request_parts",
]

HEADER_BYTES_MAX = 128 * 1024
BODY_BYTES_MAX = 64 * 1024 * 1024
_CHUNK_LINE_BYTES_MAX = 1024
_HEX = frozenset(b"0123456789abcdefABCDEF")
_VERSIONS = {"HTTP/1.1": True, "HTTP/1.0": False}  # version -> keep-alive by default

# States of ResponseParser.
_HEAD = 0
_BODY_LENGTH = 1
_BODY_CLOSE = 2
_CHUNK_SIZE = 3
_CHUNK_DATA = 4
_CHUNK_END = 5
_TRAILERS = 6
_DONE = 7
_ERROR = 8


@dataclass(slots=True)
class Response:
    """One whole response. `keep_alive`: the connection may carry the next request."""

    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes
    keep_alive: bool


class ResponseParser:
    """Parses the one response to one request: `feed` bytes as they arrive until it returns
    the `Response`; `feed_eof` when the peer closed the connection.

    `head_request`: the request was a HEAD, so the response has no body whatever its
    Content-Length says. Interim 1xx responses (100 Continue) are skipped.
    """

    def __init__(
        self,
        *,
        head_request: bool = False,
        header_bytes_max: int = HEADER_BYTES_MAX,
        body_bytes_max: int = BODY_BYTES_MAX,
    ) -> None:
        assert header_bytes_max > 0 and body_bytes_max >= 0
        self.head_request = head_request
        self.header_bytes_max = header_bytes_max
        self.body_bytes_max = body_bytes_max
        self.started = False  # some byte of the response has arrived
        self._state = _HEAD
        self._buf = bytearray()
        self._status = 0
        self._reason = ""
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._keep_alive = True
        self._remaining = 0  # of the body (Content-Length) or of the current chunk
        self._chunks: list[bytes] = []
        self._length_parts: list[bytes] = []  # of a Content-Length body, as they arrived
        self._length_bytes = 0
        self._body_bytes = 0
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> Response | None:
        """Take more bytes; the response once it is complete, else None."""
        if self._state >= _DONE:
            if not data:
                return None
            self._state = _ERROR
            raise ProtocolError("bytes after the end of the response")
        try:
            if data:
                self.started = True
                if self._state == _HEAD and not self._buf:
                    return self._feed_fresh(data)
                if self._state == _BODY_LENGTH:
                    return self._feed_length_body(data)
                self._buf += data
            return self._advance()
        except ProtocolError:
            self._state = _ERROR
            raise

    def _feed_fresh(self, data: bytes) -> Response | None:
        """The common case: a head (and often the whole response) in the first bytes; parsed
        from `data` itself rather than through the buffer."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or end + 4 > self.header_bytes_max:
            self._buf += data
            return self._advance()
        self._parse_head(data[:end])
        rest = data[end + 4 :]
        if self._state == _BODY_LENGTH:
            return self._feed_length_body(rest)
        self._buf += rest
        return self._advance()

    def feed_eof(self) -> Response:
        """The peer closed the connection: the response, if the close is what ends its body,
        else `ConnectionClosed`."""
        if self._state == _BODY_CLOSE:
            self._state = _DONE
            body = bytes(self._buf)
            self._buf.clear()
            return self._finish(body, keep_alive=False)
        if self._state == _DONE:
            raise ProtocolError("feed_eof after the end of the response")
        self._state = _ERROR
        if not self.started:
            raise ConnectionClosed("connection closed before any response", before_response=True)
        raise ConnectionClosed(
            "connection closed in the middle of a response", before_response=False
        )

    # -- states --------------------------------------------------------------------------
    def _advance(self) -> Response | None:
        while True:
            state = self._state
            if state == _HEAD:
                if not self._take_head():
                    return None
            elif state == _BODY_LENGTH:
                return self._take_length_body()
            elif state == _BODY_CLOSE:
                if len(self._buf) > self.body_bytes_max:
                    raise BodyTooLarge(f"body longer than {self.body_bytes_max} bytes")
                return None
            elif state == _CHUNK_SIZE:
                if not self._take_chunk_size():
                    return None
            elif state == _CHUNK_DATA:
                if not self._take_chunk_data():
                    return None
            elif state == _CHUNK_END:
                if len(self._buf) < 2:
                    return None
                if self._buf[:2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                del self._buf[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                progress = self._take_trailer_line()
                if progress is False:
                    return None
                if progress is not True:
                    return progress
            else:  # pragma: no cover - _DONE and _ERROR return before the loop
                raise AssertionError(f"parser state {state}")

    def _take_head(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.header_bytes_max:
                raise HeadersTooLarge(f"response head longer than {self.header_bytes_max} bytes")
            if len(buf) >= 5 and buf[:5] != b"HTTP/":
                raise ProtocolError("response does not start with an HTTP status line")
            return False
        if end + 4 > self.header_bytes_max:
            raise HeadersTooLarge(f"response head longer than {self.header_bytes_max} bytes")
        head = bytes(buf[:end])
        del buf[: end + 4]
        self._parse_head(head)
        return True

    def _take_length_body(self) -> Response | None:
        """The body's first bytes came in with the head, through the buffer."""
        buf = self._buf
        data = bytes(buf)
        buf.clear()
        return self._feed_length_body(data)

    def _feed_length_body(self, data: bytes) -> Response | None:
        """A Content-Length body is kept as the pieces it arrives in and joined once at its
        end: one copy of a large body (growing a buffer and copying it out made two, plus
        the growth's, ~1 ms per MiB)."""
        if data:
            self._length_parts.append(data if type(data) is bytes else bytes(data))
            self._length_bytes += len(data)
        n = self._length_bytes
        if n < self._remaining:
            return None
        if n > self._remaining:
            raise ProtocolError("bytes after the end of the response body")
        parts = self._length_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._length_parts = []
        return self._finish(body, self._keep_alive)

    def _take_chunk_size(self) -> bool:
        buf = self._buf
        i = buf.find(b"\r\n")
        if i < 0:
            if len(buf) > _CHUNK_LINE_BYTES_MAX:
                raise ProtocolError("chunk size line too long")
            return False
        if i > _CHUNK_LINE_BYTES_MAX:
            raise ProtocolError("chunk size line too long")
        size_hex = bytes(buf[:i]).split(b";", 1)[0].rstrip(b" \t")
        del buf[: i + 2]
        if not size_hex or len(size_hex) > 16 or not all(c in _HEX for c in size_hex):
            raise ProtocolError(f"bad chunk size {size_hex[:20]!r}")
        size = int(size_hex, 16)
        if size == 0:
            self._state = _TRAILERS
            return True
        if self._body_bytes + size > self.body_bytes_max:
            raise BodyTooLarge(f"chunked body longer than {self.body_bytes_max} bytes")
        self._body_bytes += size
        self._remaining = size
        self._state = _CHUNK_DATA
        return True

    def _take_chunk_data(self) -> bool:
        buf = self._buf
        n = min(len(buf), self._remaining)
        if n == 0:
            return False
        self._chunks.append(bytes(buf[:n]))
        del buf[:n]
        self._remaining -= n
        if self._remaining == 0:
            self._state = _CHUNK_END
        return True

    def _take_trailer_line(self) -> Response | bool:
        """One trailer line (True), the end of the response, or False: more bytes needed.
        Trailers are checked for size and form, then dropped (nothing here uses them)."""
        buf = self._buf
        i = buf.find(b"\r\n")
        if i < 0:
            if self._trailer_bytes + len(buf) > self.header_bytes_max:
                raise HeadersTooLarge(f"trailers longer than {self.header_bytes_max} bytes")
            return False
        line = bytes(buf[:i])
        del buf[: i + 2]
        if not line:
            if buf:
                raise ProtocolError("bytes after the end of the response")
            return self._finish(b"".join(self._chunks), self._keep_alive)
        self._trailer_bytes += i + 2
        if self._trailer_bytes > self.header_bytes_max:
            raise HeadersTooLarge(f"trailers longer than {self.header_bytes_max} bytes")
        name, sep, _value = line.partition(b":")
        if not sep or not name or name[0] in b" \t" or name[-1] in b" \t":
            raise ProtocolError("malformed trailer line")
        return True

    def _finish(self, body: bytes, keep_alive: bool) -> Response:
        self._state = _DONE
        return Response(self._status, self._reason, self._headers, body, keep_alive)

    # -- the head ----------------------------------------------------------------------
    def _parse_head(self, head: bytes) -> None:
        lines_n = head.count(b"\r\n") + 1
        if head.count(b"\n") != lines_n - 1 or head.count(b"\r") != lines_n - 1:
            raise ProtocolError("bare CR or LF in the response head")
        if b"\x00" in head:
            raise ProtocolError("NUL in the response head")
        # One decode for the whole head: UTF-8 resynchronises at every ASCII byte, so this is
        # what decoding each name and value apart would give.
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        parts = lines[0].split(" ", 2)
        default_keep_alive = _VERSIONS.get(parts[0])
        code = parts[1] if len(parts) > 1 else ""
        if default_keep_alive is None or len(code) != 3 or not code.isdigit() or not code.isascii():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(code)
        if status < 100:
            raise ProtocolError(f"bad status code {status}")
        pairs: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name[0] in " \t" or name[-1] in " \t":
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            pairs.append((name, value.strip(" \t")))
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("101 Switching Protocols is not supported")
            return  # interim: the final response follows; _state stays _HEAD
        headers = CIMultiDict(pairs)
        self._status = status
        self._reason = parts[2] if len(parts) > 2 else ""
        self._headers = headers
        self._keep_alive = keep_alive(headers, default_keep_alive)
        self._frame(headers, status)

    def _frame(self, headers: CIMultiDict[str], status: int) -> None:
        """Choose how the body ends: no body, Content-Length, chunked or connection close."""
        te = headers.getall("Transfer-Encoding", None)
        cl = headers.getall("Content-Length", None)
        if self.head_request or status in (204, 304):
            self._remaining = 0
            self._state = _BODY_LENGTH
            return
        if te is not None:
            if cl is not None:
                raise ProtocolError("both Content-Length and Transfer-Encoding")
            if len(te) != 1 or te[0].strip().lower() != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {te!r:.80}")
            self._state = _CHUNK_SIZE
            return
        if cl is not None:
            length = content_length(cl)
            if length is None:
                raise ProtocolError(f"bad Content-Length {cl!r:.80}")
            if length > self.body_bytes_max:
                raise BodyTooLarge(f"Content-Length {length} > {self.body_bytes_max} bytes")
            self._remaining = length
            self._state = _BODY_LENGTH
            return
        self._keep_alive = False
        self._state = _BODY_CLOSE


_SKIPPED = frozenset({"content-length", "transfer-encoding"})


# Bodies from this size on are written after the head as they are, not joined to it (a
# copy of the whole body per request, per replica).
JOIN_BODY_BYTES_MAX = 64 * 1024

Body = bytes | Sequence[bytes | memoryview]


def serialize_request(
    method: str,
    target: str,
    host: str,
    headers: Iterable[tuple[str, str]],
    body: Body | None = None,
) -> bytes:
    """One HTTP/1.1 request as bytes: `target` is the path (and query) already percent-
    encoded; `host` the Host header unless `headers` has one. Content-Length comes from
    `body` (bytes, or a sequence of parts sent one after another; also 0 for a body-less
    PUT or POST); any Content-Length or Transfer-Encoding in `headers` is dropped. Control
    characters anywhere raise `InvalidRequest`."""
    return b"".join(serialize_request_parts(method, target, host, headers, body))


def serialize_request_parts(
    method: str,
    target: str,
    host: str,
    headers: Iterable[tuple[str, str]],
    body: Body | None = None,
) -> list[bytes | memoryview]:
    """`serialize_request` as buffers to write in order, without copying the body: the head
    with a small body joined to it, or the head followed by the body's parts."""
    parts: Sequence[bytes | memoryview]
    if body is None:
        parts, length = (), None
    elif isinstance(body, bytes):
        parts, length = (body,), len(body)
    else:
        parts = body
        length = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    head = _request_head(method, target, host, headers, length)
    if length is None or length == 0:
        return [head]
    if length < JOIN_BODY_BYTES_MAX:
        return [b"".join((head, *parts))]
    return [head, *parts]


def _request_head(
    method: str,
    target: str,
    host: str,
    headers: Iterable[tuple[str, str]],
    length: int | None,
) -> bytes:
    if not method.isalpha() or not method.isascii():
        raise InvalidRequest(f"bad method {method[:20]!r}")
    if not target or NOT_TARGET.search(target):
        raise InvalidRequest(f"bad request target {target[:80]!r}")
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = False
    for name, value in headers:
        lname = name.lower()
        if lname in _SKIPPED:
            continue
        if lname == "host":
            has_host = True
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.append(f"Host: {host}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    elif method in ("PUT", "POST", "PATCH"):
        lines.append("Content-Length: 0")
    try:
        return encode_head(lines)
    except ValueError:
        raise InvalidRequest("control character in a request header") from None
