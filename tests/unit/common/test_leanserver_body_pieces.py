"""common.leanserver's parser with large bodies: kept as the pieces they arrive in once the
head is parsed, joined once (BODY_PIECES_BYTES_MIN), with the same results as one buffer."""

from __future__ import annotations

import random

import pytest

from common.leanserver import RequestParser
from common.leanserver._parser import BODY_PIECES_BYTES_MIN

BODY = random.Random(7).randbytes(BODY_PIECES_BYTES_MIN * 3 + 123)
HEAD = b"PUT /sda/1/a/c/o HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(BODY)
NEXT = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


def feed_in(parser: RequestParser, data: bytes, cuts: list[int]) -> bytes | None:
    """Feed `data` cut at `cuts`, parsing after every piece as the lane does; the body."""
    body = None
    for lo, hi in zip([0, *cuts], [*cuts, len(data)], strict=True):
        parser.feed(data[lo:hi])
        head = parser.head()
        if head is not None and body is None:
            body = parser.take_body(head)
    return body


@pytest.mark.parametrize("seed", range(20))
def test_body_in_random_pieces_then_the_next_request(seed: int) -> None:
    data = HEAD + BODY + NEXT
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(data)), rnd.randint(1, 12)))
    p = RequestParser()
    assert feed_in(p, data, cuts) == BODY
    assert p.pending() == data[len(HEAD) + len(BODY) :]
    head = p.head()
    assert head is not None and head.method == "GET" and p.take_body(head) == b""
    assert p.buffered_bytes == 0


def test_body_ending_exactly_with_a_piece() -> None:
    p = RequestParser()
    cut = len(HEAD) + 1000
    assert feed_in(p, HEAD + BODY, [cut, cut + 70000]) == BODY
    assert p.buffered_bytes == 0 and p.pending() == b""


def test_pieces_past_the_body_before_it_is_taken() -> None:
    # The lane stops parsing while the peer does not read its answers: pieces keep coming,
    # the body and several following ones among them.
    p = RequestParser()
    p.feed(HEAD + BODY[:10])
    head = p.head()
    assert head is not None and p.take_body(head) is None
    for piece in (BODY[10:5000], BODY[5000:] + NEXT[:3], NEXT[3:9], NEXT[9:]):
        p.feed(piece)
    assert p.buffered_bytes == len(HEAD) + len(BODY) + len(NEXT)
    assert p.take_body(head) == BODY
    assert p.pending() == NEXT


def test_pending_and_buffered_bytes_while_collecting() -> None:
    p = RequestParser()
    p.feed(HEAD + BODY[:100])
    head = p.head()
    assert head is not None and p.take_body(head) is None
    p.feed(BODY[100:150000])
    assert p.take_body(head) is None
    assert p.buffered_bytes == len(HEAD) + 150000
    assert p.pending() == HEAD + BODY[:150000]


def test_small_bodies_stay_in_the_buffer() -> None:
    small = b"x" * (BODY_PIECES_BYTES_MIN - 1)
    data = b"PUT /a/b/c/d HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(small) + small
    p = RequestParser()
    assert feed_in(p, data, [40, 100, 5000]) == small
    assert p.buffered_bytes == 0


@pytest.mark.parametrize("seed", range(12))
def test_body_parts_are_the_pieces_uncopied(seed: int) -> None:
    data = HEAD + BODY + NEXT
    rnd = random.Random(100 + seed)
    cuts = sorted(rnd.sample(range(1, len(data)), rnd.randint(1, 12)))
    p = RequestParser()
    parts = None
    for lo, hi in zip([0, *cuts], [*cuts, len(data)], strict=True):
        p.feed(data[lo:hi])
        head = p.head()
        if head is not None and parts is None:
            parts = p.take_body_parts(head)
    assert parts is not None and b"".join(parts) == BODY
    assert all(len(part) for part in parts)
    assert p.pending() == data[len(HEAD) + len(BODY) :]
    head = p.head()
    assert head is not None and head.method == "GET" and p.take_body(head) == b""


def test_body_parts_view_the_received_pieces() -> None:
    p = RequestParser()
    p.feed(HEAD + BODY[:100])
    head = p.head()
    assert head is not None and p.take_body_parts(head) is None
    middle = BODY[100:100_000]
    p.feed(middle)
    p.feed(BODY[100_000:])
    parts = p.take_body_parts(head)
    assert parts is not None and [len(x) for x in parts] == [100, len(middle), len(BODY) - 100_000]
    assert parts[1].obj is middle  # a view of the piece as received: not copied
    assert p.buffered_bytes == 0


def test_body_parts_of_a_body_that_came_with_its_head_or_is_small() -> None:
    for body in (BODY, b"x" * 100):
        data = b"PUT /a/b/c/d HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        p = RequestParser()
        p.feed(data + NEXT)
        head = p.head()
        assert head is not None
        parts = p.take_body_parts(head)
        assert parts is not None and b"".join(parts) == body
        assert p.pending() == NEXT


# -- a body received directly (receive_direct), as the lane's buffered protocol does ------


def recv_into(parser: RequestParser, data: memoryview, most: int) -> int:
    """What a transport does: read at most `most` bytes into the parser's direct buffer."""
    view = parser.direct_buffer()
    assert view is not None and len(view) > 0
    n = min(len(view), len(data), most)
    view[:n] = data[:n]
    parser.direct_received(n)
    return n


@pytest.mark.parametrize("seed", range(20))
def test_direct_body_after_random_buffered_pieces(seed: int) -> None:
    rnd = random.Random(seed)
    data = HEAD + BODY + NEXT
    p = RequestParser()
    # the head and some of the body the ordinary way, in pieces
    upto = len(HEAD) + rnd.randint(0, len(BODY) - 1)
    cuts = sorted(rnd.sample(range(1, upto), rnd.randint(1, 5)))
    for lo, hi in zip([0, *cuts], [*cuts, upto], strict=True):
        p.feed(data[lo:hi])
    head = p.head()
    assert head is not None and p.take_body_parts(head) is None
    p.receive_direct(head)
    assert p.direct_buffer() is not None and p.buffered_bytes == upto - len(HEAD)
    view = memoryview(data)[upto : len(HEAD) + len(BODY)]
    while len(view):
        assert p.take_body_parts(head) is None
        view = view[recv_into(p, view, rnd.randint(1, 300_000)) :]
    assert p.direct_buffer() is None  # whole: the next read goes elsewhere
    parts = p.take_body_parts(head)
    assert parts is not None and len(parts) == 1 and parts[0] == BODY
    assert not p.receiving_direct and p.buffered_bytes == 0
    p.feed(NEXT)
    nxt = p.head()
    assert nxt is not None and nxt.method == "GET" and p.take_body(nxt) == b""


def test_feed_while_direct_fills_the_body_then_keeps_the_rest() -> None:
    # A transport that calls data_received (not get_buffer) still works: feed fills the
    # body's buffer first and keeps what follows it for the next request.
    p = RequestParser()
    p.feed(HEAD + BODY[:1000])
    head = p.head()
    assert head is not None and p.take_body_parts(head) is None
    p.receive_direct(head)
    p.feed(BODY[1000:70000])
    assert p.take_body_parts(head) is None
    p.feed(BODY[70000:] + NEXT[:5])
    assert p.take_body(head) == BODY  # the copy, for a route that takes bytes
    assert p.buffered_bytes == 5
    p.feed(NEXT[5:])
    assert p.pending() == NEXT


def test_receive_direct_refuses_a_whole_body() -> None:
    p = RequestParser()
    p.feed(HEAD + BODY)
    head = p.head()
    assert head is not None
    with pytest.raises(AssertionError):
        p.receive_direct(head)


def test_direct_body_into_a_given_buffer_of_old_bytes() -> None:
    # A buffer given out again (common/leanserver/_bodies.py) holds an earlier body: every
    # byte of it is the new body's once it is handed out, and the part is a view of it.
    p = RequestParser()
    p.feed(HEAD + BODY[:777])
    head = p.head()
    assert head is not None and p.take_body_parts(head) is None
    old = bytearray(b"\xee" * len(BODY))
    p.receive_direct(head, old)
    view = memoryview(BODY)[777:]
    while len(view):
        view = view[recv_into(p, view, 100_000) :]
    parts = p.take_body_parts(head)
    assert parts is not None and len(parts) == 1 and parts[0].obj is old and parts[0] == BODY


def test_receive_direct_refuses_a_buffer_of_another_length() -> None:
    p = RequestParser()
    p.feed(HEAD)
    head = p.head()
    assert head is not None
    with pytest.raises(AssertionError):
        p.receive_direct(head, bytearray(len(BODY) - 1))
