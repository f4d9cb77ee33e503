"""Classify an S3 request: which bucket, which key, which operation (sans-IO).

Addressing: virtual-hosted style when the Host header is `<bucket>.<domain>` for one of
the configured domains, path style (`/<bucket>/<key>`) otherwise. Bucket and key are
percent-decoded once (a key may hold any UTF-8, '/' included; invalid UTF-8 is InvalidURI).

The operation comes from the method, whether a bucket and key are present, the
sub-resource query parameters and, for PUTs, x-amz-copy-source. Known S3 sub-resources
this server does not implement answer NotImplemented, so a client learns it plainly.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from proxy.s3.authtypes import decode_query
from proxy.s3.errors import S3Error
from proxy.s3.headers import HeaderMap, HeadersLike
from proxy.s3.multipart import SEGMENTS_SUFFIX
from proxy.s3.sigv4 import is_s3_request

__all__ = [
    "KEY_BYTES_MAX",
    "NOT_IMPLEMENTED_SUBRESOURCES",
    "OPERATIONS",
    "S3Request",
    "bucket_from_host",
    "check_version_id",
    "classify",
    "is_s3_request",
    "validate_bucket_name",
    "validate_key",
]

KEY_BYTES_MAX = 1024

OPERATIONS = frozenset(
    {
        "ListBuckets", "CreateBucket", "HeadBucket", "DeleteBucket", "GetBucketLocation",
        "ListObjects", "ListObjectsV2", "ListObjectVersions", "DeleteObjects", "PutObject",
        "GetObject", "HeadObject", "DeleteObject", "CopyObject", "CreateMultipartUpload",
        "UploadPart", "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload",
        "ListParts", "ListMultipartUploads", "GetBucketAcl", "PutBucketAcl", "GetObjectAcl",
        "PutObjectAcl", "GetBucketVersioning", "PutBucketVersioning", "GetBucketTagging",
        "PutBucketTagging", "DeleteBucketTagging", "GetObjectTagging", "PutObjectTagging",
        "DeleteObjectTagging",
    }
)  # fmt: skip

NOT_IMPLEMENTED_SUBRESOURCES = frozenset(
    {
        "accelerate", "analytics", "attributes", "cors", "encryption", "intelligent-tiering",
        "inventory", "legal-hold", "lifecycle", "logging", "metrics", "metadataConfiguration",
        "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
        "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select",
        "torrent", "website",
    }
)  # fmt: skip

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


@dataclass(frozen=True, slots=True)
class S3Request:
    operation: str
    bucket: str | None
    key: str | None
    query: dict[str, str]  # decoded; the first value of each name
    virtual_host: bool

    def __post_init__(self) -> None:
        assert self.operation in OPERATIONS
        assert self.key is None or self.bucket is not None

    @property
    def resource(self) -> str:
        """The Resource element of an error for this request."""
        if self.bucket is None:
            return "/"
        return f"/{self.bucket}" + (f"/{self.key}" if self.key is not None else "")


def validate_bucket_name(name: str, *, strict: bool = True) -> None:
    """S3's bucket naming rules (strict); loose mode accepts any name a Swift container
    can have (1..255 characters, no control characters) except the hidden segments
    containers, so buckets made through Swift stay reachable. InvalidBucketName."""
    if strict:
        ok = (
            _BUCKET_RE.fullmatch(name) is not None
            and ".." not in name
            and ".-" not in name
            and "-." not in name
            and not name.startswith(_RESERVED_PREFIXES)
            and not name.endswith(_RESERVED_SUFFIXES)
            and not _is_ip(name)
        )
    else:
        ok = (
            0 < len(name) <= 255
            and name.isprintable()
            and "/" not in name
            and not name.endswith(SEGMENTS_SUFFIX)
        )
    if not ok:
        raise S3Error("InvalidBucketName", extra=[("BucketName", name[:255])])


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def validate_key(key: str) -> None:
    if len(key.encode("utf-8")) > KEY_BYTES_MAX:
        raise S3Error(
            "KeyTooLongError",
            extra=[("Size", str(len(key.encode("utf-8")))), ("MaxSizeAllowed", "1024")],
        )


def check_version_id(query: dict[str, str]) -> None:
    """Every object of an unversioned bucket is version 'null'; other ids are invalid."""
    version = query.get("versionId")
    if version is not None and version != "null":
        raise S3Error(
            "InvalidArgument",
            "Invalid version id specified",
            extra=[("ArgumentName", "versionId"), ("ArgumentValue", version[:128])],
        )


def bucket_from_host(host: str | None, domains: Sequence[str]) -> str | None:
    """`<bucket>.<domain>[:port]` -> bucket, for the first matching configured domain."""
    if not host:
        return None
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal never names a bucket
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    for domain in domains:
        suffix = "." + domain.lower().strip(".")
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _decode(raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI") from None


def _split_path(raw_path: str, host_bucket: str | None) -> tuple[str | None, str | None]:
    path = raw_path[1:] if raw_path.startswith("/") else raw_path
    if host_bucket is not None:
        return host_bucket, (_decode(path) or None)
    if not path:
        return None, None
    raw_bucket, sep, raw_key = path.partition("/")
    bucket = _decode(raw_bucket)
    key = _decode(raw_key) if sep else ""
    return bucket, (key or None)


def classify(
    method: str,
    host: str | None,
    raw_path: str,
    raw_query: Sequence[tuple[str, str]],
    headers: HeadersLike,
    *,
    domains: Sequence[str] = (),
    strict_bucket_names: bool = True,
) -> S3Request:
    """Work out the S3 operation of a request; raise the S3Error a client should get."""
    host_bucket = bucket_from_host(host, domains)
    bucket, key = _split_path(raw_path, host_bucket)
    try:
        pairs = decode_query(list(raw_query))
    except UnicodeDecodeError:
        raise S3Error("InvalidURI") from None
    query: dict[str, str] = {}
    for name, value in pairs:
        query.setdefault(name, value)
    if key is not None:
        validate_key(key)
    unsupported = NOT_IMPLEMENTED_SUBRESOURCES.intersection(query)
    if unsupported:
        raise S3Error(
            "NotImplemented",
            f"The {sorted(unsupported)[0]} sub-resource is not implemented.",
        )
    hmap = headers if isinstance(headers, HeaderMap) else HeaderMap(headers)
    operation = _operation(method, bucket, key, query, hmap)
    if bucket is not None:
        # Creation enforces S3's rules (unless configured off); other operations accept any
        # container name, so containers made through Swift stay reachable.
        strict = strict_bucket_names and operation == "CreateBucket"
        validate_bucket_name(bucket, strict=strict)
    return S3Request(operation, bucket, key, query, host_bucket is not None)


def _operation(
    method: str, bucket: str | None, key: str | None, query: dict[str, str], hmap: HeaderMap
) -> str:
    if bucket is None:
        if method in ("GET", "HEAD"):
            return "ListBuckets"
        raise S3Error("MethodNotAllowed", extra=[("Method", method), ("ResourceType", "SERVICE")])
    table = _OBJECT_TABLE if key is not None else _BUCKET_TABLE
    rows = table.get(method)
    if rows is None:
        kind = "OBJECT" if key is not None else "BUCKET"
        raise S3Error("MethodNotAllowed", extra=[("Method", method), ("ResourceType", kind)])
    copy = "x-amz-copy-source" in hmap
    for needed, needs_copy, operation in rows:
        if all(name in query for name in needed) and needs_copy in (None, copy):
            return operation
    raise S3Error("MethodNotAllowed", extra=[("Method", method)])


# method -> ordered rows of (query names required, x-amz-copy-source required?, operation);
# the first row that fits wins, so more specific rows come first.
_Row = tuple[tuple[str, ...], bool | None, str]
_BUCKET_TABLE: dict[str, list[_Row]] = {
    "GET": [
        (("location",), None, "GetBucketLocation"),
        (("acl",), None, "GetBucketAcl"),
        (("versioning",), None, "GetBucketVersioning"),
        (("versions",), None, "ListObjectVersions"),
        (("uploads",), None, "ListMultipartUploads"),
        (("tagging",), None, "GetBucketTagging"),
        (("list-type",), None, "ListObjectsV2"),
        ((), None, "ListObjects"),
    ],
    "HEAD": [((), None, "HeadBucket")],
    "PUT": [
        (("acl",), None, "PutBucketAcl"),
        (("versioning",), None, "PutBucketVersioning"),
        (("tagging",), None, "PutBucketTagging"),
        ((), None, "CreateBucket"),
    ],
    "DELETE": [(("tagging",), None, "DeleteBucketTagging"), ((), None, "DeleteBucket")],
    "POST": [(("delete",), None, "DeleteObjects")],
}
_OBJECT_TABLE: dict[str, list[_Row]] = {
    "GET": [
        (("acl",), None, "GetObjectAcl"),
        (("tagging",), None, "GetObjectTagging"),
        (("uploadId",), None, "ListParts"),
        ((), None, "GetObject"),
    ],
    "HEAD": [((), None, "HeadObject")],
    "PUT": [
        (("acl",), None, "PutObjectAcl"),
        (("tagging",), None, "PutObjectTagging"),
        (("partNumber", "uploadId"), True, "UploadPartCopy"),
        (("partNumber", "uploadId"), False, "UploadPart"),
        ((), True, "CopyObject"),
        ((), False, "PutObject"),
    ],
    "DELETE": [
        (("uploadId",), None, "AbortMultipartUpload"),
        (("tagging",), None, "DeleteObjectTagging"),
        ((), None, "DeleteObject"),
    ],
    "POST": [
        (("uploads",), None, "CreateMultipartUpload"),
        (("uploadId",), None, "CompleteMultipartUpload"),
    ],
}
