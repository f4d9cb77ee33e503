"""Sign requests with botocore's real signers and hand them over as the proxy sees them.

No mocks: botocore is the client; these helpers only turn its prepared request into the
(method, raw path, raw query pairs, headers) the S3 front receives off the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from common.clock import ManualClock
from proxy.s3.authtypes import parse_amz_date, parse_http_date, split_query

ACCESS_KEY = "test:tester"
SECRET = "testing"


@dataclass
class Wire:
    method: str
    raw_path: str
    raw_query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def replace_header(self, name: str, value: str) -> Wire:
        headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        headers.append((name, value))
        return Wire(self.method, self.raw_path, self.raw_query, headers, self.body)

    def clock(self) -> ManualClock:
        """A clock standing at the moment the request says it was signed."""
        amz = self.header("x-amz-date")
        if amz is not None:
            return ManualClock(parse_amz_date(amz))
        for name, value in self.raw_query:
            if name == "X-Amz-Date":
                return ManualClock(parse_amz_date(value))
            if name == "Expires":  # SigV2 presigned: stand one second after signing
                return ManualClock(float(value) - 3599)
        date = self.header("date")
        assert date is not None
        return ManualClock(parse_http_date(date))


def _to_wire(req: AWSRequest) -> Wire:
    prepared = req.prepare()
    split = urlsplit(prepared.url)
    headers = [(k, v if isinstance(v, str) else v.decode()) for k, v in prepared.headers.items()]
    if not any(k.lower() == "host" for k, _ in headers):
        headers.append(("Host", split.netloc))
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    return Wire(prepared.method, split.path, split_query(split.query), headers, bytes(body))


def _request(method: str, url: str, headers: dict[str, str] | None, body: bytes) -> AWSRequest:
    return AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)


def sign_v4(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    region: str = "us-east-1",
    access_key: str = ACCESS_KEY,
    secret: str = SECRET,
    sign_payload: bool | None = None,
    context: Mapping[str, object] | None = None,
) -> Wire:
    """Sign like an S3 client does; `sign_payload=False` gives UNSIGNED-PAYLOAD, a
    `context` with a trailer checksum algorithm gives STREAMING-UNSIGNED-PAYLOAD-TRAILER."""
    req = _request(method, url, headers, body)
    req.context.update(context or {})
    if sign_payload is not None:
        req.context["client_config"] = Config(s3={"payload_signing_enabled": sign_payload})
    S3SigV4Auth(Credentials(access_key, secret), "s3", region).add_auth(req)
    return _to_wire(req)


def presign_v4(
    method: str,
    url: str,
    *,
    expires_s: int = 3600,
    headers: dict[str, str] | None = None,
    region: str = "us-east-1",
    secret: str = SECRET,
) -> Wire:
    req = _request(method, url, headers, b"")
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, secret), "s3", region, expires=expires_s).add_auth(req)
    return _to_wire(req)


def sign_v2(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    auth_path: str | None = None,
    secret: str = SECRET,
) -> Wire:
    req = _request(method, url, headers, b"")
    req.auth_path = auth_path
    HmacV1Auth(Credentials(ACCESS_KEY, secret)).add_auth(req)
    return _to_wire(req)


def presign_v2(method: str, url: str, *, expires_s: int = 3600) -> Wire:
    req = _request(method, url, None, b"")
    HmacV1QueryAuth(Credentials(ACCESS_KEY, SECRET), expires=expires_s).add_auth(req)
    return _to_wire(req)
