"""S3 against a real cluster started the `cairn up` way: boto3, the AWS CLI, Swift interop.

Uses the session's cluster (tests/integration/conftest.py: three replicas, tempauth users
as in docs/examples/swift-functest.toml).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.cluster import Cluster

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
KEYS = {"test:tester": "testing", "test:tester3": "testing3", "test2:tester2": "testing2"}
AWS = Path(sys.executable).with_name("aws")


@pytest.fixture(scope="module")
def clients(cluster: Cluster) -> Iterator[dict[str, Any]]:
    made: dict[str, Any] = {}
    for user, key in KEYS.items():
        made[user] = boto3.client(
            "s3", endpoint_url=cluster.proxy_url, region_name="us-east-1",
            aws_access_key_id=user, aws_secret_access_key=key,
            config=Config(s3={"addressing_style": "path"},
                          retries={"total_max_attempts": 1, "mode": "standard"}),
        )  # fmt: skip
    yield made
    for client in made.values():
        client.close()


@pytest.fixture
def s3(clients: dict[str, Any]) -> Any:
    return clients["test:tester"]


def code_of(call: Any, **kwargs: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    r = info.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:  # its response holds the socket: close it now, not at garbage collection
            return e.code, e.read()


def test_bucket_and_object_operations(s3: Any, clients: dict[str, Any]) -> None:
    s3.create_bucket(Bucket="cl-ops")
    assert code_of(s3.create_bucket, Bucket="cl-ops") == ("BucketAlreadyOwnedByYou", 409)
    other = clients["test2:tester2"]
    assert code_of(other.create_bucket, Bucket="cl-ops") == ("BucketAlreadyExists", 409)
    assert "cl-ops" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="cl-ops")
    assert s3.get_bucket_location(Bucket="cl-ops").get("LocationConstraint") is None
    s3.put_object(Bucket="cl-ops", Key="dir/a.txt", Body=b"alpha", Metadata={"k": "v"})
    s3.put_object(Bucket="cl-ops", Key="dir/b.txt", Body=b"beta")
    s3.put_object(Bucket="cl-ops", Key="top", Body=b"top")
    got = s3.get_object(Bucket="cl-ops", Key="dir/a.txt", Range="bytes=1-3")
    assert got["Body"].read() == b"lph" and got["Metadata"] == {"k": "v"}
    out = s3.list_objects_v2(Bucket="cl-ops", Delimiter="/")
    assert [c["Key"] for c in out["Contents"]] == ["top"]
    assert out["CommonPrefixes"] == [{"Prefix": "dir/"}]
    out = s3.list_objects(Bucket="cl-ops", Prefix="dir/", MaxKeys=1)
    assert out["IsTruncated"] and [c["Key"] for c in out["Contents"]] == ["dir/a.txt"]
    s3.copy_object(Bucket="cl-ops", Key="copy", CopySource="cl-ops/dir/a.txt")
    assert s3.get_object(Bucket="cl-ops", Key="copy")["Body"].read() == b"alpha"
    assert code_of(s3.get_object, Bucket="cl-ops", Key="nope") == ("NoSuchKey", 404)
    assert code_of(s3.get_object, Bucket="cl-ops", Key="top", Range="bytes=10-") == (
        "InvalidRange", 416)  # fmt: skip
    assert code_of(s3.get_object, Bucket="cl-ops", Key="top", IfMatch='"x"') == (
        "PreconditionFailed", 412)  # fmt: skip
    assert code_of(s3.delete_bucket, Bucket="cl-ops") == ("BucketNotEmpty", 409)
    versions = s3.list_object_versions(Bucket="cl-ops")["Versions"]
    s3.delete_objects(Bucket="cl-ops", Delete={"Objects": [
        {"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]})  # fmt: skip
    s3.delete_bucket(Bucket="cl-ops")
    assert code_of(s3.head_bucket, Bucket="cl-ops")[1] == 404


def test_errors(cluster: Cluster, s3: Any) -> None:
    bad = boto3.client(
        "s3",
        endpoint_url=cluster.proxy_url,
        region_name="us-east-1",
        aws_access_key_id="test:tester",
        aws_secret_access_key="wrong",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    try:
        assert code_of(bad.list_buckets) == ("SignatureDoesNotMatch", 403)
    finally:
        bad.close()
    ghost = boto3.client(
        "s3",
        endpoint_url=cluster.proxy_url,
        region_name="us-east-1",
        aws_access_key_id="no:body",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    try:
        assert code_of(ghost.list_buckets) == ("InvalidAccessKeyId", 403)
    finally:
        ghost.close()
    old = "20200101T000000Z"
    status, body = http(
        "GET",
        f"{cluster.proxy_url}/",
        headers={
            "x-amz-date": old,
            "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
            "Authorization": "AWS4-HMAC-SHA256 Credential=test:tester/20200101/us-east-1/s3/"
            "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        },
    )
    assert status == 403 and b"RequestTimeTooSkewed" in body
    assert code_of(s3.list_objects_v2, Bucket="no-such-bucket-here") == ("NoSuchBucket", 404)
    status, body = http("GET", f"{cluster.proxy_url}/some-bucket/key")
    assert status in (403, 404) and body.startswith(b"<?xml")


def test_presigned_and_expiry(cluster: Cluster, s3: Any) -> None:
    s3.create_bucket(Bucket="cl-pre")
    put = s3.generate_presigned_url("put_object", Params={"Bucket": "cl-pre", "Key": "p"},
                                    ExpiresIn=600)  # fmt: skip
    assert http("PUT", put, b"presigned", {"Content-Type": ""})[0] == 200
    get = s3.generate_presigned_url("get_object", Params={"Bucket": "cl-pre", "Key": "p"},
                                    ExpiresIn=1)  # fmt: skip
    time.sleep(2.5)  # let the one-second URL expire (the server compares with its clock)
    status, body = http("GET", get)
    assert status == 403 and b"Request has expired" in body


def test_interop_with_swift(cluster: Cluster, s3: Any) -> None:
    s3.create_bucket(Bucket="cl-interop")
    s3.put_object(Bucket="cl-interop", Key="from-s3", Body=b"s3 wrote this",
                  Metadata={"origin": "s3"})  # fmt: skip
    swift = cluster.connection("test:tester", "testing")
    headers, body = swift.get_object("cl-interop", "from-s3")
    assert body == b"s3 wrote this" and headers["x-object-meta-origin"] == "s3"
    swift.put_object("cl-interop", "from-swift", b"swift wrote this",
                     headers={"X-Object-Meta-Origin": "swift"})  # fmt: skip
    got = s3.get_object(Bucket="cl-interop", Key="from-swift")
    assert got["Body"].read() == b"swift wrote this" and got["Metadata"] == {"origin": "swift"}
    swift.put_container("made-by-swift")
    swift.put_object("made-by-swift", "k", b"x")
    assert [c["Key"] for c in s3.list_objects_v2(Bucket="made-by-swift")["Contents"]] == ["k"]


def test_public_read_and_cross_account(cluster: Cluster, clients: dict[str, Any]) -> None:
    s3 = clients["test:tester"]
    s3.create_bucket(Bucket="cl-public")
    s3.put_object(Bucket="cl-public", Key="obj", Body=b"open")
    url = f"{cluster.proxy_url}/cl-public/obj"
    assert http("GET", url)[0] == 403
    s3.put_bucket_acl(Bucket="cl-public", ACL="public-read")
    assert http("GET", url) == (200, b"open")
    other = clients["test2:tester2"]
    assert other.get_object(Bucket="cl-public", Key="obj")["Body"].read() == b"open"
    assert code_of(other.put_object, Bucket="cl-public", Key="x", Body=b"x")[1] == 403


def test_aws_cli_multipart_100mib(cluster: Cluster, s3: Any, tmp_path: Path) -> None:
    if not AWS.exists():
        pytest.skip("the AWS CLI is not installed in this environment")
    data = os.urandom(MiB) * 100
    src = tmp_path / "hundred.bin"
    src.write_bytes(data)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "AWS_ACCESS_KEY_ID": "test:tester", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}  # fmt: skip

    def aws(*args: str) -> str:
        out = subprocess.run(
            [str(AWS), "--endpoint-url", cluster.proxy_url, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    aws("s3", "mb", "s3://cl-cli")
    aws("s3", "cp", str(src), "s3://cl-cli/hundred.bin")
    head = json.loads(aws("s3api", "head-object", "--bucket", "cl-cli", "--key", "hundred.bin"))
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-13"')
    listing = s3.list_objects_v2(Bucket="cl-cli")["Contents"]
    assert listing[0]["Size"] == len(data)
    swift = cluster.connection("test:tester", "testing")
    _, body = swift.get_object("cl-cli", "hundred.bin")
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    (tree / "sub" / "b.txt").write_text("b\n")
    assert "upload:" in aws("s3", "sync", str(tree), "s3://cl-cli/tree/")
    # A second sync finds nothing to do: the sizes and times it compares match.
    assert "upload:" not in aws("s3", "sync", str(tree), "s3://cl-cli/tree/")
    listed = aws("s3", "ls", "--recursive", "s3://cl-cli/")
    assert "tree/sub/b.txt" in listed and "hundred.bin" in listed
    aws("s3", "rm", "--recursive", "s3://cl-cli/")
    aws("s3", "rb", "s3://cl-cli")
    assert code_of(s3.head_bucket, Bucket="cl-cli")[1] == 404


def test_bad_digests_store_nothing(cluster: Cluster, s3: Any) -> None:
    import base64
    import io
    import zlib

    from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

    from tests.unit.s3.botosign import sign_v4

    s3.create_bucket(Bucket="cl-digest")
    wrong = base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode()
    assert code_of(s3.put_object, Bucket="cl-digest", Key="k", Body=b"data" * 1000,
                   ChecksumCRC32=wrong) == ("BadDigest", 400)  # fmt: skip
    assert code_of(s3.head_object, Bucket="cl-digest", Key="k")[1] == 404
    # An aws-chunked upload (botocore's own encoder, CRC32 trailer) stores the decoded bytes;
    # the same body with a forged trailer stores nothing.
    data = os.urandom(50_000)
    body = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=16384,
    ).read()
    context = {
        "checksum": {
            "request_algorithm": {
                "in": "trailer",
                "algorithm": "crc32",
                "name": "x-amz-checksum-crc32",
            }
        }
    }
    for key, payload, expected in [
        ("chunked", body, 200),
        ("forged", body.replace(b"x-amz-checksum-crc32:", b"x-amz-checksum-crc32:A"), 400),
    ]:
        headers = {
            "Content-Encoding": "aws-chunked",
            "X-Amz-Trailer": "x-amz-checksum-crc32",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "Content-Length": str(len(payload)),
        }
        url = f"{cluster.proxy_url}/cl-digest/{key}"
        w = sign_v4("PUT", url, headers=headers, body=payload, context=context)
        assert http("PUT", url, payload, dict(w.headers))[0] == expected
    assert s3.get_object(Bucket="cl-digest", Key="chunked")["Body"].read() == data
    assert code_of(s3.head_object, Bucket="cl-digest", Key="forged")[1] == 404
