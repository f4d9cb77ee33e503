"""AWS Signature Version 2 (HMAC-SHA1) for S3: `Authorization: AWS AKID:sig` and presigned
`AWSAccessKeyId`/`Signature`/`Expires` queries; sans-IO. Reached through `sigv4.parse_auth`
and `sigv4.verify`, which dispatch here.

String to sign: METHOD, Content-MD5, Content-Type, Date (empty when x-amz-date is sent; the
Expires value for presigned URLs), the sorted x-amz-* headers, then the resource: the raw
path (with '/bucket' in front for virtual-hosted requests) and the signed sub-resources.
The access key may itself contain ':' (tempauth's 'account:user'), so the header is split
at its last ':'.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import unquote

from common.clock import Clock
from proxy.s3.authtypes import (
    UNSIGNED_PAYLOAD,
    AuthRequest,
    VerifiedAuth,
    access_denied_time,
    parse_amz_date,
    parse_http_date,
)
from proxy.s3.errors import S3Error
from proxy.s3.headers import HeaderMap

__all__ = ["SUBRESOURCES", "parse_header", "parse_query", "string_to_sign", "verify"]

SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "cors", "delete", "inventory", "legal-hold",
        "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
        "partNumber", "policy", "replication", "requestPayment", "response-cache-control",
        "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires", "restore",
        "retention", "select", "select-type", "storageClass", "tagging", "torrent", "uploadId",
        "uploads", "versionId", "versioning", "versions", "website",
    }
)  # fmt: skip
EXPIRES_MAX = 2**40


def string_to_sign(
    method: str,
    raw_path: str,
    raw_query: Sequence[tuple[str, str]],
    hmap: HeaderMap,
    *,
    date_line: str,
    virtual_host_bucket: str | None,
) -> str:
    lines = [
        method,
        (hmap.get("content-md5") or "").strip(),
        (hmap.get("content-type") or "").strip(),
        date_line,
    ]
    amz = sorted(n for n in hmap.names() if n.startswith("x-amz-"))
    lines.extend(f"{n}:{','.join(v.strip() for v in hmap.get_all(n))}" for n in amz)
    resource = raw_path or "/"
    if virtual_host_bucket:
        resource = "/" + virtual_host_bucket + resource
    # An empty value signs as the bare name ('?uploads'), which is what SDKs send.
    subs = sorted((name, unquote(value)) for name, value in raw_query if name in SUBRESOURCES)
    if subs:
        resource += "?" + "&".join(f"{n}={v}" if v else n for n, v in subs)
    lines.append(resource)
    return "\n".join(lines)


def parse_header(
    method: str,
    raw_path: str,
    raw_query: Sequence[tuple[str, str]],
    hmap: HeaderMap,
    virtual_host_bucket: str | None,
) -> AuthRequest:
    value = hmap.get("authorization") or ""
    access_key, sep, signature = value[4:].strip().rpartition(":")
    if not sep or not access_key or not signature:
        raise S3Error("AuthorizationHeaderMalformed", "Authorization must be 'AWS AKID:signature'")
    amz_date = hmap.get("x-amz-date")
    try:
        if amz_date is not None:
            when = _parse_any_date(amz_date)
            date_line = ""
        else:
            date_value = hmap.get("date")
            if date_value is None:
                raise access_denied_time()
            when = parse_http_date(date_value)
            date_line = date_value.strip()
    except ValueError as exc:
        raise access_denied_time() from exc
    sts = string_to_sign(
        method,
        raw_path,
        raw_query,
        hmap,
        date_line=date_line,
        virtual_host_bucket=virtual_host_bucket,
    )
    return AuthRequest(
        version="v2",
        location="header",
        access_key=access_key,
        signature=signature,
        string_to_sign=sts,
        canonical_request="",
        request_time_s=when,
    )


def _parse_any_date(value: str) -> float:
    try:
        return parse_amz_date(value)
    except ValueError:
        return parse_http_date(value)


def parse_query(
    method: str,
    raw_path: str,
    raw_query: Sequence[tuple[str, str]],
    hmap: HeaderMap,
    virtual_host_bucket: str | None,
) -> AuthRequest:
    wanted = ("AWSAccessKeyId", "Signature", "Expires")
    params = {n: unquote(v) for n, v in raw_query if n in wanted}
    if len(params) != 3 or not params["AWSAccessKeyId"]:
        raise S3Error(
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId "
            "parameters",
        )
    expires = params["Expires"]
    if not expires.isdigit() or int(expires) > EXPIRES_MAX:
        raise S3Error("AccessDenied", "Query-string authentication Expires must be epoch seconds")
    sts = string_to_sign(
        method,
        raw_path,
        raw_query,
        hmap,
        date_line=expires,
        virtual_host_bucket=virtual_host_bucket,
    )
    return AuthRequest(
        version="v2",
        location="query",
        access_key=params["AWSAccessKeyId"],
        signature=params["Signature"],
        string_to_sign=sts,
        canonical_request="",
        request_time_s=float(expires),
        expires_at_s=float(expires),
    )


def sign(secret: str, sts: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), sts.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(auth: AuthRequest, secret: str, clock: Clock, *, skew_s_max: float) -> VerifiedAuth:
    now = clock.time()
    if auth.expires_at_s is not None:
        if now > auth.expires_at_s:
            raise S3Error("AccessDenied", "Request has expired")
    elif abs(now - auth.request_time_s) > skew_s_max:
        raise S3Error(
            "RequestTimeTooSkewed",
            extra=[("MaxAllowedSkewMilliseconds", str(int(skew_s_max * 1000)))],
        )
    try:
        provided = base64.b64decode(auth.signature, validate=True)
    except (binascii.Error, ValueError):
        provided = b""
    expected = base64.b64decode(sign(secret, auth.string_to_sign))
    if not hmac.compare_digest(provided, expected):
        raise S3Error(
            "SignatureDoesNotMatch",
            extra=[
                ("AWSAccessKeyId", auth.access_key),
                ("StringToSign", auth.string_to_sign),
                ("SignatureProvided", auth.signature),
            ],
        )
    return VerifiedAuth(
        access_key=auth.access_key,
        version="v2",
        location=auth.location,
        payload_hash=UNSIGNED_PAYLOAD,
    )
