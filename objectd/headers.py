"""Which request headers an object keeps, and how a POST's .meta merges over a PUT's .data."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "PERSISTED_HEADERS",
    "POSTABLE_HEADERS",
    "is_postable",
    "merge_post_headers",
    "persisted_from_request",
    "postable_from_request",
]

USER_META_PREFIX = "x-object-meta-"
SYSMETA_PREFIX = "x-object-sysmeta-"

# Kept from a PUT (besides X-Object-Meta-* and X-Object-Sysmeta-*).
PERSISTED_HEADERS = frozenset(
    {
        "content-encoding",
        "content-disposition",
        "content-language",
        "cache-control",
        "expires",
        "x-delete-at",
        "x-object-manifest",
        "x-static-large-object",
    }
)
# A POST replaces these (and all X-Object-Meta-*) as a set; sysmeta and SLO-ness stay.
POSTABLE_HEADERS = frozenset(
    {
        "content-encoding",
        "content-disposition",
        "content-language",
        "cache-control",
        "expires",
        "x-delete-at",
        "x-object-manifest",
    }
)


def _title(name: str) -> str:
    return "-".join(p[:1].upper() + p[1:] for p in name.split("-"))


def is_postable(name: str) -> bool:
    low = name.lower()
    return low.startswith(USER_META_PREFIX) or low in POSTABLE_HEADERS


def persisted_from_request(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers.items():
        low = k.lower()
        if (
            low.startswith(USER_META_PREFIX) or low.startswith(SYSMETA_PREFIX)
        ) or low in PERSISTED_HEADERS:
            out[_title(low)] = v
    return out


def postable_from_request(headers: Mapping[str, str]) -> dict[str, str]:
    return {_title(k.lower()): v for k, v in headers.items() if is_postable(k)}


def merge_post_headers(
    data_headers: Mapping[str, str], meta_headers: Mapping[str, str]
) -> dict[str, str]:
    """The headers an object shows: the PUT's, with every POST-able one replaced by the POST's."""
    merged = {k: v for k, v in data_headers.items() if not is_postable(k)}
    merged.update(meta_headers)
    return merged
