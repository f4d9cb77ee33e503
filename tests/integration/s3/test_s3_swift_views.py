"""A multipart object written through S3 looks like an ordinary large object to Swift."""

from __future__ import annotations

import os
import uuid

import boto3
import pytest
from botocore.config import Config

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def test_multipart_object_through_swift_eyes(cluster):
    s3 = boto3.client(
        "s3", endpoint_url=cluster.proxy_url, region_name="us-east-1",
        aws_access_key_id="test:tester", aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}),
    )  # fmt: skip
    bucket = f"views-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    parts = [os.urandom(5 * MiB), os.urandom(1234)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="text/x-demo")
    done = []
    for i, data in enumerate(parts, start=1):
        r = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=i, Body=data
        )
        done.append({"PartNumber": i, "ETag": r["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": done}
    )
    conn = cluster.connection("test:tester", "testing")
    headers, body = conn.get_object(bucket, "mp")
    assert body == b"".join(parts)
    assert headers["content-type"] == "text/x-demo"
    _, listing = conn.get_container(bucket)
    row = next(r for r in listing if r["name"] == "mp")
    assert row["content_type"] == "text/x-demo"
    assert row["bytes"] == sum(len(p) for p in parts)
