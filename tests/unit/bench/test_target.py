"""Targets: Swift URLs and S3 presigned URLs (checked by cairn's own SigV4 verifier)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from bench.target import S3Target, SwiftTarget
from common.clock import SystemClock
from proxy.s3.authtypes import split_query
from proxy.s3.errors import S3Error
from proxy.s3.sigv4 import parse_auth, verify


def test_swift_urls_are_quoted_and_carry_the_token() -> None:
    t = SwiftTarget("http://127.0.0.1:8080/v1/AUTH_a", "tok")
    assert t.base_url == "http://127.0.0.1:8080"
    assert t.container_path("c d") == "/v1/AUTH_a/c%20d"
    url, headers = t.request("GET", "c", "o/1", "format=json&limit=5")
    assert url == "http://127.0.0.1:8080/v1/AUTH_a/c/o%2F1?format=json&limit=5"
    assert headers == {"X-Auth-Token": "tok"} == t.static_headers()


def _check(t: S3Target, method: str, url: str, secret: str) -> str:
    parts = urlsplit(url)
    auth = parse_auth(method, parts.path, split_query(parts.query), {"Host": parts.netloc})
    assert auth is not None
    return verify(auth, secret, SystemClock()).access_key


@pytest.mark.parametrize(
    ("method", "obj", "query"),
    [
        ("PUT", "o 1", ""),
        ("GET", "o", ""),
        ("DELETE", "x/y", ""),
        ("GET", None, "format=json&limit=7"),
    ],
)
def test_s3_presigned_urls_verify(method: str, obj: str | None, query: str) -> None:
    t = S3Target("http://127.0.0.1:9/", "AKID", "secret-key")
    url, headers = t.request(method, "bucket", obj, query)
    assert headers == {} and t.static_headers() is None
    assert _check(t, method, url, "secret-key") == "AKID"
    if query:
        assert "list-type=2" in url and "max-keys=7" in url
    with pytest.raises(S3Error):
        _check(t, method, url, "other-secret")
