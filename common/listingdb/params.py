"""Listing request parameters: parsing and validation, sans-IO (a query mapping in, a
ListingParams or a ListingRequestError with the HTTP status and message out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.listingdb.listing import LISTING_LIMIT_MAX, ListingParams

__all__ = [
    "PARAM_BYTES_MAX",
    "ListingFormat",
    "ListingRequestError",
    "negotiate_format",
    "parse_listing_params",
]

PARAM_BYTES_MAX = 4096
_TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
_TEXT_PARAMS = ("prefix", "delimiter", "marker", "end_marker", "path")


class ListingRequestError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ListingFormat:
    kind: str  # "plain", "json" or "xml"
    content_type: str


_FORMATS = {
    "plain": ListingFormat("plain", "text/plain"),
    "json": ListingFormat("json", "application/json"),
    "xml": ListingFormat("xml", "application/xml"),
}
# Offered media types, in Swift's order of preference.
_OFFERED = (
    ("text/plain", _FORMATS["plain"]),
    ("application/json", _FORMATS["json"]),
    ("application/xml", _FORMATS["xml"]),
    ("text/xml", ListingFormat("xml", "text/xml")),
)


def _text(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "")
    if "\x00" in value:
        raise ListingRequestError(400, f"{name} must not contain NUL")
    if len(value.encode()) > PARAM_BYTES_MAX:
        raise ListingRequestError(400, f"{name} is longer than {PARAM_BYTES_MAX} bytes")
    return value


def _limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None or raw == "":
        return LISTING_LIMIT_MAX
    if not raw.isascii() or not raw.isdigit():
        raise ListingRequestError(400, f"limit must be a non-negative integer, got {raw[:32]!r}")
    limit = int(raw)
    if limit > LISTING_LIMIT_MAX:
        raise ListingRequestError(412, f"Maximum limit is {LISTING_LIMIT_MAX}")
    return limit


def parse_listing_params(query: Mapping[str, str]) -> ListingParams:
    """Listing parameters from a decoded query string."""
    texts = {name: _text(query, name) for name in _TEXT_PARAMS}
    return ListingParams(
        prefix=texts["prefix"],
        delimiter=texts["delimiter"],
        marker=texts["marker"],
        end_marker=texts["end_marker"],
        limit=_limit(query),
        reverse=query.get("reverse", "").lower() in _TRUE,
        path=texts["path"] if "path" in query else None,
    )


def _accept_ranges(accept: str) -> list[tuple[float, int, str]]:
    """(q, order, media range) for each entry of an Accept header; bad entries ignored."""
    ranges: list[tuple[float, int, str]] = []
    for order, part in enumerate(accept.split(",")[:64]):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if "/" not in media:
            continue
        q = 1.0
        for param in fields[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((q, order, media))
    return ranges


def _matches(media_range: str, offered: str) -> int:
    """Specificity of a match (3 exact, 2 type/*, 1 */*), 0 for none."""
    if media_range == offered:
        return 3
    mtype, _, sub = media_range.partition("/")
    if sub == "*" and offered.startswith(mtype + "/"):
        return 2
    return 1 if media_range == "*/*" else 0


def negotiate_format(format_param: str | None, accept: str | None) -> ListingFormat:
    """The `format` query parameter wins; else the best Accept match; else plain."""
    if format_param:
        fmt = _FORMATS.get(format_param.lower())
        if fmt is None:
            raise ListingRequestError(400, "format must be one of json, xml, plain")
        return fmt
    if not accept:
        return _FORMATS["plain"]
    best: tuple[float, int, int] | None = None
    chosen: ListingFormat | None = None
    ranges = _accept_ranges(accept)
    for index, (offered, fmt) in enumerate(_OFFERED):
        for q, _order, media in ranges:
            spec = _matches(media, offered)
            if spec and q > 0:
                score = (q, spec, -index)
                if best is None or score > best:
                    best, chosen = score, fmt
    if chosen is None:
        raise ListingRequestError(
            406, "none of text/plain, application/json, application/xml is acceptable"
        )
    return chosen
