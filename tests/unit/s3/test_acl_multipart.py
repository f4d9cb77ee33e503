"""Canned ACLs <-> container ACLs, grants both ways; multipart ETag, completion rules, names."""

from __future__ import annotations

import hashlib
import random

import pytest

from proxy.s3 import acl
from proxy.s3.errors import S3Error
from proxy.s3.multipart import (
    PART_BYTES_MIN,
    StoredPart,
    check_upload_id,
    marker_name,
    multipart_etag,
    new_upload_id,
    parse_part_number,
    parse_segment_name,
    part_name,
    segments_container,
    upload_prefix,
    validate_completion,
)
from proxy.s3.xml import Owner
from proxy.s3.xmlparse import AclBody

OWNER = Owner("test", "test")


@pytest.mark.parametrize(
    ("canned", "read", "write"),
    [
        ("private", "", ""),
        ("public-read", ".r:*,.rlistings", ""),
        ("public-read-write", ".r:*,.rlistings", ".r:*"),
        ("authenticated-read", ".authenticated", ""),
        ("bucket-owner-full-control", "", ""),
    ],
)
def test_canned_roundtrip(canned: str, read: str, write: str) -> None:
    acls = acl.canned_to_container(canned)
    assert (acls.read, acls.write) == (read, write)
    grants = acl.container_to_grants(OWNER, acls.read, acls.write)
    assert grants[0].permission == "FULL_CONTROL" and grants[0].id == "test"
    back = acl.acl_from_grants("test", [(g.grantee_type, g.id or g.uri, g.permission)
                                        for g in grants])  # fmt: skip
    assert back == acls


def test_canned_errors() -> None:
    with pytest.raises(S3Error) as info:
        acl.canned_to_container("world-writable")
    assert info.value.code == "InvalidArgument"
    with pytest.raises(S3Error) as info:
        acl.canned_to_container("log-delivery-write")
    assert info.value.code == "NotImplemented"


def test_user_grants_and_full_control() -> None:
    grants = [
        ("CanonicalUser", "test", "FULL_CONTROL"),
        ("CanonicalUser", "test2:tester2", "READ"),
        ("CanonicalUser", "other", "FULL_CONTROL"),
        ("Group", acl.AUTHENTICATED_USERS, "WRITE"),
    ]
    acls = acl.acl_from_grants("test", grants)
    assert acls.read == "test2:tester2,other"
    assert acls.write == "other,.authenticated"
    listed = acl.container_to_grants(OWNER, acls.read, acls.write)
    kinds = {(g.grantee_type, g.id or g.uri, g.permission) for g in listed}
    assert ("CanonicalUser", "test2:tester2", "READ") in kinds
    assert ("Group", acl.AUTHENTICATED_USERS, "WRITE") in kinds
    assert ("CanonicalUser", "other", "WRITE") in kinds


@pytest.mark.parametrize(
    "grant",
    [
        ("CanonicalUser", "a,b", "READ"),
        ("CanonicalUser", "has space", "READ"),
        ("CanonicalUser", "x", "READ_ACP"),
        ("Group", "http://acs.amazonaws.com/groups/s3/LogDelivery", "WRITE"),
        ("Group", acl.ALL_USERS, "WRITE_ACP"),
        ("CanonicalUser", "x", "DANCE"),
    ],
)
def test_bad_grants(grant: tuple[str, str, str]) -> None:
    with pytest.raises(S3Error) as info:
        acl.acl_from_grants("test", [grant])
    assert info.value.code in ("InvalidArgument", "NotImplemented", "MalformedACLError")


def test_grant_headers() -> None:
    headers = {
        "x-amz-grant-read": f'uri="{acl.ALL_USERS}", id="test2"',
        "x-amz-grant-full-control": 'id="test"',
    }
    grants = acl.grants_from_headers(headers)
    assert grants is not None
    assert ("Group", acl.ALL_USERS, "READ") in grants
    assert acl.acl_from_grants("test", grants).read == ".r:*,.rlistings,test2"
    assert acl.grants_from_headers({}) is None
    for bad in ("id=test", 'id="a" garbage', 'emailAddress="a@b"'):
        with pytest.raises(S3Error):
            acl.grants_from_headers({"x-amz-grant-read": bad})


def test_request_bucket_acl_sources() -> None:
    assert acl.request_bucket_acl({}, None, "test") is None
    assert acl.request_bucket_acl({"x-amz-acl": "public-read"}, None, "test") == (
        acl.ContainerAcls(".r:*,.rlistings", "")
    )
    body = AclBody("test", (("Group", acl.ALL_USERS, "READ"),))
    assert acl.request_bucket_acl({}, body, "test").read == ".r:*,.rlistings"  # type: ignore[union-attr]
    with pytest.raises(S3Error) as info:
        acl.request_bucket_acl({"x-amz-acl": "private", "x-amz-grant-read": 'id="x"'}, None, "t")
    assert info.value.code == "InvalidRequest"


def test_object_acls() -> None:
    for ok in ({}, {"x-amz-acl": "private"}, {"x-amz-acl": "bucket-owner-full-control"}):
        acl.check_object_acl(ok)
    for bad, code in [
        ({"x-amz-acl": "public-read"}, "NotImplemented"),
        ({"x-amz-acl": "nonsense"}, "InvalidArgument"),
        ({"x-amz-grant-read": 'id="x"'}, "NotImplemented"),
    ]:
        with pytest.raises(S3Error) as info:
            acl.check_object_acl(bad)
        assert info.value.code == code


def test_negated_referrer_is_not_public() -> None:
    grants = acl.container_to_grants(OWNER, ".r:-evil.example", "")
    assert all(g.grantee_type != "Group" for g in grants)


# ---- multipart ----------------------------------------------------------------------------


def test_multipart_etag_matches_s3_definition() -> None:
    parts = [b"a" * 100, b"b" * 50, b"c"]
    md5s = [hashlib.md5(p).hexdigest() for p in parts]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert multipart_etag(md5s) == f"{expected}-3"
    # A single-part upload still gets the "-1" form, as S3 does.
    assert multipart_etag(md5s[:1]).endswith("-1")


def test_upload_ids_are_safe_and_deterministic_per_seed() -> None:
    ids = [new_upload_id(random.Random(5)) for _ in range(2)]
    assert ids[0] == ids[1] and len(ids[0]) == 22
    rng = random.Random(6)
    many = {new_upload_id(rng) for _ in range(1000)}
    assert len(many) == 1000
    for upload_id in many:
        assert check_upload_id(upload_id) == upload_id
    for bad in ("", "../../etc", "a" * 21, "a" * 23, "a/aaaaaaaaaaaaaaaaaaaaa"):
        with pytest.raises(S3Error) as info:
            check_upload_id(bad)
        assert (info.value.code, info.value.status) == ("NoSuchUpload", 404)


def test_segment_names_roundtrip() -> None:
    uid = new_upload_id(random.Random(1))
    for key in ("k", "dir/sub/key", "12345", f"x/{uid}"):
        assert parse_segment_name(marker_name(key, uid)) == (key, uid, None)
        for n in (1, 42, 10000):
            name = part_name(key, uid, n)
            assert name.startswith(upload_prefix(key, uid))
            assert parse_segment_name(name) == (key, uid, n)
    assert segments_container("bkt") == "bkt+segments"
    names = [part_name("k", uid, n) for n in (10, 2, 1, 100)]
    assert [parse_segment_name(n)[2] for n in sorted(names)] == [1, 2, 10, 100]  # type: ignore[index]
    for junk in ("k", "k/short", f"k/{uid}/1", f"k/{uid}/00000", f"/{uid}"):
        assert parse_segment_name(junk) is None


def test_part_numbers() -> None:
    assert parse_part_number("1") == 1 and parse_part_number("10000") == 10000
    for bad in (None, "", "0", "10001", "-1", "1.5", "x", "9" * 30):
        with pytest.raises(S3Error) as info:
            parse_part_number(bad)
        assert info.value.code == "InvalidArgument"


def stored(sizes: list[int]) -> dict[int, StoredPart]:
    return {i + 1: StoredPart(i + 1, f"{i + 1:032x}", s) for i, s in enumerate(sizes)}


def test_completion_good() -> None:
    parts = stored([PART_BYTES_MIN, PART_BYTES_MIN, 1, 7])
    chosen = validate_completion([(1, f'"{1:032x}"'), (2, f"{2:032x}"), (4, f"{4:032x}")], parts)
    assert [p.number for p in chosen] == [1, 2, 4]


@pytest.mark.parametrize(
    ("requested", "code"),
    [
        ([(2, f"{2:032x}"), (1, f"{1:032x}")], "InvalidPartOrder"),
        ([(1, f"{1:032x}"), (1, f"{1:032x}")], "InvalidPartOrder"),
        ([(1, f"{1:032x}"), (9, f"{9:032x}")], "InvalidPart"),
        ([(1, f"{2:032x}")], "InvalidPart"),
        ([(3, f"{3:032x}"), (4, f"{4:032x}")], "EntityTooSmall"),
        ([], "MalformedXML"),
    ],
)
def test_completion_errors(requested: list[tuple[int, str]], code: str) -> None:
    with pytest.raises(S3Error) as info:
        validate_completion(requested, stored([PART_BYTES_MIN, PART_BYTES_MIN, 1, 7]))
    assert info.value.code == code


def test_completion_limits() -> None:
    huge = {n: StoredPart(n, f"{n:032x}", 5 * 1024**3) for n in range(1, 1100)}
    requested = [(n, f"{n:032x}") for n in range(1, 1100)]
    with pytest.raises(S3Error) as info:
        validate_completion(requested, huge)
    assert info.value.code == "EntityTooLarge"
    too_many = [(n, "e") for n in range(1, 10002)]
    with pytest.raises(S3Error) as info:
        validate_completion(too_many, {})
    assert info.value.code == "InvalidArgument"
