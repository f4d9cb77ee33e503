"""Conditional requests (RFC 9110 section 13, as Swift applies them), sans-IO.

Order: If-Match (412), else If-Unmodified-Since (412); then If-None-Match (304 for GET/HEAD,
412 otherwise), else If-Modified-Since (304, GET/HEAD only). Dates have one-second
resolution; the object's Last-Modified is its timestamp rounded up to the second. A date
that does not parse is ignored, as the RFC says.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping

__all__ = ["ETAG_LIST_BYTES_MAX", "evaluate", "parse_etag_list", "parse_http_date"]

ETAG_LIST_BYTES_MAX = 8192


def parse_etag_list(value: str) -> list[str] | None:
    """The entity tags of an If-Match/If-None-Match header; ["*"] for a wildcard.

    Weak tags (W/"x") compare by their opaque part, quotes are optional as in Swift.
    None means the header is unusable (too long) and is treated as absent.
    """
    if len(value) > ETAG_LIST_BYTES_MAX:
        return None
    out: list[str] = []
    for raw in value.split(","):
        tag = raw.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if len(tag) >= 2 and tag[0] == tag[-1] == '"':
            tag = tag[1:-1]
        if tag:
            out.append(tag)
    return out


def parse_http_date(value: str) -> float | None:
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()


def _matches(tags: list[str], etag: str) -> bool:
    return "*" in tags or etag in tags


def evaluate(
    method: str, headers: Mapping[str, str], etag: str, last_modified_s: int
) -> int | None:
    """The status a conditional request gets (304/412), or None to proceed normally."""
    safe = method in ("GET", "HEAD")
    if_match = headers.get("If-Match")
    if if_match is not None and (tags := parse_etag_list(if_match)) is not None:
        if not _matches(tags, etag):
            return 412
    elif (ius := headers.get("If-Unmodified-Since")) is not None:
        when = parse_http_date(ius)
        if when is not None and last_modified_s > when:
            return 412
    if_none = headers.get("If-None-Match")
    if if_none is not None and (tags := parse_etag_list(if_none)) is not None:
        if _matches(tags, etag):
            return 304 if safe else 412
    elif safe and (ims := headers.get("If-Modified-Since")) is not None:
        when = parse_http_date(ims)
        if when is not None and last_modified_s <= when:
            return 304
    return None
