"""Large objects: static (SLO, a JSON manifest of segments) and dynamic (DLO, a prefix).

A GET of a manifest streams its segments one after another, each fetched with the byte range
that the client's Range needs, so nothing is held in memory. The manifest itself is stored as
an ordinary object with ``X-Static-Large-Object: True`` (SLO) or ``X-Object-Manifest``
(DLO).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from multidict import CIMultiDict

from proxy.ranges import parse_single_range

if TYPE_CHECKING:
    from proxy.ops import Ops, Result

__all__ = [
    "MAX_SEGMENTS",
    "Segment",
    "delete_slo",
    "get_with_manifests",
    "put_slo_manifest",
]

MAX_SEGMENTS = 1000
_MANIFEST_BYTES_MAX = 8 << 20
_LISTING_PAGE = 10000
_CONDITIONAL = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "Range")


@dataclass(frozen=True)
class Segment:
    container: str
    obj: str
    size: int
    etag: str
    first: int = 0  # byte range inside the segment object, inclusive
    last: int = -1

    @property
    def length(self) -> int:
        return self.last - self.first + 1


def _err(status: int, msg: str) -> Result:
    from proxy.ops import Result

    return Result(status, CIMultiDict({"Content-Type": "text/plain"}), (msg + "\n").encode())


def _split_path(path: str) -> tuple[str, str] | None:
    p = unquote(path).lstrip("/")
    if "/" not in p:
        return None
    c, o = p.split("/", 1)
    return (c, o) if c and o else None


async def put_slo_manifest(
    ops: Ops, account: str, container: str, obj: str, headers: Mapping[str, str], body: bytes
) -> Result:
    """Validate a client's SLO manifest, then store it."""
    from proxy.ops import Result

    try:
        items = json.loads(body)
    except ValueError:
        return _err(400, "Manifest must be valid JSON.")
    if not isinstance(items, list) or not items:
        return _err(400, "Manifest must be a list of segments.")
    if len(items) > MAX_SEGMENTS:
        return _err(413, f"Too many segments; max {MAX_SEGMENTS}")
    stored: list[dict[str, Any]] = []
    problems: list[str] = []
    total = 0
    md5s = hashlib.md5()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            return _err(400, f"Index {i}: segment must have a path")
        unknown = set(item) - {"path", "etag", "size_bytes", "range"}
        if unknown:
            return _err(400, f"Index {i}: unknown key {sorted(unknown)[0]!r}")
        split = _split_path(item["path"])
        if split is None:
            return _err(400, f"Index {i}: path must be /container/object")
        head = await ops.head_object(account, split[0], split[1])
        if head.status == 404:
            problems.append(f"{item['path']}, 404 Not Found")
            continue
        if head.status >= 300:
            problems.append(f"{item['path']}, {head.status}")
            continue
        if head.headers.get("X-Static-Large-Object", "").lower() == "true":
            problems.append(f"{item['path']}, nested SLO manifests are not supported")
            continue
        size = int(head.headers.get("Content-Length", "0"))
        etag = head.headers.get("Etag", "").strip('"')
        if item.get("etag") not in (None, "") and str(item["etag"]).strip('"') != etag:
            problems.append(f"{item['path']}, Etag Mismatch")
        if item.get("size_bytes") is not None and int(item["size_bytes"]) != size:
            problems.append(f"{item['path']}, Size Mismatch")
        seg: dict[str, Any] = {
            "name": "/" + split[0] + "/" + split[1],
            "bytes": size,
            "hash": etag,
            "content_type": head.headers.get("Content-Type", ""),
        }
        seg_len = size
        if item.get("range"):
            r = parse_single_range(f"bytes={item['range']}", size)
            if r is None:
                problems.append(f"{item['path']}, Unsatisfiable Range")
                continue
            seg["range"] = f"{r[0]}-{r[1]}"
            seg_len = r[1] - r[0] + 1
            md5s.update(f"{etag}:{r[0]}-{r[1]};".encode())
        else:
            md5s.update(etag.encode())
        if seg_len < 1:
            problems.append(f"{item['path']}, Too Small; each segment must be at least 1 byte.")
        total += seg_len
        stored.append(seg)
    if problems:
        return _err(400, "Errors:\n" + "\n".join(problems))
    data = json.dumps(stored).encode()
    slo_etag = md5s.hexdigest()
    h = CIMultiDict(headers)
    for k in ("Content-Length", "Transfer-Encoding", "Etag"):
        h.popall(k, None)
    h["Content-Length"] = str(len(data))
    h["X-Static-Large-Object"] = "True"
    h["X-Object-Sysmeta-Slo-Etag"] = slo_etag
    h["X-Object-Sysmeta-Slo-Size"] = str(total)
    if "Content-Type" not in h:
        import mimetypes

        h["Content-Type"] = mimetypes.guess_type(obj)[0] or "application/octet-stream"

    async def one() -> AsyncIterator[bytes]:
        yield data

    res = await ops.put_object(account, container, obj, h, one())
    if res.status == 201:
        res.headers["Etag"] = f'"{slo_etag}"'
    return Result(res.status, res.headers, res.body)


async def _read_manifest(
    ops: Ops, account: str, container: str, obj: str, first: Result
) -> list[Segment]:
    raw = await first.read_all(_MANIFEST_BYTES_MAX)
    segs = []
    for item in json.loads(raw):
        split = _split_path(item["name"])
        assert split is not None
        size = int(item["bytes"])
        lo, hi = 0, size - 1
        if item.get("range"):
            a, b = item["range"].split("-")
            lo, hi = int(a), int(b)
        segs.append(Segment(split[0], split[1], size, str(item.get("hash", "")), lo, hi))
    return segs


async def _dlo_segments(ops: Ops, account: str, spec: str) -> list[Segment] | None:
    split = unquote(spec).split("/", 1)
    if len(split) != 2:
        return None
    container, prefix = split
    segs: list[Segment] = []
    marker = ""
    while True:
        res = await ops.get_container(
            account,
            container,
            {"format": "json", "prefix": prefix, "marker": marker, "limit": str(_LISTING_PAGE)},
        )
        if res.status == 404:
            return segs
        if res.status >= 300:
            return None
        rows = json.loads(res.body or b"[]")
        for row in rows:
            if "name" in row:
                segs.append(
                    Segment(
                        container,
                        row["name"],
                        int(row["bytes"]),
                        str(row["hash"]),
                        0,
                        int(row["bytes"]) - 1,
                    )
                )
        if len(rows) < _LISTING_PAGE:
            return segs
        marker = rows[-1].get("name", rows[-1].get("subdir", ""))


def _lo_etag(segs: list[Segment], slo: bool) -> str:
    h = hashlib.md5()
    for s in segs:
        if slo and (s.first != 0 or s.last != s.size - 1):
            h.update(f"{s.etag}:{s.first}-{s.last};".encode())
        else:
            h.update(s.etag.encode())
    return h.hexdigest()


async def _stream_segments(
    ops: Ops, account: str, segs: list[Segment], start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes start..end (inclusive) of the concatenation of `segs`."""
    offset = 0
    for s in segs:
        seg_start, seg_end = offset, offset + s.length - 1
        offset += s.length
        if seg_end < start or seg_start > end or s.length <= 0:
            continue
        lo = s.first + max(0, start - seg_start)
        hi = s.first + min(s.length - 1, end - seg_start)
        res = await ops.get_object_raw(account, s.container, s.obj, {"Range": f"bytes={lo}-{hi}"})
        if res.status not in (200, 206) or res.stream is None:
            await res.close()
            raise SegmentError(f"segment /{s.container}/{s.obj} answered {res.status}")
        if s.etag and res.headers.get("Etag", "").strip('"') != s.etag:
            await res.close()
            raise SegmentError(f"segment /{s.container}/{s.obj} changed since the manifest")
        want = hi - lo + 1
        got = 0
        async for chunk in res.stream:
            got += len(chunk)
            yield chunk
        if got != want:
            raise SegmentError(f"segment /{s.container}/{s.obj} was short")


class SegmentError(Exception):
    """A segment went missing or changed while streaming a large object."""


async def get_with_manifests(
    ops: Ops, account: str, container: str, obj: str, headers: Mapping[str, str]
) -> Result:
    from proxy.ops import Result

    plain_headers = {k: v for k, v in headers.items() if k not in _CONDITIONAL}
    first = await ops.get_object_raw(account, container, obj, headers)
    meta = first.headers
    if first.status in (304, 412, 416):
        # The object server judged Range and conditions against the manifest's own bytes;
        # if it is a manifest, they must be judged against the large object instead.
        meta = (await ops.head_object(account, container, obj)).headers
    is_slo = meta.get("X-Static-Large-Object", "").lower() == "true"
    dlo_spec = meta.get("X-Object-Manifest")
    if not is_slo and not dlo_spec:
        return first
    # The conditional headers apply to the large object, not the manifest: fetch it plainly.
    await first.close()
    first = await ops.get_object_raw(account, container, obj, plain_headers)
    if first.status != 200:
        return first
    if is_slo:
        segs = await _read_manifest(ops, account, container, obj, first)
    else:
        await first.close()
        got = await _dlo_segments(ops, account, dlo_spec or "")
        if got is None:
            return _err(503, "Could not list the manifest's segments")
        segs = got
    total = sum(s.length for s in segs)
    etag = _lo_etag(segs, is_slo)
    h = CIMultiDict(first.headers)
    for k in ("Content-Length", "Etag", "Content-Range", "X-Static-Large-Object"):
        h.popall(k, None)
    if is_slo:
        h["X-Static-Large-Object"] = "True"
    h["Etag"] = f'"{etag}"'
    h["Accept-Ranges"] = "bytes"
    cond = _check_conditions(headers, etag)
    if cond is not None:
        return Result(cond, h)
    start, end, status = 0, total - 1, 200
    rng = headers.get("Range")
    if rng and total > 0:
        r = parse_single_range(rng, total)
        if r is None and _is_single_range(rng):
            h["Content-Range"] = f"bytes */{total}"
            return Result(416, h, b"Requested Range Not Satisfiable\n")
        if r is not None:
            start, end, status = r[0], r[1], 206
            h["Content-Range"] = f"bytes {start}-{end}/{total}"
    h["Content-Length"] = str(max(0, end - start + 1))
    stream = _stream_segments(ops, account, segs, start, end) if total > 0 else _empty()
    return Result(status, h, b"", stream)


async def _empty() -> AsyncIterator[bytes]:
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk


def _is_single_range(value: str) -> bool:
    return value.strip().lower().startswith("bytes=") and "," not in value


def _check_conditions(headers: Mapping[str, str], etag: str) -> int | None:
    im = headers.get("If-Match")
    if (
        im is not None
        and im.strip() != "*"
        and etag not in [t.strip().strip('"') for t in im.split(",")]
    ):
        return 412
    inm = headers.get("If-None-Match")
    if inm is not None and (
        inm.strip() == "*" or etag in [t.strip().strip('"') for t in inm.split(",")]
    ):
        return 304
    return None


async def delete_slo(ops: Ops, account: str, container: str, obj: str) -> Result:
    """multipart-manifest=delete: remove every segment, then the manifest."""
    from proxy.ops import Result

    first = await ops.get_object_raw(account, container, obj)
    if first.status != 200:
        await first.close()
        return Result(first.status, CIMultiDict(), first.body)
    if first.headers.get("X-Static-Large-Object", "").lower() != "true":
        await first.close()
        res = await ops.delete_object(account, container, obj)
        return _delete_summary(
            1 if res.status < 300 else 0, 0 if res.status < 300 else 1, res.status
        )
    segs = await _read_manifest(ops, account, container, obj, first)
    deleted, not_found, errors = 0, 0, []
    for s in segs:
        r = await ops.delete_object(account, s.container, s.obj)
        if r.status == 404:
            not_found += 1
        elif r.status >= 300:
            errors.append(f"/{s.container}/{s.obj}")
        else:
            deleted += 1
    r = await ops.delete_object(account, container, obj)
    if r.status < 300:
        deleted += 1
    return _delete_summary(deleted, not_found, 200 if not errors else 502, errors)


def _delete_summary(
    deleted: int, not_found: int, status: int, errors: list[str] | None = None
) -> Result:
    from proxy.ops import Result

    body = {
        "Number Deleted": deleted,
        "Number Not Found": not_found,
        "Response Status": "200 OK" if status < 300 else f"{status} Error",
        "Errors": [[e, "Failed"] for e in (errors or [])],
        "Response Body": "",
    }
    return Result(200, CIMultiDict({"Content-Type": "application/json"}), json.dumps(body).encode())
