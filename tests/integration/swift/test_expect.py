"""`Expect: 100-continue` is answered only after the headers pass authentication: a client
with a bad token or a bad S3 signature hears its error before sending any body byte."""

from __future__ import annotations

import datetime
import socket
import uuid
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.integration

BODY = b"x" * 100_000


def _first_answer(proxy_url: str, request_head: str, timeout_s: float = 10.0) -> bytes:
    """Send only the head of a request (no body) and return what the proxy answers."""
    u = urlsplit(proxy_url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout_s) as s:
        s.sendall(request_head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _head(method: str, path: str, host: str, headers: dict[str, str]) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(BODY)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Expect: 100-continue")
    return "\r\n".join(lines) + "\r\n\r\n"


def test_swift_bad_token_gets_401_not_100(cluster):
    host = urlsplit(cluster.proxy_url).netloc
    head = _head("PUT", "/v1/AUTH_test/c/o", host, {"X-Auth-Token": "AUTH_tknotatoken"})
    answer = _first_answer(cluster.proxy_url, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"connection: close" in answer.lower()


def test_swift_good_token_gets_100_then_201(cluster):
    conn = cluster.connection(user="test:tester", key="testing")
    url, token = conn.get_auth()
    c = f"exp-{uuid.uuid4().hex[:8]}"
    conn.put_container(c)
    u = urlsplit(url)
    head = _head("PUT", f"{u.path}/{c}/o", u.netloc, {"X-Auth-Token": token})
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(head.encode())
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(BODY)
        final = s.recv(65536)
    assert final.startswith(b"HTTP/1.1 201"), final[:200]
    assert conn.get_object(c, "o")[1] == BODY


def test_s3_bad_signature_gets_403_not_100(cluster):
    host = urlsplit(cluster.proxy_url).netloc
    now = datetime.datetime.now(datetime.UTC)
    day, stamp = now.strftime("%Y%m%d"), now.strftime("%Y%m%dT%H%M%SZ")
    auth = (
        f"AWS4-HMAC-SHA256 Credential=test:tester/{day}/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "0" * 64
    )
    headers = {
        "Authorization": auth,
        "x-amz-date": stamp,
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
    }
    answer = _first_answer(cluster.proxy_url, _head("PUT", "/some-bucket/key", host, headers))
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert b"connection: close" in answer.lower()
