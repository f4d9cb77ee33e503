"""Swift JSON listings turned into S3 listing pages.

S3 counts keys and common prefixes together against max-keys, as Swift's `limit` counts
objects and `subdir` rows, so one Swift listing of max-keys + 1 rows tells whether the
page is truncated. A marker that names a common prefix (it holds the delimiter after the
prefix) is moved past that prefix's whole sub-tree, so the next page never repeats it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from proxy.s3.errors import S3Error
from proxy.s3.objmeta import split_content_type
from proxy.s3.xml import Bucket, ListPage, ObjectEntry

if TYPE_CHECKING:
    from proxy.ops import Ops

__all__ = [
    "KEYS_MAX",
    "list_buckets",
    "list_objects",
    "parse_max",
    "parse_swift_time",
    "row_entry",
    "swift_marker",
]

KEYS_MAX = 1000
BUCKETS_MAX = 10_000
_PAGE = 10_000
_PAST_EVERYTHING = "\U0010ffff"


def parse_swift_time(value: str) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_max(value: str | None, name: str, default: int = KEYS_MAX) -> int:
    """max-keys / max-parts / max-uploads: a non-negative integer, capped at `default`."""
    if value is None:
        return default
    if not value.isdigit() or len(value) > 12:
        raise S3Error(
            "InvalidArgument",
            f"Provided {name} not an integer or within integer range",
            extra=[("ArgumentName", name), ("ArgumentValue", value[:32])],
        )
    return min(int(value), default)


def row_entry(row: dict[str, Any]) -> ObjectEntry:
    _, params = split_content_type(str(row.get("content_type", "")))
    size = int(params.get("swift_bytes", row.get("bytes", 0)))
    etag = params.get("s3_etag") or str(row.get("hash", ""))
    return ObjectEntry(str(row["name"]), parse_swift_time(str(row.get("last_modified", ""))),
                       etag, size)  # fmt: skip


def swift_marker(marker: str, prefix: str, delimiter: str | None) -> str:
    """The Swift marker for an S3 marker; past the sub-tree if it names a common prefix."""
    if delimiter and marker.startswith(prefix):
        at = marker.find(delimiter, len(prefix))
        if at >= 0:
            return marker[: at + len(delimiter)] + _PAST_EVERYTHING
    return marker


async def _swift_listing(
    ops: Ops, account: str, container: str | None, query: dict[str, str]
) -> list[dict[str, Any]]:
    if container is None:
        res = await ops.get_account(account, query)
    else:
        res = await ops.get_container(account, container, query)
    if res.status == 404 and container is not None:
        raise S3Error("NoSuchBucket", extra=[("BucketName", container)])
    if res.status in {404, 204}:
        return []
    if res.status >= 300:
        raise S3Error("ServiceUnavailable", "Could not list; try again.")
    rows = json.loads(res.body or b"[]")
    assert isinstance(rows, list)
    return rows


async def list_objects(
    ops: Ops,
    account: str,
    container: str,
    *,
    prefix: str,
    delimiter: str | None,
    marker: str,
    max_keys: int,
) -> ListPage:
    if max_keys == 0:
        return ListPage([], [], False)
    query = {"format": "json", "prefix": prefix, "limit": str(max_keys + 1)}
    if marker:
        query["marker"] = swift_marker(marker, prefix, delimiter)
    if delimiter:
        query["delimiter"] = delimiter
    rows = await _swift_listing(ops, account, container, query)
    truncated = len(rows) > max_keys
    rows = rows[:max_keys]
    entries: list[ObjectEntry] = []
    prefixes: list[str] = []
    for row in rows:
        if "subdir" in row:
            prefixes.append(str(row["subdir"]))
        else:
            entries.append(row_entry(row))
    last = rows[-1] if rows else None
    next_marker = None
    if truncated and last is not None:
        next_marker = str(last.get("subdir", last.get("name", "")))
    return ListPage(entries, prefixes, truncated, next_marker)


async def list_buckets(ops: Ops, account: str, hidden_suffix: str) -> list[Bucket]:
    """Every container of the account except the hidden ones, up to BUCKETS_MAX."""
    buckets: list[Bucket] = []
    marker = ""
    while len(buckets) < BUCKETS_MAX:
        query = {"format": "json", "limit": str(_PAGE)}
        if marker:
            query["marker"] = marker
        rows = await _swift_listing(ops, account, None, query)
        for row in rows:
            name = str(row["name"])
            if not name.endswith(hidden_suffix):
                when = parse_swift_time(str(row.get("last_modified", "")))
                buckets.append(Bucket(name, when))
        if len(rows) < _PAGE:
            break
        marker = str(rows[-1]["name"])
    return buckets[:BUCKETS_MAX]
