"""common/leanserver/_bodies.py: a body buffer is given out again only once no view of it is
alive, and the check itself changes nothing."""

from __future__ import annotations

import os

from common.leanserver._bodies import BodyBuffers, unviewed


def test_unviewed_sees_every_kind_of_view() -> None:
    data = os.urandom(4096)
    buf = bytearray(data)
    assert unviewed(buf) and buf == data
    view = memoryview(buf)
    part = view[100:200]  # a slice of a view keeps the buffer viewed too
    assert not unviewed(buf)
    view.release()
    assert not unviewed(buf)
    part.release()
    assert unviewed(buf) and buf == data
    assert unviewed(bytearray())


def test_a_buffer_comes_back_only_when_unviewed() -> None:
    bodies = BodyBuffers()
    first = bodies.take(1000)
    assert len(first) == 1000 and bodies.reused == 0
    held = memoryview(first)[:10]
    assert not bodies.give_back(first)
    assert bodies.take(1000) is not first  # still viewed: never given out again
    held.release()
    assert bodies.give_back(first)
    assert bodies.take(999) is not first  # only the exact length
    assert bodies.take(1000) is first and bodies.reused == 1
    assert bodies.take(1000) is not first  # taken: no longer free


def test_the_oldest_free_buffer_goes_first() -> None:
    bodies = BodyBuffers(kept_max=2)
    a, b, c = (bytearray(10) for _ in range(3))
    for buf in (a, b, c):
        assert bodies.give_back(buf)
    taken = [bodies.take(10) for _ in range(3)]
    assert taken[0] is c and taken[1] is b and taken[2] is not a
