"""BatchQueue, the sans-IO core of the container update batcher (objectd/update_batcher.py)."""

from __future__ import annotations

import pytest

from objectd.update_batcher import BatchQueue


def test_first_row_goes_at_once_and_the_rest_wait_for_the_answer() -> None:
    q: BatchQueue[str] = BatchQueue()
    assert q.take() == []
    assert q.push("a", 100)
    assert q.take() == ["a"]  # nothing in flight: a lone update is not held back
    for name in "bcd":
        assert q.push(name, 100)
    assert q.take() == []  # one request out: the others collect
    q.finished()
    assert q.take() == ["b", "c", "d"]  # all that piled up, in order, in one request
    assert q.take() == [] and q.queued == 0


def test_two_requests_in_flight() -> None:
    q: BatchQueue[int] = BatchQueue(in_flight_max=2)
    q.push(1, 1)
    assert q.take() == [1]
    q.push(2, 1)
    q.push(3, 1)
    assert q.take() == [2, 3]
    q.push(4, 1)
    assert q.take() == []
    q.finished()
    assert q.take() == [4]
    assert q.in_flight == 2


def test_rows_cap() -> None:
    q: BatchQueue[int] = BatchQueue(rows_max=3, in_flight_max=5)
    for i in range(7):
        q.push(i, 1)
    assert [q.take(), q.take(), q.take(), q.take()] == [[0, 1, 2], [3, 4, 5], [6], []]


def test_bytes_cap_but_always_one_row() -> None:
    q: BatchQueue[str] = BatchQueue(bytes_max=250, in_flight_max=9)
    q.push("big", 1000)
    q.push("a", 100)
    q.push("b", 100)
    q.push("c", 100)
    assert q.take() == ["big"]  # bigger than the cap alone: still sent
    assert q.take() == ["a", "b"]
    assert q.take() == ["c"]


def test_full_queue_refuses() -> None:
    q: BatchQueue[int] = BatchQueue(queued_max=2)
    assert q.push(1, 1) and q.push(2, 1)
    assert not q.push(3, 1)
    assert q.take() == [1, 2]
    assert q.push(3, 1)


def test_discard_only_unsent_items_by_identity() -> None:
    q: BatchQueue[list[int]] = BatchQueue()
    a, b, c, twin = [1], [2], [3], [3]
    for item in (a, b, c):
        q.push(item, 1)
    assert q.take() == [a, b, c]
    q.finished()
    q.push(c, 1)
    assert not q.discard(twin)  # equal but not the same row
    assert q.discard(c) and q.queued == 0
    assert not q.discard(a)  # already sent


def test_top_up_adds_to_a_taken_request_within_its_caps() -> None:
    q: BatchQueue[str] = BatchQueue(rows_max=4, bytes_max=350)
    q.push("a", 100)
    assert q.take() == ["a"]
    assert q.top_up(1, 100) == []  # nothing queued
    for name in "bcde":
        q.push(name, 100)
    assert q.top_up(1, 100) == ["b", "c"]  # a fourth 100-byte row would pass 350 bytes
    assert q.in_flight == 1  # the same request: no new slot
    assert q.top_up(3, 300) == []  # still over the bytes cap
    assert q.top_up(1, 0) == ["d", "e"]
    q.push("f", 1)
    assert q.top_up(4, 0) == [] and q.queued == 1  # rows cap


def test_take_all_bypasses_request_slots() -> None:
    q: BatchQueue[int] = BatchQueue()
    q.push(1, 1)
    q.take()
    q.push(2, 1)
    q.push(3, 1)
    assert q.take_all() == [2, 3]
    assert q.queued == 0 and q.in_flight == 1


def test_finished_without_take_is_a_bug() -> None:
    q: BatchQueue[int] = BatchQueue()
    with pytest.raises(AssertionError):
        q.finished()
