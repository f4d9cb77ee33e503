"""Records shared by the SigV4 and SigV2 verifiers, and request-target helpers.

`AuthRequest` is everything parsed from a request that does not need the secret; the
caller looks the access key up, then `verify` (in `sigv4`) checks time and signature and
returns a `VerifiedAuth`. Both records are frozen and validate what they hold.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import unquote

from proxy.s3.errors import S3Error

__all__ = [
    "EMPTY_SHA256",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "AuthRequest",
    "Location",
    "StreamingSigning",
    "VerifiedAuth",
    "decode_query",
    "format_amz_date",
    "parse_amz_date",
    "parse_http_date",
    "split_query",
    "split_target",
]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

Version = Literal["v4", "v2"]
Location = Literal["header", "query"]


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """A parsed, not yet verified, S3 authentication.

    `string_to_sign` is what the client must have signed; `alt_string_to_sign`, when
    set, is the same built from the path exactly as received (for clients that sign a
    path whose percent-encoding differs from AWS's canonical one).
    """

    version: Version
    location: Location
    access_key: str
    signature: str
    string_to_sign: str
    canonical_request: str
    request_time_s: float
    expires_at_s: float | None = None
    alt_string_to_sign: str | None = None
    # SigV4 only:
    amz_date: str = ""
    scope: str = ""
    scope_date: str = ""
    region: str = ""
    payload_hash: str = UNSIGNED_PAYLOAD

    def __post_init__(self) -> None:
        assert self.access_key, "an AuthRequest always names an access key"
        assert self.version == "v2" or len(self.scope.split("/")) == 4


@dataclass(frozen=True, slots=True)
class StreamingSigning:
    """What an aws-chunked decoder needs to verify a signed chunk chain."""

    signing_key: bytes
    amz_date: str
    scope: str
    seed_signature: str

    def __post_init__(self) -> None:
        assert len(self.signing_key) == 32 and len(self.seed_signature) == 64

    def sign(self, string_to_sign: str) -> str:
        return hmac.new(self.signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifiedAuth:
    """A request whose signature and time checked out."""

    access_key: str
    version: Version
    location: Location
    # x-amz-content-sha256 as sent (a hex digest, UNSIGNED-PAYLOAD or a STREAMING-* mode);
    # UNSIGNED-PAYLOAD for SigV2 and for presigned URLs without the header.
    payload_hash: str
    streaming: StreamingSigning | None = None

    @property
    def is_streaming(self) -> bool:
        return self.payload_hash.startswith("STREAMING-")

    @property
    def payload_sha256(self) -> str | None:
        """The body's SHA-256 the client committed to, if it did (hex)."""
        if len(self.payload_hash) == 64 and not self.is_streaming:
            return self.payload_hash
        return None


def split_target(raw_target: str) -> tuple[str, str]:
    """Split a raw request target into (raw path, raw query string)."""
    path, _, query = raw_target.partition("?")
    return path, query


def split_query(raw_query: str) -> list[tuple[str, str]]:
    """Raw query string -> raw (still percent-encoded) (name, value) pairs, in order."""
    pairs: list[tuple[str, str]] = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((name, value))
    return pairs


def decode_query(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Percent-decode raw query pairs ('+' stays '+', as AWS SDKs encode spaces as %20)."""
    return [(unquote(n, errors="strict"), unquote(v, errors="strict")) for n, v in pairs]


def parse_amz_date(value: str) -> float:
    """'YYYYMMDDTHHMMSSZ' -> epoch seconds; ValueError if malformed."""
    if len(value) != 16:
        raise ValueError("x-amz-date must be YYYYMMDDTHHMMSSZ")
    moment = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return moment.timestamp()


def format_amz_date(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_http_date(value: str) -> float:
    """An RFC 7231 / RFC 1123 date header -> epoch seconds; ValueError if malformed."""
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"bad HTTP date {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def access_denied_time() -> S3Error:
    return S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
