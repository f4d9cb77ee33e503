"""Backend object path and header validation."""

from __future__ import annotations

import pytest

from objectd.request import BadRequest, parse_delete_at, parse_object_path, parse_timestamp


def test_object_names_keep_slashes_and_dots():
    p = parse_object_path("/sda/12/AUTH_a/c/dir/../x%20y")
    assert (p.device, p.partition, p.account, p.container, p.obj) == (
        "sda",
        12,
        "AUTH_a",
        "c",
        "dir/../x y",
    )
    assert p.name == "/AUTH_a/c/dir/../x y"


def test_unicode_names():
    p = parse_object_path("/sda/0/a/c/%E2%98%83")
    assert p.obj == "\u2603"


@pytest.mark.parametrize(
    "path",
    [
        "sda/1/a/c/o",
        "/sda/1/a/c",
        "/sda/1/a/c/",
        "/sda//a/c/o",
        "/sda/-1/a/c/o",
        "/sda/99999999999/a/c/o",
        "/../1/a/c/o",
        "/%2E%2E/1/a/c/o",
        "/sd%2Fa/1/a/c/o",
        "/sda/1/a%00/c/o",
        "/sda/1/a/c/o%00",
        "/sda/1/a/c/%C3%28",
        "/sda/1/a/c/" + "x" * 1025,
        "/sda/1/a/" + "c" * 257 + "/o",
        "/sda/1/a%2Fb/c/o",
    ],
)
def test_bad_paths(path):
    with pytest.raises(BadRequest):
        parse_object_path(path)


def test_object_name_of_exactly_1024_bytes_is_fine():
    assert len(parse_object_path("/sda/1/a/c/" + "%C3%A9" * 512).obj.encode()) == 1024


def test_timestamps():
    assert parse_timestamp({"X-Timestamp": "1700000000.5"}).internal == "1700000000.50000"
    assert parse_timestamp({}, required=False) is None
    for bad in ({}, {"X-Timestamp": "-1"}, {"X-Timestamp": "abc"}):
        with pytest.raises(BadRequest):
            parse_timestamp(bad)


def test_delete_at():
    assert parse_delete_at({"X-Delete-At": "200"}, 100.0) == 200
    assert parse_delete_at({}, 100.0) is None
    for bad in ("50", "abc", "-5", "1.5"):
        with pytest.raises(BadRequest):
            parse_delete_at({"X-Delete-At": bad}, 100.0)
