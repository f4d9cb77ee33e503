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
