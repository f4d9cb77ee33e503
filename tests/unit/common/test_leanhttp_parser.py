"""common.leanhttp's sans-IO parts, without sockets: each response whole, split at every byte
boundary, and with bad bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.leanhttp import (
    BodyTooLarge,
    ConnectionClosed,
    HeadersTooLarge,
    InvalidRequest,
    LeanHTTPError,
    ProtocolError,
    Response,
    ResponseParser,
    serialize_request,
    serialize_request_parts,
)

SIMPLE = (
    b"HTTP/1.1 201 Created\r\nEtag: abc\r\nX-Meta: one\r\nx-meta: two\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
)


def parse_whole(data: bytes, **kw: object) -> Response:
    p = ResponseParser(**kw)  # type: ignore[arg-type]
    r = p.feed(data)
    assert r is not None
    return r


def parse_split(data: bytes, at: int, **kw: object) -> Response:
    p = ResponseParser(**kw)  # type: ignore[arg-type]
    first = p.feed(data[:at])
    second = p.feed(data[at:])
    r = first or second
    assert r is not None and (first is None or not data[at:])
    return r


def parse_bytewise(data: bytes, **kw: object) -> Response:
    p = ResponseParser(**kw)  # type: ignore[arg-type]
    got = [r for i in range(len(data)) if (r := p.feed(data[i : i + 1])) is not None]
    assert len(got) == 1
    return got[0]


def test_simple_response() -> None:
    r = parse_whole(SIMPLE)
    assert (r.status, r.reason, r.body, r.keep_alive) == (201, "Created", b"hello", True)
    assert r.headers["etag"] == "abc"
    assert r.headers.getall("X-META") == ["one", "two"]


@pytest.mark.parametrize("data", [SIMPLE, CHUNKED])
def test_split_at_every_byte_boundary(data: bytes) -> None:
    whole = parse_whole(data)
    for at in range(len(data) + 1):
        r = parse_split(data, at)
        assert (r.status, r.body, list(r.headers.items())) == (
            whole.status,
            whole.body,
            list(whole.headers.items()),
        )
    assert parse_bytewise(data).body == whole.body


def test_chunked_body_and_trailers_dropped() -> None:
    r = parse_whole(CHUNKED)
    assert r.body == b"hello world"
    assert "X-Trailer" not in r.headers
    assert r.keep_alive


def test_head_and_no_body_statuses() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n"
    r = parse_whole(head, head_request=True)
    assert (r.status, r.body, r.keep_alive) == (200, b"", True)
    for status in (204, 304):
        r = parse_whole(f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n".encode())
        assert (r.status, r.body) == (status, b"")
    # Not a HEAD: the same bytes wait for the body.
    assert ResponseParser().feed(head) is None


def test_interim_100_is_skipped() -> None:
    r = parse_whole(b"HTTP/1.1 100 Continue\r\n\r\n" + SIMPLE)
    assert (r.status, r.body) == (201, b"hello")


def test_keep_alive_rules() -> None:
    assert not parse_whole(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ).keep_alive
    assert not parse_whole(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert parse_whole(
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
    ).keep_alive


def test_body_until_close() -> None:
    p = ResponseParser()
    assert p.feed(b"HTTP/1.1 200 OK\r\n\r\nsome") is None
    assert p.feed(b" body") is None
    r = p.feed_eof()
    assert (r.body, r.keep_alive) == (b"some body", False)


def test_truncated_body_and_early_close() -> None:
    p = ResponseParser()
    assert p.feed(SIMPLE[:-2]) is None
    with pytest.raises(ConnectionClosed) as e:
        p.feed_eof()
    assert not e.value.before_response
    with pytest.raises(ConnectionClosed) as e:
        ResponseParser().feed_eof()
    assert e.value.before_response
    p = ResponseParser()
    p.feed(CHUNKED[:-4])
    with pytest.raises(ConnectionClosed):
        p.feed_eof()


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"SMTP ready, not HTTP at all\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nName : space before colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\r\n folded: line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: bare\nLF: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: nul\x00\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc",  # bytes after the body
    ],
)
def test_malformed_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(data)


def test_bytes_after_a_complete_response() -> None:
    p = ResponseParser()
    assert p.feed(SIMPLE) is not None
    with pytest.raises(ProtocolError):
        p.feed(b"HTTP/1.1 200 OK\r\n")


def test_error_state_is_terminal() -> None:
    p = ResponseParser()
    with pytest.raises(ProtocolError):
        p.feed(b"HTTP/9 200\r\n\r\n")
    with pytest.raises(ProtocolError):
        p.feed(SIMPLE)


def test_header_limit() -> None:
    big = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200 + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(HeadersTooLarge):
        ResponseParser(header_bytes_max=100).feed(big)
    p = ResponseParser(header_bytes_max=100)
    with pytest.raises(HeadersTooLarge):  # no terminator yet, but already too long
        for i in range(0, 150, 10):
            p.feed(big[i : i + 10])
    assert parse_whole(big, header_bytes_max=len(big)).status == 200


def test_body_limit() -> None:
    with pytest.raises(BodyTooLarge):
        ResponseParser(body_bytes_max=4).feed(SIMPLE)
    with pytest.raises(BodyTooLarge):
        ResponseParser(body_bytes_max=8).feed(CHUNKED)
    p = ResponseParser(body_bytes_max=4)
    p.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    with pytest.raises(BodyTooLarge):
        p.feed(b"12345")
    assert parse_whole(SIMPLE, body_bytes_max=5).body == b"hello"


def test_non_ascii_header_values_round_trip_as_utf8() -> None:
    value = "caf\u00e9 \u2603"
    r = parse_whole(
        b"HTTP/1.1 200 OK\r\nX-Object-Meta-A: " + value.encode() + b"\r\n\r\n", head_request=True
    )
    assert r.headers["X-Object-Meta-A"] == value


def test_serialize_request() -> None:
    data = serialize_request(
        "PUT",
        "/sda/1/a/c/o%20x",
        "127.0.0.1:6200",
        [("X-Trans-Id", "tx"), ("Content-Length", "9")],
        b"body",
    )
    assert data == (
        b"PUT /sda/1/a/c/o%20x HTTP/1.1\r\nX-Trans-Id: tx\r\nHost: 127.0.0.1:6200\r\n"
        b"Content-Length: 4\r\n\r\nbody"
    )
    head = serialize_request("HEAD", "/x", "h:1", [("host", "other")])
    assert head == b"HEAD /x HTTP/1.1\r\nhost: other\r\n\r\n"
    assert b"Content-Length: 0\r\n" in serialize_request("POST", "/x", "h:1", [])
    assert "caf\u00e9".encode() in serialize_request("GET", "/", "h:1", [("X-M", "caf\u00e9")])


def test_request_parts_join_a_small_body_and_leave_a_large_one_uncopied() -> None:
    small = serialize_request_parts("PUT", "/x", "h:1", [], [b"ab", memoryview(b"cd")])
    assert small == [b"PUT /x HTTP/1.1\r\nHost: h:1\r\nContent-Length: 4\r\n\r\nabcd"]
    big = bytes(range(256)) * 512  # 128 KiB
    tail = b"T" * 56
    parts = serialize_request_parts("PUT", "/x", "h:1", [("Content-Length", "1")], (big, tail))
    assert len(parts) == 3 and parts[1] is big and parts[2] is tail
    assert bytes(parts[0]).endswith(f"Content-Length: {len(big) + 56}\r\n\r\n".encode())
    assert b"".join(parts) == serialize_request("PUT", "/x", "h:1", [], big + tail)
    assert serialize_request_parts("GET", "/x", "h:1", []) == [
        b"GET /x HTTP/1.1\r\nHost: h:1\r\n\r\n"
    ]


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/a b", []),
        ("GET", "/a\r\nX: y", []),
        ("GE T", "/", []),
        ("GET", "/", [("X-A", "v\r\nInjected: 1")]),
        ("GET", "/", [("X-A", "v\nInjected: 1")]),
        ("GET", "/", [("X-A\r\n", "v")]),
        ("GET", "/", [("X-A", "nul\x00")]),
    ],
)
def test_serialize_refuses_control_characters(
    method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidRequest):
        serialize_request(method, target, "h:1", headers)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([SIMPLE, CHUNKED]),
    cut=st.integers(min_value=0, max_value=200),
    junk=st.binary(max_size=12),
    split=st.integers(min_value=0, max_value=200),
)
def test_mangled_input_parses_or_raises_a_lean_error(
    base: bytes, cut: int, junk: bytes, split: int
) -> None:
    """Whatever the bytes: a response, a wait for more, or a LeanHTTPError; nothing else."""
    data = base[:cut] + junk + base[cut + len(junk) :]
    p = ResponseParser(header_bytes_max=256, body_bytes_max=64)
    try:
        p.feed(data[:split])
        p.feed(data[split:])
        p.feed_eof()
    except LeanHTTPError:
        pass
