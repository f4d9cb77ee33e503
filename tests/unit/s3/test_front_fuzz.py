"""Garbage at the S3 front: every answer is an S3 response (an XML error for failures),
never a 500, a traceback or a hang."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.s3.botosign import sign_v4
from tests.unit.s3.frontserver import Front, serve_front

pytestmark = pytest.mark.integration

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]
SUBRESOURCES = ["", "acl", "uploads", "uploadId=x", "partNumber=1&uploadId=AAAAAAAAAAAAAAAAAAAAAA",
                "delete", "list-type=2", "list-type=3", "max-keys=-4", "versions", "location",
                "tagging", "versioning", "encoding-type=zip", "continuation-token=%%%",
                "X-Amz-Algorithm=AWS4-HMAC-SHA256", "AWSAccessKeyId=a&Signature=b"]  # fmt: skip
AUTHS = [
    None,
    "AWS4-HMAC-SHA256 garbage",
    "AWS a",
    "AWS test:tester:c2lnbmF0dXJl",
    "AWS4-HMAC-SHA256 Credential=test:tester/20990101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=" + "a" * 64,
    "Bearer x",
    "AWS4-HMAC-SHA256",
]


# The module-scoped server is shared on purpose: every example hits the same front.
FIXTURES_OK = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def front() -> Iterator[Front]:
    with serve_front() as f:
        f.client().create_bucket(Bucket="fuzz")
        yield f


def send(front: Front, method: str, target: str, headers: dict[str, str],
         body: bytes) -> tuple[int, bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    try:
        conn.request(method, target, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check(method: str, status: int, body: bytes) -> None:
    assert status != 500, body
    assert 200 <= status < 600
    if status >= 400 and method != "HEAD":
        assert body.startswith(b"<?xml") and b"<Code>" in body, body[:200]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(METHODS),
    path=st.text(max_size=40),
    sub=st.sampled_from(SUBRESOURCES),
    auth=st.sampled_from(AUTHS),
    body=st.binary(max_size=200),
    bucketed=st.booleans(),
)
def test_anything_gets_an_s3_answer(
    front: Front, method: str, path: str, sub: str, auth: str | None, body: bytes,
    bucketed: bool,
) -> None:  # fmt: skip
    target = ("/fuzz/" if bucketed else "/") + quote(path.encode("utf-8", "surrogatepass"))
    if target.startswith(("/v1", "/auth", "/info", "/healthcheck", "/metrics")):
        return  # Swift's paths, not the S3 front's
    if sub:
        target += "?" + sub
    headers = {"Authorization": auth} if auth else {}
    status, data = send(front, method, target, headers, body)
    check(method, status, data)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=st.sampled_from(METHODS), sub=st.sampled_from(SUBRESOURCES),
       body=st.binary(max_size=300), key=st.text(min_size=1, max_size=20))  # fmt: skip
def test_signed_garbage_gets_an_s3_answer(
    front: Front, method: str, sub: str, body: bytes, key: str
) -> None:
    path = "/fuzz/" + quote(key.encode("utf-8", "surrogatepass"), safe="/~")
    url = f"http://127.0.0.1:{front.port}{path}" + (f"?{sub}" if sub else "")
    w = sign_v4(method, url, body=body)
    target = w.raw_path + ("?" + "&".join(f"{n}={v}" if v else n for n, v in w.raw_query)
                           if w.raw_query else "")  # fmt: skip
    status, data = send(front, method, target, dict(w.headers), body)
    check(method, status, data)
