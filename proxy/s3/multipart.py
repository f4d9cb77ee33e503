"""S3 multipart upload rules and storage naming (pure logic; no I/O).

Storage layout (docs/s3.md): parts live in a hidden container `<bucket>+segments` (a '+'
can never be in a bucket name, so it never collides with a real bucket):

  <key>/<upload-id>                 the upload's marker object: its metadata holds the
                                    headers to apply at completion and when it began
  <key>/<upload-id>/<NNNNN>         part NNNNN (zero-padded to five digits, so a plain
                                    listing returns parts in part-number order)

Completion writes the object as a static large object whose manifest lists the chosen
parts in order; its ETag is S3's multipart ETag, md5(concatenated binary part MD5s)-N.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from proxy.s3.errors import S3Error

__all__ = [
    "OBJECT_BYTES_MAX",
    "PARTS_MAX",
    "PART_BYTES_MAX",
    "PART_BYTES_MIN",
    "SEGMENTS_SUFFIX",
    "StoredPart",
    "check_upload_id",
    "marker_name",
    "multipart_etag",
    "new_upload_id",
    "parse_part_number",
    "parse_segment_name",
    "part_name",
    "segments_container",
    "upload_prefix",
    "validate_completion",
]

PART_BYTES_MIN = 5 * 1024 * 1024
PART_BYTES_MAX = 5 * 1024**3
OBJECT_BYTES_MAX = 5 * 1024**4
PARTS_MAX = 10_000
SEGMENTS_SUFFIX = "+segments"
_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")
_PART_RE = re.compile(r"[0-9]{5}")


@dataclass(frozen=True, slots=True)
class StoredPart:
    number: int
    etag: str  # hex MD5 of the part's bytes, no quotes
    size: int
    last_modified_s: float = 0.0

    def __post_init__(self) -> None:
        assert 1 <= self.number <= PARTS_MAX and self.size >= 0


def multipart_etag(part_md5_hexes: Sequence[str]) -> str:
    """S3's ETag of a completed multipart object: md5 of the binary part MD5s, '-', count."""
    joined = b"".join(bytes.fromhex(h) for h in part_md5_hexes)
    return f"{hashlib.md5(joined).hexdigest()}-{len(part_md5_hexes)}"


def new_upload_id(rng: random.Random) -> str:
    """22 URL- and path-safe characters from 128 random bits (injected RNG).

    An upload id names a storage path component, which is why `check_upload_id` insists on
    exactly this alphabet and length before one is ever used.
    """
    raw = rng.getrandbits(128).to_bytes(16, "big")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def check_upload_id(upload_id: str) -> str:
    if not _UPLOAD_ID_RE.fullmatch(upload_id):
        raise S3Error("NoSuchUpload", extra=[("UploadId", upload_id[:64])])
    return upload_id


def parse_part_number(value: str | None) -> int:
    if value is None or not value.isdigit() or not 1 <= int(value[:6]) <= PARTS_MAX:
        raise S3Error(
            "InvalidArgument",
            f"Part number must be an integer between 1 and {PARTS_MAX}, inclusive",
            extra=[("ArgumentName", "partNumber"), ("ArgumentValue", (value or "")[:16])],
        )
    return int(value)


def segments_container(bucket: str) -> str:
    return bucket + SEGMENTS_SUFFIX


def marker_name(key: str, upload_id: str) -> str:
    return f"{key}/{check_upload_id(upload_id)}"


def upload_prefix(key: str, upload_id: str) -> str:
    """The listing prefix that selects exactly one upload's parts."""
    return marker_name(key, upload_id) + "/"


def part_name(key: str, upload_id: str, number: int) -> str:
    assert 1 <= number <= PARTS_MAX
    return f"{marker_name(key, upload_id)}/{number:05d}"


def parse_segment_name(name: str) -> tuple[str, str, int | None] | None:
    """A name in the segments container -> (key, upload id, part number or None for the
    marker), or None if it is neither."""
    head, _, last = name.rpartition("/")
    if not head:
        return None
    if _UPLOAD_ID_RE.fullmatch(last):
        return head, last, None
    key, _, upload_id = head.rpartition("/")
    if key and _UPLOAD_ID_RE.fullmatch(upload_id) and _PART_RE.fullmatch(last):
        number = int(last)
        return (key, upload_id, number) if number >= 1 else None
    return None


def validate_completion(
    requested: Sequence[tuple[int, str]], stored: Mapping[int, StoredPart]
) -> list[StoredPart]:
    """Check a CompleteMultipartUpload part list against what was uploaded.

    Order first (InvalidPartOrder), then each part exists with that ETag (InvalidPart),
    then sizes: every part but the last at least 5 MiB (EntityTooSmall), the whole at
    most 5 TiB (EntityTooLarge). Returns the chosen parts in order.
    """
    if not requested:
        raise S3Error("MalformedXML")
    if len(requested) > PARTS_MAX:
        raise S3Error("InvalidArgument", f"Part count must be at most {PARTS_MAX}.")
    numbers = [n for n, _ in requested]
    if any(b <= a for a, b in itertools.pairwise(numbers)):
        raise S3Error("InvalidPartOrder")
    chosen: list[StoredPart] = []
    for number, etag in requested:
        part = stored.get(number)
        if part is None or part.etag != etag.strip().strip('"').lower():
            raise S3Error("InvalidPart", extra=[("PartNumber", str(number)), ("ETag", etag)])
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < PART_BYTES_MIN:
            raise S3Error(
                "EntityTooSmall",
                extra=[
                    ("ProposedSize", str(part.size)),
                    ("MinSizeAllowed", str(PART_BYTES_MIN)),
                    ("PartNumber", str(part.number)),
                    ("ETag", part.etag),
                ],
            )
    if sum(p.size for p in chosen) > OBJECT_BYTES_MAX:
        raise S3Error("EntityTooLarge", extra=[("MaxSizeAllowed", str(OBJECT_BYTES_MAX))])
    return chosen
