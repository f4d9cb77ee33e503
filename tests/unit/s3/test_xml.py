"""Response bodies read back by botocore's own S3 response parser; request bodies parsed
safely (with botocore's serializer producing the good ones) and refused when hostile."""

from __future__ import annotations

import datetime
import types
from typing import Any

import botocore.session
import pytest
from botocore import handlers
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from proxy.s3 import xml as x
from proxy.s3.errors import S3Error
from proxy.s3.xmlparse import (
    parse_access_control_policy,
    parse_complete_multipart_upload,
    parse_create_bucket,
    parse_delete,
    parse_tagging,
    parse_versioning,
    parse_xml,
)

MODEL = botocore.session.get_session().get_service_model("s3")
OWNER = x.Owner("test:tester", "test:tester")
T = 1_700_000_000.25


def boto_parse(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    parser = create_parser("rest-xml")
    shape = MODEL.operation_model(operation).output_shape
    result: dict[str, Any] = parser.parse(
        {"body": body, "headers": {}, "status_code": status}, shape
    )
    return result


def boto_location(body: bytes) -> str | None:
    """GetBucketLocation is parsed by a botocore handler rather than the model."""
    parsed: dict[str, Any] = {}
    response = types.SimpleNamespace(raw=b"", content=body)
    handlers.parse_get_bucket_location(parsed, response)
    value: str | None = parsed["LocationConstraint"]
    return value


def boto_body(operation: str, params: dict[str, Any]) -> bytes:
    serializer = create_serializer("rest-xml")
    request = serializer.serialize_to_request(params, MODEL.operation_model(operation))
    body = request["body"]
    return body if isinstance(body, bytes) else body.encode()


def test_iso8601_has_milliseconds() -> None:
    assert x.iso8601(T) == "2023-11-14T22:13:20.250Z"


def test_list_all_my_buckets() -> None:
    body = x.list_all_my_buckets(OWNER, [x.Bucket("a", T), x.Bucket("b<&>", T + 1)])
    parsed = boto_parse("ListBuckets", body)
    assert [b["Name"] for b in parsed["Buckets"]] == ["a", "b<&>"]
    assert parsed["Owner"]["ID"] == "test:tester"
    assert parsed["Buckets"][0]["CreationDate"] == datetime.datetime(
        2023, 11, 14, 22, 13, 20, 250000, tzinfo=datetime.UTC
    )


KEYS = ["plain", "a b+c", "ünï/cödé", "amp&lt<>\"'", "tab\tkey"]


@pytest.mark.parametrize("encoding", [None, "url"])
def test_list_objects_v2(encoding: str | None) -> None:
    entries = [x.ObjectEntry(k, T, "d41d8cd98f00b204e9800998ecf8427e", 0) for k in KEYS]
    page = x.ListPage(entries, ["dir/", "sp ace/"], True, "sp ace/")
    body = x.list_bucket_v2(
        bucket="bkt",
        prefix="",
        delimiter="/",
        max_keys=7,
        page=page,
        continuation_token="tok1",
        next_continuation_token="tok2",
        start_after="a b",
        encoding_type=encoding,
        owner=OWNER,
    )
    parsed = boto_parse("ListObjectsV2", body)
    handlers.decode_list_object_v2(parsed, {"encoding_type_auto_set": True})
    assert [c["Key"] for c in parsed["Contents"]] == KEYS
    assert [p["Prefix"] for p in parsed["CommonPrefixes"]] == ["dir/", "sp ace/"]
    assert parsed["KeyCount"] == 7 and parsed["IsTruncated"] is True
    assert parsed["NextContinuationToken"] == "tok2" and parsed["StartAfter"] == "a b"
    assert parsed["Contents"][0]["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert parsed["Contents"][0]["Owner"]["ID"] == "test:tester"


@pytest.mark.parametrize("encoding", [None, "url"])
def test_list_objects_v1(encoding: str | None) -> None:
    entries = [x.ObjectEntry(k, T, "e", 5) for k in KEYS]
    page = x.ListPage(entries, ["p+/"], True, "p+/")
    body = x.list_bucket_v1(
        bucket="bkt",
        prefix="",
        marker="m k",
        delimiter="/",
        max_keys=6,
        page=page,
        encoding_type=encoding,
    )
    parsed = boto_parse("ListObjects", body)
    handlers.decode_list_object(parsed, {"encoding_type_auto_set": True})
    assert [c["Key"] for c in parsed["Contents"]] == KEYS
    assert parsed["NextMarker"] == "p+/" and parsed["Marker"] == "m k"
    assert parsed["CommonPrefixes"] == [{"Prefix": "p+/"}]
    # Without a delimiter S3 sends no NextMarker (clients use the last key).
    body = x.list_bucket_v1(bucket="b", prefix="", marker="", delimiter=None, max_keys=1, page=page)
    assert "NextMarker" not in boto_parse("ListObjects", body)


def test_list_versions_every_version_null_and_latest() -> None:
    page = x.ListPage([x.ObjectEntry("k1", T, "e", 1), x.ObjectEntry("k2", T, "e", 2)], [], True,
                      "k2")  # fmt: skip
    body = x.list_versions(
        bucket="b", prefix="", key_marker="", version_id_marker="", delimiter=None,
        max_keys=2, page=page, owner=OWNER,
    )  # fmt: skip
    parsed = boto_parse("ListObjectVersions", body)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in parsed["Versions"]] == [
        ("k1", "null", True),
        ("k2", "null", True),
    ]
    assert parsed["NextKeyMarker"] == "k2" and parsed["NextVersionIdMarker"] == "null"


def test_small_results() -> None:
    assert boto_location(x.location_constraint("us-east-1")) is None
    assert boto_location(x.location_constraint("cairn-1")) == "cairn-1"
    assert (
        boto_parse("CopyObject", x.copy_object_result(T, "abc"))["CopyObjectResult"]["ETag"]
        == '"abc"'
    )
    assert (
        boto_parse("UploadPartCopy", x.copy_part_result(T, "def"))["CopyPartResult"]["ETag"]
        == '"def"'
    )
    init = boto_parse("CreateMultipartUpload", x.initiate_multipart_upload_result("b", "k", "u1"))
    assert (init["Bucket"], init["Key"], init["UploadId"]) == ("b", "k", "u1")
    done = boto_parse(
        "CompleteMultipartUpload", x.complete_multipart_upload_result("/b/k", "b", "k", "x-2")
    )
    assert done["ETag"] == '"x-2"' and done["Location"] == "/b/k"
    assert boto_parse("GetBucketVersioning", x.versioning_configuration(None)).get("Status") is None
    assert boto_parse("GetBucketVersioning", x.versioning_configuration("Enabled"))["Status"] == (
        "Enabled"
    )
    assert boto_parse("GetObjectTagging", x.tagging([("a", "1")]))["TagSet"] == [
        {"Key": "a", "Value": "1"}
    ]


def test_list_parts_and_uploads() -> None:
    parts = [x.Part(1, T, "e1", 5 * 1024 * 1024), x.Part(2, T, "e2", 10)]
    body = x.list_parts(
        bucket="b", key="k", upload_id="u", owner=OWNER, part_number_marker=0, max_parts=2,
        parts=parts, is_truncated=True,
    )  # fmt: skip
    parsed = boto_parse("ListParts", body)
    assert [p["PartNumber"] for p in parsed["Parts"]] == [1, 2]
    assert parsed["NextPartNumberMarker"] == 2 and parsed["IsTruncated"] is True
    body = x.list_multipart_uploads(
        bucket="b", owner=OWNER, key_marker="", upload_id_marker="", prefix="", delimiter="/",
        max_uploads=1, uploads=[x.Upload("k", "u", T)], common_prefixes=["d/"],
        is_truncated=True,
    )  # fmt: skip
    parsed = boto_parse("ListMultipartUploads", body)
    assert parsed["Uploads"][0]["UploadId"] == "u" and parsed["NextUploadIdMarker"] == "u"
    assert parsed["CommonPrefixes"] == [{"Prefix": "d/"}]


def test_delete_result_and_quiet() -> None:
    deleted = [x.Deleted("a"), x.Deleted("b", "null")]
    errors = [x.DeleteError("c", "AccessDenied", "Access Denied")]
    parsed = boto_parse("DeleteObjects", x.delete_result(deleted, errors, quiet=False))
    assert [d["Key"] for d in parsed["Deleted"]] == ["a", "b"]
    assert parsed["Deleted"][1]["VersionId"] == "null"
    assert parsed["Errors"][0]["Code"] == "AccessDenied"
    quiet = boto_parse("DeleteObjects", x.delete_result(deleted, errors, quiet=True))
    assert "Deleted" not in quiet and len(quiet["Errors"]) == 1


def test_access_control_policy_roundtrip() -> None:
    grants = [
        x.Grant("CanonicalUser", "FULL_CONTROL", id="test:tester", display_name="test:tester"),
        x.Grant("Group", "READ", uri="http://acs.amazonaws.com/groups/global/AllUsers"),
    ]
    body = x.access_control_policy(OWNER, grants)
    parsed = boto_parse("GetBucketAcl", body)
    assert parsed["Grants"][1]["Grantee"]["Type"] == "Group"
    assert parsed["Grants"][0]["Grantee"]["ID"] == "test:tester"
    back = parse_access_control_policy(body)
    assert back.owner_id == "test:tester"
    assert back.grants[1] == ("Group", "http://acs.amazonaws.com/groups/global/AllUsers", "READ")


def test_error_body_read_by_botocore() -> None:
    err = S3Error("SignatureDoesNotMatch", resource="/b/k<1>", extra=[("StringToSign", "a\nb")])
    parsed = boto_parse("GetObject", err.to_xml("tx123"), status=403)
    assert parsed["Error"] == {
        "Code": "SignatureDoesNotMatch",
        "Message": err.message,
        "StringToSign": "a\nb",
        "Resource": "/b/k<1>",
    }
    # botocore takes the request id from the x-amz-request-id header; the body has it too.
    assert parse_xml(err.to_xml("tx123")).text_of("RequestId") == "tx123"


# ---- request bodies -----------------------------------------------------------------------


def test_parse_botocore_serialised_bodies() -> None:
    body = boto_body(
        "DeleteObjects",
        {
            "Bucket": "b",
            "Delete": {
                "Objects": [{"Key": "a&b"}, {"Key": "c", "VersionId": "null"}],
                "Quiet": True,
            },
        },
    )
    assert parse_delete(body) == (True, [("a&b", None), ("c", "null")])
    body = boto_body(
        "CompleteMultipartUpload",
        {
            "Bucket": "b",
            "Key": "k",
            "UploadId": "u",
            "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": '"e1"'},
                                          {"PartNumber": 2, "ETag": "e2"}]},
        },
    )  # fmt: skip
    assert parse_complete_multipart_upload(body) == [(1, "e1"), (2, "e2")]
    body = boto_body(
        "CreateBucket",
        {"Bucket": "b", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}},
    )
    assert parse_create_bucket(body) == "eu-west-1"
    assert parse_create_bucket(b"") is None
    body = boto_body(
        "PutBucketVersioning", {"Bucket": "b", "VersioningConfiguration": {"Status": "Enabled"}}
    )
    assert parse_versioning(body) == "Enabled"
    body = boto_body(
        "PutObjectTagging",
        {"Bucket": "b", "Key": "k", "Tagging": {"TagSet": [{"Key": "a", "Value": "1"}]}},
    )
    assert parse_tagging(body) == [("a", "1")]
    body = boto_body(
        "PutBucketAcl",
        {
            "Bucket": "b",
            "AccessControlPolicy": {
                "Owner": {"ID": "o"},
                "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": "o"},
                            "Permission": "FULL_CONTROL"}],
            },
        },
    )  # fmt: skip
    assert parse_access_control_policy(body).grants == (("CanonicalUser", "o", "FULL_CONTROL"),)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Delete><Object><Key>&lol2;</Key></Object></Delete>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&e;</Key></Object></Delete>"""


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<Delete>",
        b"<Delete></Delete>",
        b"<Delete><Object></Object></Delete>",
        b"<Delete><Object><Key></Key></Object></Delete>",
        b"<Delete><Quiet>maybe</Quiet><Object><Key>a</Key></Object></Delete>",
        b"<Other><Object><Key>a</Key></Object></Other>",
        BILLION_LAUGHS,
        EXTERNAL,
        b"<?pi x?><Delete><Object><Key>a</Key></Object></Delete>",
        b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
        b"<a>" * 100 + b"</a>" * 100,
        b"<Delete><Object><Key>k</Key></Object></Delete>" + b" " * (3 * 1024 * 1024),
    ],
)
def test_bad_delete_bodies(body: bytes) -> None:
    with pytest.raises(S3Error) as info:
        parse_delete(body)
    assert (info.value.code, info.value.status) == ("MalformedXML", 400)


def test_delete_key_too_long() -> None:
    body = b"<Delete><Object><Key>" + b"k" * 1025 + b"</Key></Object></Delete>"
    with pytest.raises(S3Error) as info:
        parse_delete(body)
    assert info.value.code == "KeyTooLongError"


@pytest.mark.parametrize(
    "body",
    [
        b"<CompleteMultipartUpload></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>e</ETag></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>-1</PartNumber><ETag>e</ETag></Part>"
        b"</CompleteMultipartUpload>",
    ],
)
def test_bad_complete_bodies(body: bytes) -> None:
    with pytest.raises(S3Error) as info:
        parse_complete_multipart_upload(body)
    assert info.value.code == "MalformedXML"


def test_other_bad_bodies() -> None:
    cases = [
        (parse_versioning,
         b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>",
         "MalformedXML"),
        (parse_access_control_policy, b"<AccessControlPolicy/>", "MalformedACLError"),
        (parse_access_control_policy,
         b"<AccessControlPolicy><AccessControlList><Grant><Grantee><ID>x</ID></Grantee>"
         b"<Permission>READ</Permission></Grant></AccessControlList></AccessControlPolicy>",
         "MalformedACLError"),
        (parse_tagging, b"<Tagging><TagSet>" + b"".join(
            b"<Tag><Key>k%d</Key><Value>v</Value></Tag>" % i for i in range(11))
         + b"</TagSet></Tagging>", "InvalidTag"),
        (parse_tagging, b"<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value></Tag>"
         b"<Tag><Key>a</Key><Value>2</Value></Tag></TagSet></Tagging>", "InvalidTag"),
        (parse_create_bucket, b"<CreateBucketConfiguration><LocationConstraint>",
         "MalformedXML"),
    ]  # fmt: skip
    for fn, body, code in cases:
        with pytest.raises(S3Error) as info:
            fn(body)
        assert info.value.code == code, body


def test_namespace_prefixes_are_ignored() -> None:
    body = (
        b'<s3:Delete xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<s3:Object><s3:Key>k</s3:Key></s3:Object></s3:Delete>"
    )
    assert parse_delete(body) == (False, [("k", None)])
    assert parse_xml(b"<a>x&amp;y&#65;</a>").text == "x&yA"
