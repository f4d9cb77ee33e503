"""common.leanserver's sans-IO request parser and response serializer, without sockets."""

from __future__ import annotations

import pytest

from common.leanserver import (
    BadRequest,
    BodyTooLarge,
    HeadersTooLarge,
    RequestHead,
    RequestParser,
    Truncated,
    serialize_response,
    serialize_response_parts,
)

PUT = (
    b"PUT /sda/1/a/c/o%20x?q=1 HTTP/1.1\r\nHost: h\r\nX-Trans-Id: tx1\r\n"
    b"x-meta: caf\xc3\xa9\r\nContent-Length: 5\r\n\r\nhello"
)


def whole(parser: RequestParser) -> tuple[RequestHead, bytes] | None:
    head = parser.head()
    if head is None:
        return None
    body = parser.take_body(head)
    return None if body is None else (head, body)


def test_whole_request() -> None:
    p = RequestParser()
    p.feed(PUT)
    got = whole(p)
    assert got is not None
    head, body = got
    assert (head.method, head.target, head.path) == (
        "PUT",
        "/sda/1/a/c/o%20x?q=1",
        "/sda/1/a/c/o%20x",
    )
    assert head.version == (1, 1) and head.keep_alive and head.framed
    assert head.headers["x-trans-id"] == "tx1" and head.headers["X-Meta"] == "café"
    assert head.content_length == 5 and body == b"hello"
    assert p.buffered_bytes == 0 and p.pending() == b""


@pytest.mark.parametrize("cut", range(1, len(PUT)))
def test_split_at_every_byte(cut: int) -> None:
    p = RequestParser()
    p.feed(PUT[:cut])
    assert whole(p) is None
    assert p.pending() == PUT[:cut]
    p.feed(PUT[cut:])
    got = whole(p)
    assert got is not None and got[1] == b"hello" and got[0].headers["Host"] == "h"


def test_pipelined_requests_and_pending() -> None:
    second = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    p = RequestParser()
    p.feed(PUT + b"\r\n" + second + b"DEL")
    first = whole(p)
    assert first is not None and first[1] == b"hello"
    assert p.pending() == b"\r\n" + second + b"DEL"
    got = whole(p)
    assert got is not None and got[0].method == "GET" and got[1] == b""
    assert p.pending() == b"DEL" and p.head() is None


def test_head_is_not_consumed_until_the_body() -> None:
    p = RequestParser()
    p.feed(PUT[:-2])
    head = p.head()
    assert head is not None and p.head() is head
    assert p.take_body(head) is None
    assert p.pending() == PUT[:-2]  # everything kept for a hand-over


def test_transfer_encoding_is_not_framed() -> None:
    p = RequestParser()
    p.feed(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    head = p.head()
    assert head is not None and not head.framed


@pytest.mark.parametrize(
    ("conn", "version", "keep"),
    [
        (None, "1.1", True),
        ("close", "1.1", False),
        ("Keep-Alive, Close", "1.1", False),
        (None, "1.0", False),
        ("keep-alive", "1.0", True),
    ],
)
def test_keep_alive(conn: str | None, version: str, keep: bool) -> None:
    extra = f"Connection: {conn}\r\n" if conn else ""
    p = RequestParser()
    p.feed(f"GET / HTTP/{version}\r\n{extra}\r\n".encode())
    head = p.head()
    assert head is not None and head.keep_alive is keep


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /x\r\n\r\n",
        b"GET /x HTTP/2.0\r\n\r\n",
        b"GET  /x HTTP/1.1\r\n\r\n",
        b"G(T /x HTTP/1.1\r\n\r\n",
        b"GET /x\x01 HTTP/1.1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET /x HTTP/1.1\r\nBad Name: v\r\n\r\n",
        b"GET /x HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        b"GET /x HTTP/1.1\r\nA: b\nC: d\r\n\r\n",
        b"GET /x HTTP/1.1\r\nA: b\x00\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nContent-Length: \xd9\xa3\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nContent-Length: " + b"9" * 19 + b"\r\n\r\n",
    ],
)
def test_malformed_heads(raw: bytes) -> None:
    p = RequestParser()
    p.feed(raw)
    with pytest.raises(BadRequest):
        whole(p)


def test_bad_request_line_fails_before_the_head_ends() -> None:
    p = RequestParser()
    p.feed(b"NOT A REQUEST LINE AT ALL\r\nHost: x\r\n")
    with pytest.raises(BadRequest):
        p.head()


def test_header_limit() -> None:
    p = RequestParser(header_bytes_max=100)
    p.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 200)
    with pytest.raises(HeadersTooLarge) as e:
        p.head()
    assert e.value.status == 431
    q = RequestParser(header_bytes_max=100)
    q.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 90 + b"\r\n\r\n")
    with pytest.raises(HeadersTooLarge):
        q.head()


def test_body_limit() -> None:
    p = RequestParser(body_bytes_max=4)
    p.feed(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
    with pytest.raises(BodyTooLarge) as e:
        p.head()
    assert e.value.status == 413


def test_truncated_body_at_eof() -> None:
    p = RequestParser()
    p.feed(PUT[:-1])
    assert whole(p) is None
    with pytest.raises(Truncated):
        p.feed_eof()


def test_eof_between_requests_is_clean() -> None:
    p = RequestParser()
    p.feed(PUT + b"\r\n")
    assert whole(p) is not None
    p.feed_eof()


def test_serialize_response() -> None:
    data = serialize_response(
        201, [("ETag", "abc"), ("Content-Length", "99"), ("Date", "d")], b"xy", keep_alive=True
    )
    assert data == b"HTTP/1.1 201 Created\r\nETag: abc\r\nDate: d\r\nContent-Length: 2\r\n\r\nxy"
    closing = serialize_response(404, [], b"", keep_alive=False)
    assert closing.startswith(b"HTTP/1.1 404 Not Found\r\nDate: ")
    assert closing.endswith(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    no_body = serialize_response(204, [("Date", "d")], b"", keep_alive=True)
    assert no_body == b"HTTP/1.1 204 No Content\r\nDate: d\r\n\r\n"
    head = serialize_response(200, [("Date", "d")], b"abc", keep_alive=True, head_request=True)
    assert head == b"HTTP/1.1 200 OK\r\nDate: d\r\nContent-Length: 3\r\n\r\n"


def test_serialize_response_parts_sends_a_large_body_uncopied() -> None:
    """A body of 64 KiB or more follows the head as its own buffer (the very object given);
    a smaller one is joined to the head; either way the bytes are serialize_response's."""
    for size, joined in ((65535, True), (65536, False), (1 << 20, False)):
        body = bytes([size % 251]) * size
        parts = serialize_response_parts(200, [("Date", "d")], body, keep_alive=True)
        assert b"".join(parts) == serialize_response(200, [("Date", "d")], body, keep_alive=True)
        assert parts[0].startswith(b"HTTP/1.1 200 OK\r\nDate: d\r\n")
        if joined:
            assert len(parts) == 1
        else:
            assert len(parts) == 2 and parts[1] is body
    head = serialize_response_parts(200, [], b"x" * 65536, keep_alive=True, head_request=True)
    assert len(head) == 1 and head[0].endswith(b"Content-Length: 65536\r\n\r\n")


def test_serialize_head_answers() -> None:
    """A HEAD's answer sends the Content-Length a GET would get (given in the headers), and
    none when there is none, as aiohttp does."""
    given = [("Content-Length", "4096"), ("Date", "d")]
    head = serialize_response(200, given, b"", keep_alive=True, head_request=True)
    assert head == b"HTTP/1.1 200 OK\r\nDate: d\r\nContent-Length: 4096\r\n\r\n"
    none = serialize_response(404, [("Date", "d")], b"", keep_alive=True, head_request=True)
    assert none == b"HTTP/1.1 404 Not Found\r\nDate: d\r\n\r\n"
    # not a HEAD: the body's length, whatever the headers say
    get = serialize_response(200, given, b"", keep_alive=True)
    assert get == b"HTTP/1.1 200 OK\r\nDate: d\r\nContent-Length: 0\r\n\r\n"
    for bad in ("-1", "12a", "", "\u0661"):
        with pytest.raises(ValueError):
            serialize_response(
                200, [("Content-Length", bad)], b"", keep_alive=True, head_request=True
            )


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "a\rb", "a\x00"])
def test_serialize_refuses_control_characters(value: str) -> None:
    with pytest.raises(ValueError):
        serialize_response(200, [("X", value)], b"", keep_alive=True)


def test_serialize_keeps_utf8_metadata() -> None:
    p = RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nX-Object-Meta-A: \xff\xfe\r\n\r\n")
    head = p.head()
    assert head is not None
    value = head.headers["X-Object-Meta-A"]
    out = serialize_response(200, [("X-Object-Meta-A", value), ("Date", "d")], b"", keep_alive=True)
    assert b"X-Object-Meta-A: \xff\xfe\r\n" in out
