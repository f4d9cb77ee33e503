"""AWS Signature Version 4 for S3, header and presigned-query forms; sans-IO.

Flow: `parse_auth(method, raw_path, raw_query_pairs, headers)` -> `AuthRequest | None`
(None: anonymous); the caller looks up `auth.access_key` (unknown: raise
`errors.invalid_access_key(key)`), then `verify(auth, secret, clock)` -> `VerifiedAuth`
or raises `S3Error`. SigV2 requests are parsed and verified through the same two calls.

Canonical form, per AWS for S3: the path is percent-decoded and re-encoded once
(unreserved characters A-Z a-z 0-9 - _ . ~ stay, '/' stays; S3 does not double-encode and
does not normalise dot segments); query names and values are decoded, re-encoded and
sorted by name then value; header values are trimmed with inner runs of spaces collapsed,
repeated headers joined by ','.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from common.clock import Clock
from proxy.s3 import sigv2
from proxy.s3.authtypes import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthRequest,
    Location,
    StreamingSigning,
    VerifiedAuth,
    access_denied_time,
    format_amz_date,
    parse_amz_date,
    parse_http_date,
)
from proxy.s3.errors import S3Error
from proxy.s3.headers import HeaderMap, HeadersLike

__all__ = [
    "ALGORITHM",
    "PRESIGN_EXPIRES_S_MAX",
    "SKEW_S_MAX",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "check_time",
    "derive_signing_key",
    "is_s3_request",
    "parse_auth",
    "signature_mismatch",
    "string_to_sign",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
SKEW_S_MAX = 15 * 60.0
PRESIGN_EXPIRES_S_MAX = 7 * 24 * 3600
AUTH_HEADER_BYTES_MAX = 8192
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_PAYLOAD_MODES = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
)
_QUERY_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)


def is_s3_request(headers: HeadersLike, raw_query: Sequence[tuple[str, str]]) -> bool:
    """True when the request carries S3 (SigV4 or SigV2) authentication."""
    auth = HeaderMap(headers).get("authorization") or ""
    if auth.startswith((ALGORITHM + " ", "AWS ")):
        return True
    names = {name for name, _ in raw_query}
    return "X-Amz-Algorithm" in names or ("AWSAccessKeyId" in names and "Signature" in names)


# ---- canonical request pieces -------------------------------------------------------------


def canonical_uri(raw_path: str) -> str:
    """The S3 canonical URI: decode once, encode once, keep '/'."""
    if not raw_path:
        return "/"
    return quote(unquote_to_bytes(raw_path), safe="/~")


def canonical_query(
    raw_pairs: Sequence[tuple[str, str]], exclude: frozenset[str] = frozenset()
) -> str:
    """Sorted, uniformly encoded query string (raw pairs in, `exclude` names dropped)."""
    encoded = []
    for name, value in raw_pairs:
        decoded_name = unquote_to_bytes(name)
        if decoded_name.decode("utf-8", "replace") in exclude:
            continue
        encoded.append((quote(decoded_name, safe="~"), quote(unquote_to_bytes(value), safe="~")))
    encoded.sort()
    return "&".join(f"{n}={v}" for n, v in encoded)


def canonical_headers(headers: HeaderMap, signed: Sequence[str]) -> str:
    """'name:value\\n' for each signed header, values trimmed and spaces collapsed."""
    lines = []
    for name in signed:
        values = headers.get_all(name)
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    uri: str,
    query: str,
    *,
    headers_block: str,
    signed: Sequence[str],
    payload_hash: str,
) -> str:
    return "\n".join([method, uri, query, headers_block, ";".join(signed), payload_hash])


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def derive_signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


# ---- parsing ------------------------------------------------------------------------------


def parse_auth(
    method: str,
    raw_path: str,
    raw_query: Sequence[tuple[str, str]],
    headers: HeadersLike,
    *,
    region: str | None = None,
    virtual_host_bucket: str | None = None,
) -> AuthRequest | None:
    """Parse S3 authentication from a request; None when the request is anonymous.

    `raw_query` holds the query's pairs still percent-encoded (see `split_query`).
    `region`, when set, is the only region accepted; otherwise any region the client
    signed with is. `virtual_host_bucket` is the bucket taken from the Host header, which
    SigV2 signs as part of the resource.
    """
    hmap = HeaderMap(headers)
    names = {name for name, _ in raw_query}
    auth_header = hmap.get("authorization")
    in_query = "X-Amz-Algorithm" in names or "Signature" in names or "AWSAccessKeyId" in names
    if auth_header is not None and in_query:
        raise S3Error(
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
            extra=[("ArgumentName", "Authorization")],
        )
    if auth_header is not None:
        if len(auth_header) > AUTH_HEADER_BYTES_MAX:
            raise S3Error("AuthorizationHeaderMalformed")
        if auth_header.startswith(ALGORITHM + " "):
            return _parse_header_v4(
                method, raw_path, raw_query, hmap, value=auth_header, region=region
            )
        if auth_header.startswith("AWS "):
            return sigv2.parse_header(method, raw_path, raw_query, hmap, virtual_host_bucket)
        raise S3Error(
            "InvalidArgument",
            "Unsupported Authorization Type",
            extra=[("ArgumentName", "Authorization"), ("ArgumentValue", auth_header[:64])],
        )
    if "X-Amz-Algorithm" in names:
        return _parse_query_v4(method, raw_path, raw_query, hmap, region)
    if in_query:
        return sigv2.parse_query(method, raw_path, raw_query, hmap, virtual_host_bucket)
    return None


def _parse_header_fields(value: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in value[len(ALGORITHM) + 1 :].split(","):
        name, sep, val = item.strip().partition("=")
        if not sep or name in fields:
            raise S3Error("AuthorizationHeaderMalformed")
        fields[name] = val
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise S3Error("AuthorizationHeaderMalformed")
    return fields


class _Credential(NamedTuple):
    access_key: str
    date: str
    region: str
    scope: str


class _Parts(NamedTuple):
    cred: _Credential
    signed: list[str]
    signature: str
    amz_date: str
    when_s: float
    expires_at_s: float | None
    payload: str
    location: Location


def _parse_scope(credential: str, error: str, region: str | None) -> _Credential:
    """Credential 'AK/date/region/s3/aws4_request' -> its parts; the key may hold '/'."""
    parts = credential.rsplit("/", 4)
    if len(parts) != 5 or not parts[0]:
        raise S3Error(
            error,
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
        )
    access_key, date, signed_region, service, terminator = parts
    if service != "s3" or terminator != "aws4_request":
        raise S3Error(
            error,
            "Credential should be scoped to a valid service, 's3', and terminated with "
            f"'aws4_request', not '{service}/{terminator}'.",
        )
    if len(date) != 8 or not date.isdigit():
        raise S3Error(error, f'Invalid credential date "{date}".')
    if region is not None and signed_region != region:
        raise S3Error(
            error,
            f"The authorization header is malformed; the region '{signed_region}' is wrong; "
            f"expecting '{region}'",
            extra=[("Region", region)],
        )
    return _Credential(access_key, date, signed_region, f"{date}/{signed_region}/s3/aws4_request")


def _check_date_matches(cred: _Credential, amz_date: str, error: str) -> None:
    if amz_date[:8] != cred.date:
        raise S3Error(
            error,
            f'Invalid credential date "{cred.date}". This date is not the same as '
            f'X-Amz-Date: "{amz_date[:8]}".',
        )


def _signed_header_names(value: str, error: str) -> list[str]:
    signed = value.split(";")
    if not value or any(not n or n != n.lower() for n in signed) or signed != sorted(signed):
        raise S3Error(error, "SignedHeaders must be lower-case names, sorted, separated by ';'")
    if "host" not in signed:
        raise S3Error(error, "SignedHeaders must include 'host'")
    # A signed header missing from the request canonicalises as empty, as AWS does; the
    # signature then fails to match rather than the request being rejected differently.
    return signed


def _header_amz_date(hmap: HeaderMap) -> tuple[str, float]:
    value = hmap.get("x-amz-date")
    try:
        if value is not None:
            return value, parse_amz_date(value)
        http_date = hmap.get("date")
        if http_date is not None:
            when = parse_http_date(http_date)
            return format_amz_date(when), when
    except ValueError as exc:
        raise access_denied_time() from exc
    raise access_denied_time()


def _payload_hash(hmap: HeaderMap, *, required: bool) -> str:
    value = hmap.get("x-amz-content-sha256")
    if value is None:
        if required:
            raise S3Error(
                "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
            )
        return UNSIGNED_PAYLOAD
    if value in _PAYLOAD_MODES or _SHA256_RE.fullmatch(value):
        return value
    raise S3Error(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a "
        "valid sha256 value.",
        extra=[("ArgumentName", "x-amz-content-sha256"), ("ArgumentValue", value[:80])],
    )


def _parse_header_v4(
    method: str,
    raw_path: str,
    raw_query: Sequence[tuple[str, str]],
    hmap: HeaderMap,
    *,
    value: str,
    region: str | None,
) -> AuthRequest:
    error = "AuthorizationHeaderMalformed"
    fields = _parse_header_fields(value)
    cred = _parse_scope(fields["Credential"], error, region)
    signed = _signed_header_names(fields["SignedHeaders"], error)
    if not _SIGNATURE_RE.fullmatch(fields["Signature"]):
        raise S3Error(error, "The signature must be 64 lower-case hex digits.")
    amz_date, when = _header_amz_date(hmap)
    _check_date_matches(cred, amz_date, error)
    payload = _payload_hash(hmap, required=True)
    parts = _Parts(cred, signed, fields["Signature"], amz_date, when, None, payload, "header")
    query = canonical_query(raw_query)
    return _build(method, raw_path, _raw_sorted_query(raw_query), query, hmap, parts)


def _query_value(raw_query: Sequence[tuple[str, str]], name: str) -> str:
    for key, value in raw_query:
        if key == name:
            return unquote_to_bytes(value).decode("utf-8", "replace")
    raise S3Error("AuthorizationQueryParametersError")


def _parse_query_v4(
    method: str,
    raw_path: str,
    raw_query: Sequence[tuple[str, str]],
    hmap: HeaderMap,
    region: str | None,
) -> AuthRequest:
    error = "AuthorizationQueryParametersError"
    params = {name: _query_value(raw_query, name) for name in _QUERY_PARAMS}
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(error, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    cred = _parse_scope(params["X-Amz-Credential"], error, region)
    signed = _signed_header_names(params["X-Amz-SignedHeaders"], error)
    signature = params["X-Amz-Signature"]
    if not _SIGNATURE_RE.fullmatch(signature):
        raise S3Error(error, "The signature must be 64 lower-case hex digits.")
    amz_date = params["X-Amz-Date"]
    try:
        when = parse_amz_date(amz_date)
    except ValueError as exc:
        raise S3Error(
            error, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
        ) from exc
    _check_date_matches(cred, amz_date, error)
    expires_at = when + _parse_expires(params["X-Amz-Expires"])
    payload = _payload_hash(hmap, required=False)
    parts = _Parts(cred, signed, signature, amz_date, when, expires_at, payload, "query")
    query = canonical_query(raw_query, exclude=frozenset({"X-Amz-Signature"}))
    raw_sorted = _raw_sorted_query(raw_query, "X-Amz-Signature")
    return _build(method, raw_path, raw_sorted, query, hmap, parts)


def _parse_expires(value: str) -> int:
    error = "AuthorizationQueryParametersError"
    if not value.isdigit() or len(value) > 10:
        raise S3Error(error, "X-Amz-Expires should be a number")
    expires = int(value)
    if expires < 1:
        raise S3Error(error, "X-Amz-Expires must be non-negative")
    if expires > PRESIGN_EXPIRES_S_MAX:
        raise S3Error(
            error, "X-Amz-Expires must be less than a week (in seconds) that is 604800 seconds"
        )
    return expires


def _raw_sorted_query(raw_pairs: Sequence[tuple[str, str]], exclude: str = "") -> str:
    """The query exactly as received, only sorted: what a client that signs its own
    (over- or differently-encoded) wire form signs."""
    return "&".join(f"{n}={v}" for n, v in sorted(raw_pairs) if n != exclude)


def _build(
    method: str, raw_path: str, raw_query: str, query: str, hmap: HeaderMap, p: _Parts
) -> AuthRequest:
    block = canonical_headers(hmap, p.signed)
    uri = canonical_uri(raw_path)
    canonical = canonical_request(
        method, uri, query, headers_block=block, signed=p.signed, payload_hash=p.payload
    )
    alt = None
    raw_uri = raw_path or "/"
    if raw_uri != uri or raw_query != query:
        alt_canonical = canonical_request(
            method, raw_uri, raw_query, headers_block=block, signed=p.signed, payload_hash=p.payload
        )
        alt = string_to_sign(p.amz_date, p.cred.scope, alt_canonical)
    return AuthRequest(
        version="v4",
        location=p.location,
        access_key=p.cred.access_key,
        signature=p.signature,
        string_to_sign=string_to_sign(p.amz_date, p.cred.scope, canonical),
        canonical_request=canonical,
        request_time_s=p.when_s,
        expires_at_s=p.expires_at_s,
        alt_string_to_sign=alt,
        amz_date=p.amz_date,
        scope=p.cred.scope,
        scope_date=p.cred.date,
        region=p.cred.region,
        payload_hash=p.payload,
    )


# ---- verification -------------------------------------------------------------------------


def verify(
    auth: AuthRequest, secret: str, clock: Clock, *, skew_s_max: float = SKEW_S_MAX
) -> VerifiedAuth:
    """Check time (skew or expiry) and signature; raise the matching S3Error."""
    if auth.version == "v2":
        return sigv2.verify(auth, secret, clock, skew_s_max=skew_s_max)
    check_time(auth, clock.time(), skew_s_max)
    key = derive_signing_key(secret, auth.scope_date, auth.region)
    candidates = [auth.string_to_sign]
    if auth.alt_string_to_sign is not None:
        candidates.append(auth.alt_string_to_sign)
    for sts in candidates:
        computed = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()
        if hmac.compare_digest(computed, auth.signature):
            break
    else:
        raise signature_mismatch(auth)
    streaming = None
    if auth.payload_hash in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
        streaming = StreamingSigning(key, auth.amz_date, auth.scope, auth.signature)
    return VerifiedAuth(
        access_key=auth.access_key,
        version="v4",
        location=auth.location,
        payload_hash=auth.payload_hash,
        streaming=streaming,
    )


def check_time(auth: AuthRequest, now_s: float, skew_s_max: float) -> None:
    """Presigned: not before its date (beyond skew), not after expiry. Header: within skew."""
    if auth.expires_at_s is not None:
        if now_s > auth.expires_at_s:
            raise S3Error(
                "AccessDenied",
                "Request has expired",
                extra=[
                    ("X-Amz-Expires", str(int(auth.expires_at_s - auth.request_time_s))),
                    ("Expires", _iso(auth.expires_at_s)),
                    ("ServerTime", _iso(now_s)),
                ],
            )
        if auth.request_time_s - now_s > skew_s_max:
            raise S3Error("AccessDenied", "Request is not valid yet")
        return
    if abs(now_s - auth.request_time_s) > skew_s_max:
        raise S3Error(
            "RequestTimeTooSkewed",
            extra=[
                ("RequestTime", auth.amz_date or _iso(auth.request_time_s)),
                ("ServerTime", _iso(now_s)),
                ("MaxAllowedSkewMilliseconds", str(int(skew_s_max * 1000))),
            ],
        )


def _iso(epoch_s: float) -> str:
    amz = format_amz_date(epoch_s)
    return f"{amz[0:4]}-{amz[4:6]}-{amz[6:8]}T{amz[9:11]}:{amz[11:13]}:{amz[13:15]}Z"


def signature_mismatch(auth: AuthRequest) -> S3Error:
    """SignatureDoesNotMatch with the hints AWS gives to debug a client."""
    extra = [
        ("AWSAccessKeyId", auth.access_key),
        ("StringToSign", auth.string_to_sign),
        ("SignatureProvided", auth.signature),
        ("StringToSignBytes", " ".join(f"{b:02x}" for b in auth.string_to_sign.encode())),
    ]
    if auth.canonical_request:
        extra.append(("CanonicalRequest", auth.canonical_request))
    return S3Error("SignatureDoesNotMatch", extra=extra)
