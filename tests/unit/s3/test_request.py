"""Request classification: the URLs and headers botocore builds for each S3 operation."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config

from proxy.s3.authtypes import split_query
from proxy.s3.errors import S3Error
from proxy.s3.request import (
    bucket_from_host,
    check_version_id,
    classify,
    is_s3_request,
    validate_bucket_name,
    validate_key,
)

SESSION = botocore.session.get_session()


def wire_of(operation: str, params: dict[str, Any], *, virtual: bool = False) -> AWSRequest:
    """The request botocore would send for `operation` (captured before it leaves)."""
    style = "virtual" if virtual else "path"
    client = SESSION.create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://s3.cairn.test:8080",
        aws_access_key_id="test:tester",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": style}),
    )
    captured: list[AWSRequest] = []

    def grab(request: AWSRequest, **_: Any) -> None:
        captured.append(request)
        raise _Captured

    client.meta.events.register("before-send.s3", grab)
    method = getattr(client, _snake(operation))
    with pytest.raises(_Captured):
        method(**params)
    return captured[0]


class _Captured(Exception):
    pass


def _snake(name: str) -> str:
    out = ""
    for ch in name:
        out += ("_" + ch.lower()) if ch.isupper() and out else ch.lower()
    return out


def classify_boto(operation: str, params: dict[str, Any], *, virtual: bool = False) -> Any:
    return classify_url(wire_of(operation, params, virtual=virtual))


def classify_url(request: AWSRequest) -> Any:
    split = urlsplit(request.url)
    headers = list(request.headers.items())
    return classify(
        request.method,
        split.netloc,
        split.path,
        split_query(split.query),
        headers,
        domains=["s3.cairn.test"],
    )


B = {"Bucket": "bkt"}
K = {"Bucket": "bkt", "Key": "dir/ké y+1"}
U = {**K, "UploadId": "AAAAAAAAAAAAAAAAAAAAAA"}
CASES: list[tuple[str, dict[str, Any]]] = [
    ("ListBuckets", {}),
    ("CreateBucket", B),
    ("HeadBucket", B),
    ("DeleteBucket", B),
    ("GetBucketLocation", B),
    ("ListObjects", B),
    ("ListObjectsV2", {**B, "Prefix": "a", "Delimiter": "/"}),
    ("ListObjectVersions", B),
    ("DeleteObjects", {**B, "Delete": {"Objects": [{"Key": "a"}]}}),
    ("PutObject", {**K, "Body": b"x"}),
    ("GetObject", {**K, "Range": "bytes=0-1"}),
    ("HeadObject", K),
    ("DeleteObject", K),
    ("CopyObject", {**K, "CopySource": "src/key"}),
    ("CreateMultipartUpload", K),
    ("UploadPart", {**U, "PartNumber": 1, "Body": b"x"}),
    ("UploadPartCopy", {**U, "PartNumber": 2, "CopySource": "src/k"}),
    ("CompleteMultipartUpload", {**U, "MultipartUpload": {"Parts": [{"PartNumber": 1,
                                                                     "ETag": "e"}]}}),
    ("AbortMultipartUpload", U),
    ("ListParts", U),
    ("ListMultipartUploads", B),
    ("GetBucketAcl", B),
    ("PutBucketAcl", {**B, "ACL": "public-read"}),
    ("GetObjectAcl", K),
    ("PutObjectAcl", {**K, "ACL": "private"}),
    ("GetBucketVersioning", B),
    ("PutBucketVersioning", {**B, "VersioningConfiguration": {"Status": "Enabled"}}),
    ("GetBucketTagging", B),
    ("PutBucketTagging", {**B, "Tagging": {"TagSet": [{"Key": "a", "Value": "b"}]}}),
    ("DeleteBucketTagging", B),
    ("GetObjectTagging", K),
    ("PutObjectTagging", {**K, "Tagging": {"TagSet": []}}),
    ("DeleteObjectTagging", K),
]  # fmt: skip


# ListBuckets names no bucket, so it has no virtual-hosted form.
ADDRESSED = [(op, p, v) for op, p in CASES for v in (False, True) if op != "ListBuckets" or not v]


@pytest.mark.parametrize(("operation", "params", "virtual"), ADDRESSED)
def test_botocore_operations_classify(
    operation: str, params: dict[str, Any], virtual: bool
) -> None:
    request = wire_of(operation, params, virtual=virtual)
    req = classify_url(request)
    assert req.operation == operation
    assert req.bucket == params.get("Bucket")
    assert req.key == params.get("Key")
    # botocore sends some calls (GetBucketLocation) path-style even when told virtual.
    hosted = urlsplit(request.url).netloc.startswith("bkt.")
    assert req.virtual_host is hosted
    if virtual and operation not in ("GetBucketLocation", "CreateBucket"):
        assert hosted


def test_unimplemented_subresources() -> None:
    for operation in ("GetBucketPolicy", "GetBucketCors", "GetBucketLifecycleConfiguration"):
        with pytest.raises(S3Error) as info:
            classify_boto(operation, B)
        assert (info.value.code, info.value.status) == ("NotImplemented", 501)


def test_method_not_allowed() -> None:
    for method, path in [("POST", "/"), ("PUT", "/"), ("POST", "/b"), ("PATCH", "/b/k"),
                         ("POST", "/b/k")]:  # fmt: skip
        with pytest.raises(S3Error) as info:
            classify(method, "h", path, [], [])
        assert (info.value.code, info.value.status) == ("MethodNotAllowed", 405)


def test_path_decoding() -> None:
    req = classify("GET", "127.0.0.1:8080", "/bkt/a%2Fb/%E2%82%AC%20x", [], [])
    assert (req.bucket, req.key) == ("bkt", "a/b/€ x")
    assert req.resource == "/bkt/a/b/€ x"
    req = classify("GET", "127.0.0.1:8080", "/bkt/", [], [])
    assert (req.operation, req.key) == ("ListObjects", None)
    with pytest.raises(S3Error) as info:
        classify("GET", "h", "/bkt/%FF%FE", [], [])
    assert info.value.code == "InvalidURI"


def test_virtual_host_detection() -> None:
    assert bucket_from_host("my.bucket.s3.cairn.test:8080", ["s3.cairn.test"]) == "my.bucket"
    assert bucket_from_host("s3.cairn.test", ["s3.cairn.test"]) is None
    assert bucket_from_host("127.0.0.1:8080", ["s3.cairn.test"]) is None
    assert bucket_from_host("[::1]:8080", ["s3.cairn.test"]) is None
    assert bucket_from_host("B.S3.Cairn.Test", ["s3.cairn.test"]) == "b"
    assert bucket_from_host(None, ["x"]) is None
    req = classify("GET", "bkt.s3.cairn.test", "/k/x", [], [], domains=["s3.cairn.test"])
    assert (req.bucket, req.key, req.operation) == ("bkt", "k/x", "GetObject")


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 64, "Upper", "under_score", "-start", "end-", "two..dots", "dot.-dash",
     "192.168.1.1", "xn--punycode", "ends-s3alias", "has space", "has/slash", "b+segments"],
)  # fmt: skip
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(S3Error) as info:
        validate_bucket_name(name)
    assert (info.value.code, info.value.status) == ("InvalidBucketName", 400)


def test_valid_bucket_names_and_legacy_rules() -> None:
    for name in ("abc", "a" * 63, "my-bucket.2", "1bucket"):
        validate_bucket_name(name)
    validate_bucket_name("Legacy_Bucket", strict=False)
    validate_bucket_name("b", strict=False)
    for name in ("", "x" * 256, "tab\tname", "b+segments"):
        with pytest.raises(S3Error):
            validate_bucket_name(name, strict=False)
    with pytest.raises(S3Error):
        classify("PUT", "h", "/Legacy_Bucket", [], [])  # creation is strict
    assert classify("GET", "h", "/Legacy_Bucket", [], []).operation == "ListObjects"
    req = classify("PUT", "h", "/Legacy_Bucket", [], [], strict_bucket_names=False)
    assert req.operation == "CreateBucket"


def test_key_length() -> None:
    validate_key("k" * 1024)
    validate_key("é" * 512)
    for key in ("k" * 1025, "é" * 513):
        with pytest.raises(S3Error) as info:
            validate_key(key)
        assert info.value.code == "KeyTooLongError"
    with pytest.raises(S3Error):
        classify("PUT", "h", "/b/" + "k" * 1025, [], [])


def test_version_id_on_unversioned_buckets() -> None:
    check_version_id({})
    check_version_id({"versionId": "null"})
    with pytest.raises(S3Error) as info:
        check_version_id({"versionId": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"})
    assert info.value.code == "InvalidArgument"


def test_query_is_decoded() -> None:
    req = classify("GET", "h", "/b", [("list-type", "2"), ("prefix", "a%20b%2Bc")], [])
    assert req.operation == "ListObjectsV2" and req.query["prefix"] == "a b+c"


def test_is_s3_request_reexported() -> None:
    assert is_s3_request([("Authorization", "AWS4-HMAC-SHA256 Credential=x")], [])
    assert not is_s3_request([("X-Auth-Token", "t")], [])
