"""Range header parsing and multipart/byteranges framing, without sockets."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from objectd.ranges import (
    RANGES_MAX,
    ByteRange,
    MultipartPlan,
    Unsatisfiable,
    parse_range_header,
    resolve_ranges,
)


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        ("bytes=0-0", 10, [(0, 0)]),
        ("bytes=0-", 10, [(0, 9)]),
        ("bytes=3-100", 10, [(3, 9)]),
        ("bytes=-3", 10, [(7, 9)]),
        ("bytes=-100", 10, [(0, 9)]),
        ("bytes=1-2, 4-5", 10, [(1, 2), (4, 5)]),
        ("BYTES = 1-2 ,", 10, [(1, 2)]),
        ("bytes=20-30,2-3", 10, [(2, 3)]),  # unsatisfiable parts are dropped
    ],
)
def test_satisfiable(header, length, expected):
    specs = parse_range_header(header)
    assert specs is not None
    got = resolve_ranges(specs, length)
    assert got == [ByteRange(a, b) for a, b in expected]


@pytest.mark.parametrize(
    ("header", "length"),
    [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-5", 0), ("bytes=10-20,30-", 10)],
)
def test_unsatisfiable(header, length):
    specs = parse_range_header(header)
    assert specs is not None
    assert resolve_ranges(specs, length) == Unsatisfiable()


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=5-2",
        "bytes=a-1",
        "bytes=1-2-3",
        "items=0-1",
        "bytes=0x1-2",
        "bytes=1" + "0" * 30 + "-",
        "bytes=" + ",".join(["0-0"] * (RANGES_MAX + 1)),
        "bytes=" + "0-0," * 5000,
    ],
)
def test_malformed_headers_are_ignored(header):
    assert parse_range_header(header) is None


@given(st.text(max_size=200))
def test_garbage_parses_or_is_ignored(text):
    specs = parse_range_header(text)
    if specs is not None:
        out = resolve_ranges(specs, 1000)
        assert isinstance(out, Unsatisfiable) or all(0 <= r.first <= r.last < 1000 for r in out)


@given(st.binary(max_size=100))
def test_garbage_bytes_decoded_as_latin1(raw):
    specs = parse_range_header("bytes=" + raw.decode("latin-1"))
    assert specs is None or all(a is not None or b is not None for a, b in specs)


def test_whole_and_byte_by_byte_prefixes():
    # every prefix of a valid header parses to a valid list or is ignored; never raises
    header = "bytes=0-9, 20-29, -5"
    for i in range(len(header) + 1):
        specs = parse_range_header(header[:i])
        assert specs is None or isinstance(resolve_ranges(specs, 100), list | Unsatisfiable)
    assert parse_range_header(header) == [(0, 9), (20, 29), (None, 5)]


def _plan() -> MultipartPlan:
    return MultipartPlan("b0und", "text/plain", 20, (ByteRange(0, 1), ByteRange(18, 19)))


def test_multipart_bytes_exactly():
    body = b"abcdefghijklmnopqrst"
    plan = _plan()
    out = b"".join(h + body[r.first : r.last + 1] + t for h, r, t in plan.parts())
    assert out == (
        b"--b0und\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/20\r\n\r\nab\r\n"
        b"--b0und\r\nContent-Type: text/plain\r\nContent-Range: bytes 18-19/20\r\n\r\nst\r\n"
        b"--b0und--"
    )
    assert plan.content_length == len(out)
    assert plan.response_content_type == "multipart/byteranges;boundary=b0und"


def test_multipart_parses_with_a_standard_mime_parser():
    body = bytes(range(256)) * 4
    ranges = (ByteRange(0, 9), ByteRange(500, 700), ByteRange(1000, 1023))
    plan = MultipartPlan("xyz", "application/octet-stream", len(body), ranges)
    raw = b"".join(h + body[r.first : r.last + 1] + t for h, r, t in plan.parts())
    head = f"Content-Type: {plan.response_content_type}\r\n\r\n".encode()
    msg = email.message_from_bytes(head + raw, policy=email.policy.HTTP)
    parts = list(msg.iter_parts())
    assert [p.get_payload(decode=True) for p in parts] == [
        body[r.first : r.last + 1] for r in ranges
    ]


def test_boundary_and_content_type_cannot_inject_headers():
    with pytest.raises(AssertionError):
        MultipartPlan("bad\r\nX: y", "a", 1, (ByteRange(0, 0),))
    with pytest.raises(AssertionError):
        MultipartPlan("ok", "a\r\nX: y", 1, (ByteRange(0, 0),))
