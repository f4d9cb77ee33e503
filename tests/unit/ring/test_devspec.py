"""Parsing swift-ring-builder device strings: whole values, every optional part, and garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ring.device import Device
from ring.devspec import parse_add, parse_change, parse_search, parse_weight
from ring.errors import InvalidDeviceError


def test_add_full_form() -> None:
    n = parse_add("r2z3-10.0.0.1:6200R10.1.0.1:6300/sdb_fast ssd", 50)
    assert (n.region, n.zone, n.ip, n.port) == (2, 3, "10.0.0.1", 6200)
    assert (n.replication_ip, n.replication_port) == ("10.1.0.1", 6300)
    assert (n.device, n.meta, n.weight) == ("sdb", "fast ssd", 50)


def test_add_defaults_region_and_replication() -> None:
    n = parse_add("z1-127.0.0.1:6200/sda", 1)
    assert n.region == 1 and n.replication_ip == "127.0.0.1" and n.replication_port == 6200


def test_add_ipv6_in_brackets_is_normalized() -> None:
    n = parse_add("r1z1-[0:0::1]:6200/sda", 1)
    assert n.ip == "::1"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "r1z1-127.0.0.1/sda",
        "r1z1-127.0.0.1:6200",
        "r1-127.0.0.1:6200/sda",
        "r1z1-127.0.0.1:port/sda",
        "r1z1-bad host:6200/sda",
        "r1z1-127.0.0.1:6200/",
    ],
)
def test_add_rejects_malformed(bad: str) -> None:
    with pytest.raises(InvalidDeviceError):
        parse_add(bad, 1)


def test_out_of_range_port_is_rejected() -> None:
    with pytest.raises(InvalidDeviceError):
        parse_add("r1z1-127.0.0.1:70000/sda", 1)
    with pytest.raises(InvalidDeviceError):
        Device(0, 1, 1, "127.0.0.1", 0, "127.0.0.1", 6200, "sda", 1.0)
    with pytest.raises(InvalidDeviceError):
        Device(0, 1, 1, "127.0.0.1", 6200, "127.0.0.1", 6200, "sda", float("nan"))


def test_search_forms() -> None:
    assert parse_search("d7").id == 7
    q = parse_search("r1z2-10.0.0.1:6200/sdb_x")
    assert (q.region, q.zone, q.ip, q.port, q.device, q.meta) == (
        1,
        2,
        "10.0.0.1",
        6200,
        "sdb",
        "x",
    )
    assert parse_search("-10.0.0.1").ip == "10.0.0.1"
    assert parse_search("/sdc").device == "sdc"
    assert parse_search("z3").zone == 3 and parse_search("z3").region is None


def test_change_forms() -> None:
    c = parse_change("10.0.0.2:6201R10.1.0.2:6301/sdq_new")
    assert (c.ip, c.port, c.replication_ip, c.replication_port) == (
        "10.0.0.2",
        6201,
        "10.1.0.2",
        6301,
    )
    assert (c.device, c.meta) == ("sdq", "new")
    assert parse_change("/sdz").device == "sdz" and parse_change("/sdz").ip is None


@pytest.mark.parametrize("bad", ["-1", "abc", "nan", "inf", ""])
def test_weight_rejects(bad: str) -> None:
    with pytest.raises(InvalidDeviceError):
        parse_weight(bad)


@given(st.text(max_size=60))
def test_parsers_fail_only_with_invalid_device(text: str) -> None:
    for parse in (lambda t: parse_add(t, 1), parse_search, parse_change):
        with contextlib.suppress(InvalidDeviceError):
            parse(text)
