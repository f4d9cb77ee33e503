"""Builders for every S3 XML response body the S3 front sends (sans-IO; bytes out).

Records in, bytes out: handlers fill the small typed records below and call one builder.
Text is escaped by ElementTree. With `encoding_type="url"` the names S3 encodes (keys,
prefixes, delimiter, markers, start-after) are percent-encoded with '/' kept, which clients
decode with unquote_plus ('+' itself is sent as %2B). Times are ISO 8601 in UTC with
milliseconds, as S3 writes them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = [
    "NS",
    "Bucket",
    "DeleteError",
    "Deleted",
    "Grant",
    "ListPage",
    "ObjectEntry",
    "Owner",
    "Part",
    "Upload",
    "access_control_policy",
    "complete_multipart_upload_result",
    "copy_object_result",
    "copy_part_result",
    "delete_result",
    "initiate_multipart_upload_result",
    "iso8601",
    "list_all_my_buckets",
    "list_bucket_v1",
    "list_bucket_v2",
    "list_multipart_uploads",
    "list_parts",
    "list_versions",
    "location_constraint",
    "tagging",
    "versioning_configuration",
]

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ET.register_namespace("xsi", XSI)  # so grantees serialise as xsi:type, the form S3 uses


@dataclass(frozen=True, slots=True)
class Owner:
    id: str
    display_name: str


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str
    created_s: float


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    key: str
    last_modified_s: float
    etag: str  # without quotes
    size: int
    storage_class: str = "STANDARD"


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing: entries, common prefixes, and where the next page starts."""

    entries: Sequence[ObjectEntry]
    common_prefixes: Sequence[str]
    is_truncated: bool
    next_marker: str | None = None  # the last key or prefix returned, when truncated


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    last_modified_s: float
    etag: str
    size: int


@dataclass(frozen=True, slots=True)
class Upload:
    key: str
    upload_id: str
    initiated_s: float


@dataclass(frozen=True, slots=True)
class Deleted:
    key: str
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteError:
    key: str
    code: str
    message: str
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """grantee_type is 'CanonicalUser' (id + display name) or 'Group' (uri)."""

    grantee_type: str
    permission: str
    id: str = ""
    display_name: str = ""
    uri: str = ""

    def __post_init__(self) -> None:
        assert self.grantee_type in ("CanonicalUser", "Group")
        assert self.permission in ("FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP")


# ---- helpers ------------------------------------------------------------------------------


def iso8601(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _root(tag: str) -> ET.Element:
    return ET.Element(tag, xmlns=NS)


def _add(parent: ET.Element, tag: str, text: str | int | bool | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if isinstance(text, bool):
        child.text = "true" if text else "false"
    elif text is not None:
        child.text = str(text)
    return child


def _doc(root: ET.Element) -> bytes:
    body = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode("utf-8")


def _enc(value: str, encoding_type: str | None) -> str:
    return quote(value, safe="/") if encoding_type == "url" else value


def _owner(parent: ET.Element, owner: Owner, tag: str = "Owner") -> None:
    node = _add(parent, tag)
    _add(node, "ID", owner.id)
    _add(node, "DisplayName", owner.display_name)


def _etag(value: str) -> str:
    return f'"{value}"'


def _contents(
    parent: ET.Element, entries: Iterable[ObjectEntry], owner: Owner | None, enc: str | None
) -> None:
    for entry in entries:
        node = _add(parent, "Contents")
        _add(node, "Key", _enc(entry.key, enc))
        _add(node, "LastModified", iso8601(entry.last_modified_s))
        _add(node, "ETag", _etag(entry.etag))
        _add(node, "Size", entry.size)
        if owner is not None:
            _owner(node, owner)
        _add(node, "StorageClass", entry.storage_class)


def _prefixes(parent: ET.Element, prefixes: Iterable[str], enc: str | None) -> None:
    for prefix in prefixes:
        _add(_add(parent, "CommonPrefixes"), "Prefix", _enc(prefix, enc))


# ---- buckets ------------------------------------------------------------------------------


def list_all_my_buckets(owner: Owner, buckets: Iterable[Bucket]) -> bytes:
    root = _root("ListAllMyBucketsResult")
    _owner(root, owner)
    node = _add(root, "Buckets")
    for bucket in buckets:
        b = _add(node, "Bucket")
        _add(b, "Name", bucket.name)
        _add(b, "CreationDate", iso8601(bucket.created_s))
    return _doc(root)


def location_constraint(region: str) -> bytes:
    """us-east-1 is written as an empty constraint, as S3 does."""
    root = _root("LocationConstraint")
    if region and region != "us-east-1":
        root.text = region
    return _doc(root)


def versioning_configuration(status: str | None) -> bytes:
    """status None: versioning was never enabled (an empty element, as S3 returns)."""
    root = _root("VersioningConfiguration")
    if status is not None:
        _add(root, "Status", status)
    return _doc(root)


def tagging(tags: Iterable[tuple[str, str]]) -> bytes:
    root = _root("Tagging")
    tag_set = _add(root, "TagSet")
    for key, value in tags:
        tag = _add(tag_set, "Tag")
        _add(tag, "Key", key)
        _add(tag, "Value", value)
    return _doc(root)


# ---- listings -----------------------------------------------------------------------------


def list_bucket_v1(
    *,
    bucket: str,
    prefix: str,
    marker: str,
    delimiter: str | None,
    max_keys: int,
    page: ListPage,
    encoding_type: str | None = None,
    owner: Owner | None = None,
) -> bytes:
    """ListObjects (v1). NextMarker is sent only with a delimiter, as S3 does."""
    enc = encoding_type
    root = _root("ListBucketResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", _enc(prefix, enc))
    _add(root, "Marker", _enc(marker, enc))
    if page.is_truncated and delimiter and page.next_marker is not None:
        _add(root, "NextMarker", _enc(page.next_marker, enc))
    _add(root, "MaxKeys", max_keys)
    if delimiter:
        _add(root, "Delimiter", _enc(delimiter, enc))
    if enc:
        _add(root, "EncodingType", enc)
    _add(root, "IsTruncated", page.is_truncated)
    _contents(root, page.entries, owner, enc)
    _prefixes(root, page.common_prefixes, enc)
    return _doc(root)


def list_bucket_v2(
    *,
    bucket: str,
    prefix: str,
    delimiter: str | None,
    max_keys: int,
    page: ListPage,
    continuation_token: str | None,
    next_continuation_token: str | None,
    start_after: str | None,
    encoding_type: str | None = None,
    owner: Owner | None = None,
) -> bytes:
    """ListObjectsV2; `owner` set only when fetch-owner=true."""
    enc = encoding_type
    root = _root("ListBucketResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", _enc(prefix, enc))
    if start_after:
        _add(root, "StartAfter", _enc(start_after, enc))
    _add(root, "KeyCount", len(page.entries) + len(page.common_prefixes))
    _add(root, "MaxKeys", max_keys)
    if delimiter:
        _add(root, "Delimiter", _enc(delimiter, enc))
    if enc:
        _add(root, "EncodingType", enc)
    _add(root, "IsTruncated", page.is_truncated)
    if continuation_token is not None:
        _add(root, "ContinuationToken", continuation_token)
    if page.is_truncated and next_continuation_token is not None:
        _add(root, "NextContinuationToken", next_continuation_token)
    _contents(root, page.entries, owner, enc)
    _prefixes(root, page.common_prefixes, enc)
    return _doc(root)


def list_versions(
    *,
    bucket: str,
    prefix: str,
    key_marker: str,
    version_id_marker: str,
    delimiter: str | None,
    max_keys: int,
    page: ListPage,
    owner: Owner,
    encoding_type: str | None = None,
) -> bytes:
    """ListObjectVersions for an unversioned bucket: every object is version 'null', latest."""
    enc = encoding_type
    root = _root("ListVersionsResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", _enc(prefix, enc))
    _add(root, "KeyMarker", _enc(key_marker, enc))
    _add(root, "VersionIdMarker", version_id_marker)
    if page.is_truncated and page.next_marker is not None:
        _add(root, "NextKeyMarker", _enc(page.next_marker, enc))
        _add(root, "NextVersionIdMarker", "null")
    _add(root, "MaxKeys", max_keys)
    if delimiter:
        _add(root, "Delimiter", _enc(delimiter, enc))
    if enc:
        _add(root, "EncodingType", enc)
    _add(root, "IsTruncated", page.is_truncated)
    for entry in page.entries:
        node = _add(root, "Version")
        _add(node, "Key", _enc(entry.key, enc))
        _add(node, "VersionId", "null")
        _add(node, "IsLatest", True)
        _add(node, "LastModified", iso8601(entry.last_modified_s))
        _add(node, "ETag", _etag(entry.etag))
        _add(node, "Size", entry.size)
        _owner(node, owner)
        _add(node, "StorageClass", entry.storage_class)
    _prefixes(root, page.common_prefixes, enc)
    return _doc(root)


# ---- objects and multipart ----------------------------------------------------------------


def copy_object_result(last_modified_s: float, etag: str) -> bytes:
    root = _root("CopyObjectResult")
    _add(root, "LastModified", iso8601(last_modified_s))
    _add(root, "ETag", _etag(etag))
    return _doc(root)


def copy_part_result(last_modified_s: float, etag: str) -> bytes:
    root = _root("CopyPartResult")
    _add(root, "LastModified", iso8601(last_modified_s))
    _add(root, "ETag", _etag(etag))
    return _doc(root)


def initiate_multipart_upload_result(bucket: str, key: str, upload_id: str) -> bytes:
    root = _root("InitiateMultipartUploadResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    return _doc(root)


def complete_multipart_upload_result(location: str, bucket: str, key: str, etag: str) -> bytes:
    root = _root("CompleteMultipartUploadResult")
    _add(root, "Location", location)
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "ETag", _etag(etag))
    return _doc(root)


def list_parts(
    *,
    bucket: str,
    key: str,
    upload_id: str,
    owner: Owner,
    part_number_marker: int,
    max_parts: int,
    parts: Sequence[Part],
    is_truncated: bool,
) -> bytes:
    root = _root("ListPartsResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    _owner(root, owner, "Initiator")
    _owner(root, owner)
    _add(root, "StorageClass", "STANDARD")
    _add(root, "PartNumberMarker", part_number_marker)
    if parts:
        _add(root, "NextPartNumberMarker", parts[-1].number)
    _add(root, "MaxParts", max_parts)
    _add(root, "IsTruncated", is_truncated)
    for part in parts:
        node = _add(root, "Part")
        _add(node, "PartNumber", part.number)
        _add(node, "LastModified", iso8601(part.last_modified_s))
        _add(node, "ETag", _etag(part.etag))
        _add(node, "Size", part.size)
    return _doc(root)


def list_multipart_uploads(
    *,
    bucket: str,
    owner: Owner,
    key_marker: str,
    upload_id_marker: str,
    prefix: str,
    delimiter: str | None,
    max_uploads: int,
    uploads: Sequence[Upload],
    common_prefixes: Sequence[str],
    is_truncated: bool,
    encoding_type: str | None = None,
) -> bytes:
    enc = encoding_type
    root = _root("ListMultipartUploadsResult")
    _add(root, "Bucket", bucket)
    _add(root, "KeyMarker", _enc(key_marker, enc))
    _add(root, "UploadIdMarker", upload_id_marker)
    if is_truncated and uploads:
        _add(root, "NextKeyMarker", _enc(uploads[-1].key, enc))
        _add(root, "NextUploadIdMarker", uploads[-1].upload_id)
    if delimiter:
        _add(root, "Delimiter", _enc(delimiter, enc))
    _add(root, "Prefix", _enc(prefix, enc))
    if enc:
        _add(root, "EncodingType", enc)
    _add(root, "MaxUploads", max_uploads)
    _add(root, "IsTruncated", is_truncated)
    for upload in uploads:
        node = _add(root, "Upload")
        _add(node, "Key", _enc(upload.key, enc))
        _add(node, "UploadId", upload.upload_id)
        _owner(node, owner, "Initiator")
        _owner(node, owner)
        _add(node, "StorageClass", "STANDARD")
        _add(node, "Initiated", iso8601(upload.initiated_s))
    _prefixes(root, common_prefixes, enc)
    return _doc(root)


def delete_result(
    deleted: Iterable[Deleted], errors: Iterable[DeleteError], *, quiet: bool
) -> bytes:
    """DeleteObjects' answer; quiet mode lists only the failures."""
    root = _root("DeleteResult")
    if not quiet:
        for item in deleted:
            node = _add(root, "Deleted")
            _add(node, "Key", item.key)
            if item.version_id is not None:
                _add(node, "VersionId", item.version_id)
    for err in errors:
        node = _add(root, "Error")
        _add(node, "Key", err.key)
        if err.version_id is not None:
            _add(node, "VersionId", err.version_id)
        _add(node, "Code", err.code)
        _add(node, "Message", err.message)
    return _doc(root)


def access_control_policy(owner: Owner, grants: Iterable[Grant]) -> bytes:
    root = _root("AccessControlPolicy")
    _owner(root, owner)
    acl = _add(root, "AccessControlList")
    for grant in grants:
        node = _add(acl, "Grant")
        grantee = ET.SubElement(node, "Grantee", {f"{{{XSI}}}type": grant.grantee_type})
        if grant.grantee_type == "CanonicalUser":
            _add(grantee, "ID", grant.id)
            _add(grantee, "DisplayName", grant.display_name)
        else:
            _add(grantee, "URI", grant.uri)
        _add(node, "Permission", grant.permission)
    return _doc(root)
