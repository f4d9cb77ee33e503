"""Pure proxy logic: quorum arithmetic, ranges, constraints, error limiting, node order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.clock import ManualClock
from common.nodes import ErrorLimiter, iter_nodes, node_key
from proxy.backend import backend_path, best_status, quorum_size
from proxy.constraints import check_metadata, check_name, check_object_put
from proxy.ranges import parse_single_range
from proxy.swift import parse_swift_path


@pytest.mark.parametrize(
    ("statuses", "n", "want"),
    [
        ([201, 201, 201], 3, 201),
        ([201, 201, 503], 3, 201),
        ([201, 503, 503], 3, 503),
        ([404, 404, 201], 3, 404),
        ([409, 204, 409], 3, 409),
        ([201, 404, 503], 3, 503),
        ([202, 204, 500], 3, 202),
        ([201, 201], 2, 201),
        ([201, 503], 2, 503),
        ([201], 1, 201),
    ],
)
def test_best_status(statuses, n, want):
    assert best_status(statuses, n) == want


def test_quorum_is_a_majority():
    assert [quorum_size(n) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]


@pytest.mark.parametrize(
    ("header", "length", "want"),
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=50-5000", 100, (50, 99)),
        ("bytes=100-", 100, None),
        ("bytes=5-1", 100, None),
        ("bytes=0-1,3-4", 100, None),
        ("items=0-1", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=-0", 100, None),
    ],
)
def test_single_range(header, length, want):
    assert parse_single_range(header, length) == want


@given(st.text(max_size=30), st.integers(0, 10_000))
def test_single_range_never_raises_and_stays_in_bounds(header, length):
    r = parse_single_range(header, length)
    if r is not None:
        assert 0 <= r[0] <= r[1] < length


def test_name_constraints():
    assert check_name("object", "x" * 1024) is None
    assert check_name("object", "x" * 1025)[0] == 400
    assert check_name("container", "a/b")[0] == 400
    assert check_name("object", "a\x00b")[0] == 412
    assert check_name("container", "é" * 128) is None
    assert check_name("container", "é" * 129)[0] == 400


def test_metadata_constraints():
    assert check_metadata({"X-Object-Meta-A": "b"}, "object") is None
    assert check_metadata({"X-Object-Meta-" + "a" * 129: "b"}, "object")[0] == 400
    assert check_metadata({"X-Object-Meta-A": "b" * 257}, "object")[0] == 400
    many = {f"X-Object-Meta-K{i}": "v" for i in range(91)}
    assert check_metadata(many, "object")[0] == 400
    big = {f"X-Object-Meta-K{i}": "v" * 250 for i in range(17)}
    assert check_metadata(big, "object")[0] == 400


def test_object_put_needs_a_length():
    assert check_object_put({}, None) == (411, "Missing Content-Length header.")
    assert check_object_put({"Transfer-Encoding": "chunked"}, None) is None
    assert check_object_put({}, 5 * 1024**3 + 3)[0] == 413
    assert check_object_put({"Transfer-Encoding": "gzip"}, None)[0] == 411


def test_swift_path_parsing():
    p = parse_swift_path("/v1/AUTH_a/c/o/with/slashes%20and%20spaces")
    assert (p.account, p.container, p.obj) == ("AUTH_a", "c", "o/with/slashes and spaces")
    p = parse_swift_path("/v1/AUTH_a/c/a/../b")
    assert p.obj == "a/../b"
    assert parse_swift_path("/v1/AUTH_a/c/o%00x").status == 412
    assert parse_swift_path("/v2/AUTH_a").status == 412
    assert parse_swift_path("/v1/.hidden/c").status == 412
    assert parse_swift_path("/v1/AUTH_a/%ff").status == 412


def test_backend_path_quotes_each_part():
    assert backend_path("d1", 5, "AUTH_a", "c c", "o/x?y") == "/d1/5/AUTH_a/c%20c/o/x%3Fy"


@dataclass(frozen=True)
class _Dev:
    ip: str
    port: int
    device: str


class _FakeRing:
    """A fixed 3-replica ring for node-order tests (not a fake of anything users run)."""

    replica_count = 3

    def __init__(self) -> None:
        self.devs = [_Dev("127.0.0.1", 6000 + i, f"d{i}") for i in range(8)]

    def get_part_nodes(self, part):
        return self.devs[:3]

    def get_more_nodes(self, part):
        return iter(self.devs[3:])


def test_error_limited_primary_lets_a_handoff_in():
    clock = ManualClock()
    lim = ErrorLimiter(clock, limit=2, interval_s=60)
    ring = _FakeRing()
    assert [d.device for d in iter_nodes(ring, 0, lim)] == [f"d{i}" for i in range(6)]
    lim.limit_now(node_key(ring.devs[1]))
    order = [d.device for d in iter_nodes(ring, 0, lim)]
    assert order == ["d0", "d2", "d3", "d4", "d5", "d6", "d1"]
    clock.advance(61)
    assert not lim.is_limited(node_key(ring.devs[1]))


def test_shuffled_primaries_spread_reads_and_keep_handoffs_and_limits_in_place():
    clock = ManualClock()
    lim = ErrorLimiter(clock, limit=2, interval_s=60)
    ring = _FakeRing()
    lim.limit_now(node_key(ring.devs[1]))
    firsts = set()
    for _ in range(200):  # a primary never first in 200 draws: odds (1/2)**200
        order = [d.device for d in iter_nodes(ring, 0, lim, shuffle=True)]
        assert sorted(order[:2]) == ["d0", "d2"]  # the primaries not limited, in some order
        assert order[2:] == ["d3", "d4", "d5", "d6", "d1"]  # handoffs as the ring has them
        firsts.add(order[0])
    assert firsts == {"d0", "d2"}
    assert ring.devs[:3] == ring.get_part_nodes(0)  # the ring's own list is not reordered


def test_errors_below_the_limit_do_not_limit():
    clock = ManualClock()
    lim = ErrorLimiter(clock, limit=2, interval_s=60)
    key = ("127.0.0.1", 1, "d")
    lim.error(key)
    lim.error(key)
    assert not lim.is_limited(key)
    lim.error(key)
    assert lim.is_limited(key)
