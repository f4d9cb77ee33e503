"""The S3 front end to end (buckets, objects, listings, multipart, ACLs) with real clients
(boto3, urllib, botocore signers) over loopback, on the MemoryOps storage twin."""

from __future__ import annotations

import base64
import hashlib
import io
import zlib
from typing import Any

import pytest

from tests.unit.s3.botosign import sign_v4
from tests.unit.s3.fronthelpers import error_of, raw
from tests.unit.s3.frontserver import Front

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


# ---- buckets ------------------------------------------------------------------------------


def test_bucket_lifecycle(front: Front, s3: Any) -> None:
    s3.create_bucket(Bucket="life-cycle")
    assert "life-cycle" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="life-cycle")
    assert s3.get_bucket_location(Bucket="life-cycle").get("LocationConstraint") is None
    assert error_of(s3.create_bucket, Bucket="life-cycle")[:2] == ("BucketAlreadyOwnedByYou", 409)
    other = front.client("test2:tester2")
    assert error_of(other.create_bucket, Bucket="life-cycle")[:2] == ("BucketAlreadyExists", 409)
    s3.put_object(Bucket="life-cycle", Key="k", Body=b"x")
    assert error_of(s3.delete_bucket, Bucket="life-cycle")[:2] == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="life-cycle", Key="k")
    s3.delete_bucket(Bucket="life-cycle")
    assert error_of(s3.head_bucket, Bucket="life-cycle")[1] == 404
    assert error_of(s3.delete_bucket, Bucket="life-cycle")[:2] == ("NoSuchBucket", 404)
    # Once deleted, the name is free for another account.
    other.create_bucket(Bucket="life-cycle")
    other.delete_bucket(Bucket="life-cycle")


def test_create_bucket_with_location_and_bad_names(s3: Any) -> None:
    s3.create_bucket(
        Bucket="located", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    assert s3.get_bucket_location(Bucket="located")["LocationConstraint"] == "eu-west-1"
    assert (
        s3.head_bucket(Bucket="located")["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"]
        == "eu-west-1"
    )
    for name in ("UPPER", "a_b", "ab"):
        assert error_of(s3.create_bucket, Bucket=name)[:2] == ("InvalidBucketName", 400)


def test_versioning_status(s3: Any, bucket: str) -> None:
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    code = error_of(s3.put_bucket_versioning, Bucket=bucket,
                    VersioningConfiguration={"Status": "Enabled"})[0]  # fmt: skip
    assert code == "NotImplemented"


# ---- objects ------------------------------------------------------------------------------


def test_put_get_head_with_metadata(s3: Any, bucket: str) -> None:
    body = b"hello, world\n" * 100
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    put = s3.put_object(Bucket=bucket, Key="dir/obj.txt", Body=body, ContentMD5=md5,
                        Metadata={"color": "blue"}, ContentType="text/x-test",
                        ContentDisposition="attachment", CacheControl="no-cache")  # fmt: skip
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dir/obj.txt")
    assert got["Body"].read() == body
    assert got["Metadata"] == {"color": "blue"} and got["ContentType"] == "text/x-test"
    assert got["ContentDisposition"] == "attachment" and got["CacheControl"] == "no-cache"
    head = s3.head_object(Bucket=bucket, Key="dir/obj.txt")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]


def test_content_md5_mismatch_and_invalid(front: Front, s3: Any, bucket: str) -> None:
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    before = front.ops.puts_aborted
    assert error_of(s3.put_object, Bucket=bucket, Key="k", Body=b"data", ContentMD5=wrong)[:2] == (
        "BadDigest", 400)  # fmt: skip
    assert front.ops.puts_aborted == before + 1
    assert error_of(s3.head_object, Bucket=bucket, Key="k")[1] == 404  # nothing was stored
    assert error_of(s3.put_object, Bucket=bucket, Key="k", Body=b"d", ContentMD5="xx")[0] == (
        "InvalidDigest")  # fmt: skip


def test_flexible_checksums(s3: Any, bucket: str) -> None:
    # botocore computes CRC32 and the SHAs itself (CRC32C needs awscrt, absent here).
    for algorithm in ("CRC32", "SHA1", "SHA256"):
        put = s3.put_object(Bucket=bucket, Key=f"ck-{algorithm}", Body=b"abc" * 1000,
                            ChecksumAlgorithm=algorithm)  # fmt: skip
        assert put[f"Checksum{algorithm}"]
    crc32c = pytest.importorskip("crc32c", reason="the crc32c package computes the reference")
    value = base64.b64encode(crc32c.crc32c(b"abc" * 1000).to_bytes(4, "big")).decode()
    put = s3.put_object(Bucket=bucket, Key="ck-c", Body=b"abc" * 1000, ChecksumCRC32C=value)
    assert put["ChecksumCRC32C"] == value
    bad = base64.b64encode(zlib.crc32(b"nope").to_bytes(4, "big")).decode()
    code, status, _ = error_of(s3.put_object, Bucket=bucket, Key="ck-bad", Body=b"abc",
                               ChecksumCRC32=bad)  # fmt: skip
    assert (code, status) == ("BadDigest", 400)


def test_ranges_and_conditionals(s3: Any, bucket: str) -> None:
    data = bytes(range(256)) * 40
    etag = s3.put_object(Bucket=bucket, Key="r", Body=data)["ETag"]
    part = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert part["Body"].read() == data[10:20] and part["ContentRange"] == f"bytes 10-19/{len(data)}"
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-5")["Body"].read() == data[-5:]
    code, status, _ = error_of(s3.get_object, Bucket=bucket, Key="r", Range="bytes=99999-")
    assert (code, status) == ("InvalidRange", 416)
    assert s3.get_object(Bucket=bucket, Key="r", IfMatch=etag)["Body"].read() == data
    assert error_of(s3.get_object, Bucket=bucket, Key="r", IfMatch='"nope"')[:2] == (
        "PreconditionFailed", 412)  # fmt: skip
    assert error_of(s3.get_object, Bucket=bucket, Key="r", IfNoneMatch=etag)[1] == 304
    import datetime

    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    assert error_of(s3.get_object, Bucket=bucket, Key="r", IfModifiedSince=future)[1] == 304
    assert error_of(s3.get_object, Bucket=bucket, Key="r", IfUnmodifiedSince=past)[1] == 412
    got = s3.get_object(
        Bucket=bucket,
        Key="r",
        ResponseContentType="x/y",
        ResponseContentDisposition="inline",
        ResponseCacheControl="max-age=1",
    )
    assert (got["ContentType"], got["ContentDisposition"], got["CacheControl"]) == (
        "x/y", "inline", "max-age=1")  # fmt: skip
    # Read the body: an unread one keeps its socket out of the pool until the garbage
    # collector closes it, a ResourceWarning in whichever test runs then.
    assert got["Body"].read() == data


def test_delete_and_missing(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="gone", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="gone")
    s3.delete_object(Bucket=bucket, Key="gone")  # deleting nothing succeeds, as on S3
    code, status, err = error_of(s3.get_object, Bucket=bucket, Key="gone")
    assert (code, status, err["Key"]) == ("NoSuchKey", 404, "gone")
    assert error_of(s3.get_object, Bucket="no-such-bucket-x", Key="k")[:2] == ("NoSuchBucket", 404)
    assert error_of(s3.get_object, Bucket=bucket, Key="k", VersionId="abc")[0] == "InvalidArgument"


def test_copy_object(front: Front, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me", Metadata={"a": "1"},
                  ContentType="text/plain")  # fmt: skip
    s3.create_bucket(Bucket=f"{bucket}-dst")
    res = s3.copy_object(Bucket=f"{bucket}-dst", Key="dst", CopySource=f"{bucket}/src")
    assert res["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"copy me").hexdigest()}"'
    got = s3.get_object(Bucket=f"{bucket}-dst", Key="dst")
    assert got["Body"].read() == b"copy me" and got["Metadata"] == {"a": "1"}
    s3.copy_object(
        Bucket=bucket,
        Key="src2",
        CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        ContentType="x/z",
    )
    got = s3.head_object(Bucket=bucket, Key="src2")
    assert got["Metadata"] == {"b": "2"} and got["ContentType"] == "x/z"
    assert error_of(s3.copy_object, Bucket=bucket, Key="src", CopySource=f"{bucket}/src")[0] == (
        "InvalidRequest")  # fmt: skip
    s3.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src",
                   MetadataDirective="REPLACE", Metadata={"c": "3"})  # fmt: skip
    assert error_of(s3.copy_object, Bucket=bucket, Key="x", CopySource=f"{bucket}/nothing")[:2] == (
        "NoSuchKey", 404)  # fmt: skip
    assert error_of(s3.copy_object, Bucket=bucket, Key="x", CopySource=f"{bucket}/src",
                    CopySourceIfMatch='"nope"')[:2] == ("PreconditionFailed", 412)  # fmt: skip
    etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    s3.copy_object(Bucket=bucket, Key="x", CopySource=f"{bucket}/src", CopySourceIfMatch=etag)


# ---- listings -----------------------------------------------------------------------------

KEYS = ["a/1", "a/2", "a/b/3", "b", "c d/e+f", "ü/ñ", "z"]


@pytest.fixture
def listed(s3: Any, bucket: str) -> str:
    for key in KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    return bucket


def test_list_v2_delimiter_and_pagination(s3: Any, listed: str) -> None:
    out = s3.list_objects_v2(Bucket=listed, Delimiter="/")
    assert [c["Key"] for c in out["Contents"]] == ["b", "z"]
    assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["a/", "c d/", "ü/"]
    assert out["KeyCount"] == 5
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=listed, PaginationConfig={
        "PageSize": 2})  # fmt: skip
    keys = [c["Key"] for page in pages for c in page.get("Contents", [])]
    assert keys == sorted(KEYS, key=lambda k: k.encode())
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=listed, Delimiter="/", PaginationConfig={"PageSize": 1}
    )
    seen = [
        (c.get("Key"), p.get("Prefix"))
        for page in pages
        for c in page.get("Contents", [{}])
        for p in page.get("CommonPrefixes", [{}])
    ]
    flat = {x for pair in seen for x in pair if x}
    assert flat == {"b", "z", "a/", "c d/", "ü/"}
    assert s3.list_objects_v2(Bucket=listed, StartAfter="b")["Contents"][0]["Key"] == "c d/e+f"
    assert s3.list_objects_v2(Bucket=listed, Prefix="a/", FetchOwner=True)["Contents"][0][
        "Owner"]["ID"] == "test"  # fmt: skip
    assert s3.list_objects_v2(Bucket=listed, MaxKeys=0)["KeyCount"] == 0


def test_list_v1_and_url_encoding(s3: Any, listed: str) -> None:
    pages = list(s3.get_paginator("list_objects").paginate(Bucket=listed, PaginationConfig={
        "PageSize": 3}))  # fmt: skip
    assert [c["Key"] for p in pages for c in p["Contents"]] == sorted(KEYS, key=str.encode)
    out = s3.list_objects(Bucket=listed, Delimiter="/", MaxKeys=2)
    assert out["IsTruncated"] and out["NextMarker"] == "b"
    out = s3.list_objects(Bucket=listed, Delimiter="/", Marker="a/")
    assert out["CommonPrefixes"][0]["Prefix"] == "c d/"  # a/ is not repeated
    # boto3 asks for encoding-type=url and decodes for us: the keys come back intact.
    out = s3.list_objects(Bucket=listed, Prefix="c d/")
    assert out["Contents"][0]["Key"] == "c d/e+f"
    assert error_of(s3.list_objects, Bucket=listed, MaxKeys=-1)[0] in ("InvalidArgument",)


def test_list_versions_and_delete_objects(s3: Any, listed: str) -> None:
    versions = s3.list_object_versions(Bucket=listed)["Versions"]
    assert {v["VersionId"] for v in versions} == {"null"} and all(v["IsLatest"] for v in versions)
    objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]
    objects.append({"Key": "never-existed"})
    res = s3.delete_objects(Bucket=listed, Delete={"Objects": objects})
    assert len(res["Deleted"]) == len(KEYS) + 1 and "Errors" not in res
    assert s3.list_objects_v2(Bucket=listed)["KeyCount"] == 0
    s3.put_object(Bucket=listed, Key="q", Body=b"x")
    res = s3.delete_objects(Bucket=listed, Delete={"Objects": [{"Key": "q"},
                            {"Key": "r", "VersionId": "v2"}], "Quiet": True})  # fmt: skip
    assert "Deleted" not in res and res["Errors"][0]["Code"] == "NoSuchVersion"
    s3.delete_bucket(Bucket=listed)


# ---- multipart ----------------------------------------------------------------------------


def test_multipart_upload(front: Front, s3: Any, bucket: str) -> None:
    parts_data = [b"a" * (5 * MiB), b"b" * (5 * MiB), b"tail"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="big", ContentType="video/x-test",
                                    Metadata={"m": "1"})  # fmt: skip
    uid = up["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid]
    etags = []
    for n, data in enumerate(parts_data, 1):
        etags.append(s3.upload_part(Bucket=bucket, Key="big", UploadId=uid, PartNumber=n,
                                    Body=data)["ETag"])  # fmt: skip
    listed = s3.list_parts(Bucket=bucket, Key="big", UploadId=uid)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3]
    page = s3.list_parts(Bucket=bucket, Key="big", UploadId=uid, MaxParts=2)
    assert page["IsTruncated"] and page["NextPartNumberMarker"] == 2
    parts = [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
    assert error_of(s3.complete_multipart_upload, Bucket=bucket, Key="big", UploadId=uid,
                    MultipartUpload={"Parts": parts[::-1]})[0] == "InvalidPartOrder"  # fmt: skip
    wrong = [*parts[:2], {"PartNumber": 3, "ETag": etags[0]}]
    assert error_of(s3.complete_multipart_upload, Bucket=bucket, Key="big", UploadId=uid,
                    MultipartUpload={"Parts": wrong})[0] == "InvalidPart"  # fmt: skip
    small = [parts[2], {"PartNumber": 4, "ETag": etags[2]}]
    s3.upload_part(Bucket=bucket, Key="big", UploadId=uid, PartNumber=4, Body=b"tail")
    assert error_of(s3.complete_multipart_upload, Bucket=bucket, Key="big", UploadId=uid,
                    MultipartUpload={"Parts": small})[0] == "EntityTooSmall"  # fmt: skip
    done = s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=uid,
                                        MultipartUpload={"Parts": parts})  # fmt: skip
    expected = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest()
    assert done["ETag"] == f'"{expected}-3"'
    whole = b"".join(parts_data)
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["Body"].read() == whole and got["ETag"] == done["ETag"]
    assert got["ContentType"] == "video/x-test" and got["Metadata"] == {"m": "1"}
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == len(whole) and head["ETag"] == done["ETag"]
    ranged = s3.get_object(Bucket=bucket, Key="big", Range=f"bytes={5 * MiB - 2}-{5 * MiB + 1}")
    assert ranged["Body"].read() == b"aabb"
    entry = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert (entry["Size"], entry["ETag"]) == (len(whole), done["ETag"])
    assert error_of(s3.list_parts, Bucket=bucket, Key="big", UploadId=uid)[:2] == (
        "NoSuchUpload", 404)  # fmt: skip
    # The unused part 4 and the marker are gone; the used parts stay for the manifest.
    segs = front.ops.containers[("AUTH_test", f"{bucket}+segments")].objects
    assert sorted(segs) == [f"big/{uid}/{n:05d}" for n in (1, 2, 3)]
    s3.delete_object(Bucket=bucket, Key="big")
    assert not segs  # deleting the object deleted its parts


def test_multipart_abort_and_copy_part(s3: Any, bucket: str) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=uid)
    assert error_of(s3.upload_part, Bucket=bucket, Key="k", UploadId=uid, PartNumber=2,
                    Body=b"y")[:2] == ("NoSuchUpload", 404)  # fmt: skip
    assert error_of(s3.abort_multipart_upload, Bucket=bucket, Key="k",
                    UploadId="../../etc/passwd")[0] == "NoSuchUpload"  # fmt: skip
    s3.put_object(Bucket=bucket, Key="source", Body=b"0123456789" * (MiB // 10 * 6))
    uid = s3.create_multipart_upload(Bucket=bucket, Key="copied")["UploadId"]
    first = s3.upload_part_copy(Bucket=bucket, Key="copied", UploadId=uid, PartNumber=1,
                                CopySource=f"{bucket}/source",
                                CopySourceRange=f"bytes=0-{5 * MiB - 1}")  # fmt: skip
    second = s3.upload_part_copy(
        Bucket=bucket,
        Key="copied",
        UploadId=uid,
        PartNumber=2,
        CopySource=f"{bucket}/source",
        CopySourceRange="bytes=0-9",
    )
    assert error_of(s3.upload_part_copy, Bucket=bucket, Key="copied", UploadId=uid,
                    PartNumber=3, CopySource=f"{bucket}/source",
                    CopySourceRange="bytes=0-99999999")[0] == "InvalidRange"  # fmt: skip
    s3.complete_multipart_upload(Bucket=bucket, Key="copied", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": first["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]}]})  # fmt: skip
    body = s3.get_object(Bucket=bucket, Key="copied")["Body"].read()
    assert len(body) == 5 * MiB + 10 and body[-10:] == b"0123456789"


def test_boto3_managed_transfer_multipart(s3: Any, bucket: str) -> None:
    from boto3.s3.transfer import TransferConfig

    data = bytes(range(256)) * (12 * MiB // 256)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "managed", Config=cfg)
    out = io.BytesIO()
    s3.download_fileobj(bucket, "managed", out, Config=cfg)
    assert out.getvalue() == data
    assert s3.head_object(Bucket=bucket, Key="managed")["ETag"].endswith('-3"')


# ---- ACLs and access ----------------------------------------------------------------------


def test_canned_acls_and_anonymous_access(front: Front, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="pub", Body=b"public data")
    anon_url = f"{front.url}/{bucket}/pub"
    status, _, body = raw("GET", anon_url)
    assert status == 403 and b"AccessDenied" in body
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert raw("GET", anon_url)[2] == b"public data"
    assert raw("GET", f"{front.url}/{bucket}")[0] == 200  # anonymous listing
    assert raw("PUT", f"{front.url}/{bucket}/anon", body=b"x")[0] == 403
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"} in [
        g["Grantee"] for g in grants]  # fmt: skip
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    assert raw("PUT", f"{front.url}/{bucket}/anon", body=b"anon")[0] == 200
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    assert raw("GET", anon_url)[0] == 403


def test_cross_account_access(front: Front, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="shared", Body=b"for test2")
    other = front.client("test2:tester2")
    assert error_of(other.get_object, Bucket=bucket, Key="shared")[:2] == ("AccessDenied", 403)
    s3.put_bucket_acl(Bucket=bucket, GrantRead='id="test2"')
    assert other.get_object(Bucket=bucket, Key="shared")["Body"].read() == b"for test2"
    assert error_of(other.put_object, Bucket=bucket, Key="x", Body=b"x")[0] == "AccessDenied"
    assert error_of(other.get_bucket_acl, Bucket=bucket)[0] == "AccessDenied"
    s3.put_bucket_acl(Bucket=bucket, ACL="authenticated-read")
    third = front.client("test:tester3")
    assert third.get_object(Bucket=bucket, Key="shared")["Body"].read() == b"for test2"
    assert error_of(third.create_bucket, Bucket="tester3-bucket")[0] == "AccessDenied"


def test_object_acls(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"x", ACL="private")
    assert error_of(s3.put_object, Bucket=bucket, Key="o", Body=b"x", ACL="public-read")[:2] == (
        "NotImplemented", 501)  # fmt: skip
    s3.put_object_acl(Bucket=bucket, Key="o", ACL="bucket-owner-full-control")
    assert s3.get_object_acl(Bucket=bucket, Key="o")["Owner"]["ID"] == "test"
    assert s3.get_object_tagging(Bucket=bucket, Key="o")["TagSet"] == []


# ---- protocol errors ----------------------------------------------------------------------


def test_malformed_and_unsupported(front: Front, bucket: str) -> None:
    body = b"<Delete><Object><Key>a</Key></Object>"  # truncated XML
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    url = f"http://127.0.0.1:{front.port}/{bucket}?delete"
    w = sign_v4("POST", url, headers={"Content-MD5": md5}, body=body)
    status, _, resp = raw("POST", url, headers=dict(w.headers), body=body)
    assert status == 400 and b"<Code>MalformedXML</Code>" in resp
    w = sign_v4("POST", url, body=b"<Delete/>")
    status, _, resp = raw("POST", url, headers=dict(w.headers), body=b"<Delete/>")
    assert status == 400 and b"Content-MD5" in resp
    for query, code in [("policy", b"NotImplemented"), ("cors", b"NotImplemented")]:
        target = f"http://127.0.0.1:{front.port}/{bucket}?{query}"
        w = sign_v4("GET", target)
        status, _, resp = raw("GET", target, headers=dict(w.headers))
        assert status == 501 and code in resp
    target = f"http://127.0.0.1:{front.port}/{bucket}/k"
    w = sign_v4("POST", target)
    assert raw("POST", target, headers=dict(w.headers))[0] == 405


def test_swift_paths_pass_through(front: Front) -> None:
    status, _, body = raw("GET", f"{front.url}/healthcheck")
    assert status == 200
    assert raw("GET", f"{front.url}/v1/AUTH_test")[2] == b"swift route"
    headers = {"X-Auth-Token": "AUTH_tk123"}
    assert raw("GET", f"{front.url}/v1/AUTH_test/c", headers=headers)[2] == b"swift route"
    # S3-signed requests are S3's even on a Swift-looking path (a bucket named "v1").
    w = sign_v4("GET", f"{front.url}/v1/AUTH_test")
    status, _, body = raw("GET", f"{front.url}/v1/AUTH_test", headers=dict(w.headers))
    assert status == 404 and b"NoSuchBucket" in body
