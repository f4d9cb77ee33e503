"""If-Match / If-None-Match / If-(Un)Modified-Since evaluation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from objectd.conditional import evaluate, parse_etag_list

ETAG = "abc123"
LM = 1_700_000_000  # Tue, 14 Nov 2023 22:13:20 GMT
AT = "Tue, 14 Nov 2023 22:13:20 GMT"
BEFORE = "Tue, 14 Nov 2023 22:13:19 GMT"


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, None),
        ("GET", {"If-Match": '"abc123"'}, None),
        ("GET", {"If-Match": "abc123"}, None),
        ("GET", {"If-Match": '"x", "abc123"'}, None),
        ("GET", {"If-Match": "*"}, None),
        ("GET", {"If-Match": '"x"'}, 412),
        ("GET", {"If-None-Match": '"abc123"'}, 304),
        ("HEAD", {"If-None-Match": "*"}, 304),
        ("PUT", {"If-None-Match": "*"}, 412),
        ("GET", {"If-None-Match": '"x"'}, None),
        ("GET", {"If-None-Match": 'W/"abc123"'}, 304),
        ("GET", {"If-Modified-Since": AT}, 304),
        ("GET", {"If-Modified-Since": BEFORE}, None),
        ("DELETE", {"If-Modified-Since": AT}, None),
        ("GET", {"If-Unmodified-Since": AT}, None),
        ("GET", {"If-Unmodified-Since": BEFORE}, 412),
        ("GET", {"If-Unmodified-Since": "garbage"}, None),
        ("GET", {"If-Match": "abc123", "If-Unmodified-Since": BEFORE}, None),  # IM wins
        ("GET", {"If-None-Match": '"x"', "If-Modified-Since": AT}, None),  # INM wins
        ("GET", {"If-Match": '"x"', "If-None-Match": '"abc123"'}, 412),
    ],
)
def test_evaluate(method, headers, expected):
    assert evaluate(method, headers, ETAG, LM) == expected


def test_etag_list_parsing():
    assert parse_etag_list('"a", W/"b" ,c,,') == ["a", "b", "c"]
    assert parse_etag_list("*") == ["*"]
    assert parse_etag_list("x" * 9000) is None


@given(
    st.dictionaries(
        st.sampled_from(["If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"]),
        st.text(max_size=80),
    )
)
def test_garbage_headers_never_raise(headers):
    assert evaluate("GET", headers, ETAG, LM) in (None, 304, 412)
