"""Pure pieces of the S3 front: metadata mapping, conditionals, listing markers, routing."""

from __future__ import annotations

import pytest

from proxy.s3.errors import S3Error
from proxy.s3.frontend import is_swift_path
from proxy.s3.headers import HeaderMap
from proxy.s3.listing import parse_max, row_entry, swift_marker
from proxy.s3.objmeta import (
    copy_source_conditions,
    evaluate_conditions,
    http_date,
    object_response_headers,
    split_content_type,
    swift_object_headers,
    with_type_params,
)

T = 1_700_000_000.0


def test_swift_object_headers() -> None:
    h = swift_object_headers(
        HeaderMap(
            [
                ("Content-Type", "text/plain"),
                ("Content-Encoding", "gzip,aws-chunked"),
                ("x-amz-meta-Color", "blue"),
                ("x-amz-storage-class", "STANDARD"),
                ("Authorization", "not stored"),
            ]
        )
    )
    assert h["Content-Type"] == "text/plain" and h["Content-Encoding"] == "gzip"
    assert h["X-Object-Meta-color"] == "blue" and "Authorization" not in h
    assert swift_object_headers(HeaderMap([]))["Content-Type"] == "binary/octet-stream"
    assert "Content-Encoding" not in swift_object_headers(
        HeaderMap([("Content-Encoding", "aws-chunked")])
    )
    for bad, code in [
        ([("x-amz-storage-class", "GLACIER")], "InvalidStorageClass"),
        ([("x-amz-meta-big", "v" * 300)], "MetadataTooLarge"),
        ([("x-amz-tagging", "a=b")], "NotImplemented"),
    ]:
        with pytest.raises(S3Error) as info:
            swift_object_headers(HeaderMap(bad))
        assert info.value.code == code


def test_content_type_params_roundtrip() -> None:
    stored = with_type_params("video/mp4; codecs=avc1", 12345, "abc-3")
    clean, params = split_content_type(stored)
    assert clean == "video/mp4;codecs=avc1"
    assert params == {"swift_bytes": "12345", "s3_etag": "abc-3"}
    headers, etag = object_response_headers(
        {
            "Content-Type": stored,
            "Etag": '"manifest-md5"',
            "X-Object-Meta-A": "1",
            "X-Static-Large-Object": "True",
            "Content-Length": "99",
        }
    )
    assert etag == "abc-3" and headers["ETag"] == '"abc-3"'
    assert headers["Content-Type"] == "video/mp4;codecs=avc1"
    assert headers["x-amz-meta-a"] == "1" and "X-Static-Large-Object" not in headers
    entry = row_entry(
        {
            "name": "k",
            "bytes": 99,
            "hash": "manifest-md5",
            "last_modified": "2023-11-14T22:13:20.250000",
            "content_type": stored,
        }
    )
    assert (entry.size, entry.etag, entry.last_modified_s) == (12345, "abc-3", T + 0.25)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"if-match": '"e1"'}, None),
        ({"if-match": '"e2", "e1"'}, None),
        ({"if-match": "*"}, None),
        ({"if-match": '"e2"'}, 412),
        ({"if-none-match": '"e1"'}, 304),
        ({"if-none-match": 'W/"e1"'}, 304),
        ({"if-none-match": '"e2"'}, None),
        ({"if-modified-since": http_date(T)}, 304),
        ({"if-modified-since": http_date(T - 10)}, None),
        ({"if-unmodified-since": http_date(T - 10)}, 412),
        ({"if-unmodified-since": http_date(T)}, None),
        # If-Match decides over If-Unmodified-Since, If-None-Match over If-Modified-Since.
        ({"if-match": '"e1"', "if-unmodified-since": http_date(T - 10)}, None),
        ({"if-none-match": '"e2"', "if-modified-since": http_date(T)}, None),
        ({"if-modified-since": "garbage"}, None),
    ],
)
def test_conditionals(headers: dict[str, str], expected: int | None) -> None:
    assert evaluate_conditions(HeaderMap(headers), "e1", T) == expected


def test_copy_source_conditions() -> None:
    copy_source_conditions(HeaderMap({"x-amz-copy-source-if-match": '"e1"'}), "e1", T)
    for headers in ({"x-amz-copy-source-if-match": '"x"'},
                    {"x-amz-copy-source-if-none-match": '"e1"'},
                    {"x-amz-copy-source-if-modified-since": http_date(T + 5)}):  # fmt: skip
        with pytest.raises(S3Error) as info:
            copy_source_conditions(HeaderMap(headers), "e1", T)
        assert (info.value.code, info.value.status) == ("PreconditionFailed", 412)


def test_swift_marker_skips_common_prefixes() -> None:
    assert swift_marker("a/b", "", None) == "a/b"
    assert swift_marker("b", "", "/") == "b"
    assert swift_marker("a/", "", "/") == "a/\U0010ffff"
    assert swift_marker("p/a/x", "p/", "/") == "p/a/\U0010ffff"
    assert swift_marker("q/a/x", "p/", "/") == "q/a/x"


def test_parse_max() -> None:
    assert parse_max(None, "max-keys") == 1000
    assert parse_max("5", "max-keys") == 5
    assert parse_max("5000", "max-keys") == 1000
    for bad in ("-1", "x", "1" * 20):
        with pytest.raises(S3Error):
            parse_max(bad, "max-keys")


def test_swift_paths() -> None:
    for path in ("/v1/AUTH_test", "/v1", "/v1.0", "/auth/v1.0", "/info", "/healthcheck",
                 "/metrics"):  # fmt: skip
        assert is_swift_path(path), path
    for path in ("/", "/bucket", "/bucket/key", "/v1x", "/information"):
        assert not is_swift_path(path), path
