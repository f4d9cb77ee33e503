"""Object metadata between S3 and Swift, and S3's conditional-request rules (sans-IO).

S3 `x-amz-meta-<name>` is Swift `X-Object-Meta-<name>`; the content headers pass as they
are. A multipart object is stored as a Swift static large object whose Content-Type
carries two parameters the S3 front reads back and strips from every S3 response:
`swift_bytes=<total size>` (so container listings show the object's size, not the
manifest's, as Swift's own s3api does) and `s3_etag=<md5-of-md5s>-<N>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from multidict import CIMultiDict

from proxy.constraints import check_metadata
from proxy.s3.chunked import strip_aws_chunked
from proxy.s3.errors import S3Error
from proxy.s3.headers import HeaderMap

__all__ = [
    "CONTENT_HEADERS",
    "DEFAULT_CONTENT_TYPE",
    "RESPONSE_OVERRIDES",
    "copy_source_conditions",
    "evaluate_conditions",
    "http_date",
    "object_response_headers",
    "parse_http_time",
    "split_content_type",
    "swift_object_headers",
    "with_type_params",
]

CONTENT_HEADERS = (
    "Content-Type",
    "Content-Encoding",
    "Content-Disposition",
    "Content-Language",
    "Cache-Control",
    "Expires",
)
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
_STORAGE_CLASSES = frozenset({"STANDARD"})
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
_TYPE_PARAMS = ("swift_bytes", "s3_etag")


def swift_object_headers(hmap: HeaderMap) -> CIMultiDict[str]:
    """S3 request headers -> the Swift headers to store with the object."""
    storage_class = hmap.get("x-amz-storage-class")
    if storage_class is not None and storage_class not in _STORAGE_CLASSES:
        raise S3Error("InvalidStorageClass", extra=[("StorageClassRequested", storage_class)])
    if "x-amz-tagging" in hmap:
        raise S3Error("NotImplemented", "Object tagging is not implemented.")
    out: CIMultiDict[str] = CIMultiDict()
    for name in CONTENT_HEADERS:
        value = hmap.get(name)
        if name == "Content-Encoding":
            value = strip_aws_chunked(value)
        if value is not None:
            out[name] = value
    # S3's default type when a client names none (Swift would guess from the name).
    out.setdefault("Content-Type", DEFAULT_CONTENT_TYPE)
    for name, value in hmap.items():
        if name.startswith("x-amz-meta-"):
            out.add("X-Object-Meta-" + name[len("x-amz-meta-") :], value)
    problem = check_metadata(out, "object")
    if problem is not None:
        raise S3Error("MetadataTooLarge", problem[1])
    return out


def split_content_type(value: str) -> tuple[str, dict[str, str]]:
    """'type;swift_bytes=1;s3_etag=x' -> ('type', {'swift_bytes': '1', 's3_etag': 'x'})."""
    parts = value.split(";")
    kept = [parts[0].strip()]
    params: dict[str, str] = {}
    for part in parts[1:]:
        name, sep, val = part.strip().partition("=")
        if sep and name in _TYPE_PARAMS:
            params[name] = val
        else:
            kept.append(part.strip())
    return ";".join(kept), params


def with_type_params(content_type: str, total_bytes: int, s3_etag: str) -> str:
    clean, _ = split_content_type(content_type)
    return f"{clean};swift_bytes={total_bytes};s3_etag={s3_etag}"


def http_date(epoch_s: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch_s, UTC), usegmt=True)


def parse_http_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def object_response_headers(swift: Mapping[str, str]) -> tuple[CIMultiDict[str], str]:
    """Swift object response headers -> (S3 response headers, the S3 ETag without quotes)."""
    h = HeaderMap(swift)
    out: CIMultiDict[str] = CIMultiDict()
    content_type, params = split_content_type(h.get("content-type") or "")
    etag = params.get("s3_etag") or (h.get("etag") or "").strip('"')
    out["ETag"] = f'"{etag}"'
    for name in CONTENT_HEADERS[1:]:
        value = h.get(name)
        if value is not None:
            out[name] = value
    if content_type:
        out["Content-Type"] = content_type
    for name in ("last-modified", "content-length", "content-range", "accept-ranges"):
        value = h.get(name)
        if value is not None:
            out[name.title()] = value
    for name, value in h.items():
        if name.startswith("x-object-meta-"):
            out.add("x-amz-meta-" + name[len("x-object-meta-") :], value)
    out.setdefault("Accept-Ranges", "bytes")
    return out, etag


def _etag_list(value: str) -> list[str]:
    return [t.strip().removeprefix("W/").strip('"') for t in value.split(",") if t.strip()]


def evaluate_conditions(hmap: HeaderMap, etag: str, last_modified_s: float | None) -> int | None:
    """S3's GET/HEAD preconditions: 412, 304, or None to go ahead.

    If-Match decides over If-Unmodified-Since, If-None-Match over If-Modified-Since.
    """
    if_match = hmap.get("if-match")
    if if_match is not None:
        tags = _etag_list(if_match)
        if "*" not in tags and etag not in tags:
            return 412
    else:
        since = parse_http_time(hmap.get("if-unmodified-since"))
        if since is not None and last_modified_s is not None and last_modified_s > since:
            return 412
    if_none = hmap.get("if-none-match")
    if if_none is not None:
        tags = _etag_list(if_none)
        if "*" in tags or etag in tags:
            return 304
    else:
        since = parse_http_time(hmap.get("if-modified-since"))
        if since is not None and last_modified_s is not None and last_modified_s <= since:
            return 304
    return None


def copy_source_conditions(hmap: HeaderMap, etag: str, last_modified_s: float | None) -> None:
    """x-amz-copy-source-if-* : any failed condition is PreconditionFailed (412)."""
    translated = HeaderMap(
        [
            (name[len("x-amz-copy-source-") :], value)
            for name, value in hmap.items()
            if name.startswith("x-amz-copy-source-if-")
        ]
    )
    if evaluate_conditions(translated, etag, last_modified_s) is not None:
        raise S3Error("PreconditionFailed", extra=[("Condition", "x-amz-copy-source-If-*")])
