"""Listing parameters, content negotiation and the three body formats, without sockets."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from common.listingdb import ListingParams, Subdir
from common.listingdb.formats import render_json, render_plain, render_xml
from common.listingdb.params import ListingRequestError, negotiate_format, parse_listing_params


def test_defaults() -> None:
    assert parse_listing_params({}) == ListingParams()


def test_all_params() -> None:
    q = {
        "prefix": "p/",
        "delimiter": "/",
        "marker": "m",
        "end_marker": "z",
        "limit": "5",
        "reverse": "on",
        "path": "",
    }
    assert parse_listing_params(q) == ListingParams("p/", "/", "m", "z", 5, True, "")


@pytest.mark.parametrize("value", ["yes", "1", "True", "t"])
def test_reverse_true_values(value: str) -> None:
    assert parse_listing_params({"reverse": value}).reverse


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"limit": "10001"}, 412, "Maximum limit is 10000"),
        ({"limit": "-1"}, 400, "non-negative integer"),
        ({"limit": "١٢"}, 400, "non-negative integer"),  # Arabic-Indic digits: not ASCII
        ({"marker": "a\x00"}, 400, "marker must not contain NUL"),
        ({"prefix": "x" * 5000}, 400, "longer than 4096 bytes"),
    ],
)
def test_bad_params(query: dict[str, str], status: int, message: str) -> None:
    with pytest.raises(ListingRequestError) as e:
        parse_listing_params(query)
    assert e.value.status == status and message in e.value.message


@pytest.mark.parametrize(
    ("fmt", "accept", "kind", "ctype"),
    [
        (None, None, "plain", "text/plain"),
        ("json", "application/xml", "json", "application/json"),
        ("XML", None, "xml", "application/xml"),
        (None, "application/json", "json", "application/json"),
        (None, "text/xml", "xml", "text/xml"),
        (None, "*/*", "plain", "text/plain"),
        (None, "application/*", "json", "application/json"),
        (None, "text/plain;q=0.1, application/xml;q=0.5", "xml", "application/xml"),
        (None, "application/json;q=0, text/plain", "plain", "text/plain"),
    ],
)
def test_negotiation(fmt: str | None, accept: str | None, kind: str, ctype: str) -> None:
    got = negotiate_format(fmt, accept)
    assert (got.kind, got.content_type) == (kind, ctype)


def test_negotiation_failures() -> None:
    with pytest.raises(ListingRequestError) as e:
        negotiate_format(None, "image/png")
    assert e.value.status == 406
    with pytest.raises(ListingRequestError) as e:
        negotiate_format("yaml", None)
    assert e.value.status == 400


def fields(row: tuple[str, int]) -> dict[str, Any]:
    return {"name": row[0], "bytes": row[1]}


ITEMS: list[tuple[str, int] | Subdir] = [("a<&>\"'", 1), Subdir("d/<x>/"), ("é", 2)]


def test_plain_and_json() -> None:
    assert render_plain(ITEMS, fields) == "a<&>\"'\nd/<x>/\né\n".encode()
    assert render_plain([], fields) == b""
    assert json.loads(render_json(ITEMS, fields)) == [
        {"name": "a<&>\"'", "bytes": 1},
        {"subdir": "d/<x>/"},
        {"name": "é", "bytes": 2},
    ]


def test_xml_escapes_and_parses_back() -> None:
    body = render_xml("container", 'c"<', "object", ITEMS, fields)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(body)
    assert root.tag == "container" and root.attrib["name"] == 'c"<'
    assert [e.tag for e in root] == ["object", "subdir", "object"]
    assert root[0].findtext("name") == "a<&>\"'" and root[0].findtext("bytes") == "1"
    assert root[1].attrib["name"] == "d/<x>/" and root[1].findtext("name") == "d/<x>/"
    assert root[2].findtext("name") == "é"
