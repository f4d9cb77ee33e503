"""The S3 front's authentication end to end (SigV4/V2 headers, presigned URLs, virtual hosts,
streaming signed and trailer uploads) with real clients (boto3, urllib, botocore signers)
over loopback, on the MemoryOps storage twin."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from tests.unit.s3.botosign import presign_v4, sign_v4
from tests.unit.s3.fronthelpers import error_of, raw
from tests.unit.s3.frontserver import DOMAIN, Front

pytestmark = pytest.mark.integration


# ---- auth ---------------------------------------------------------------------------------


def test_auth_errors(front: Front, bucket: str) -> None:
    bad = front.client(secret="wrong")
    code, status, err = error_of(bad.list_objects_v2, Bucket=bucket)
    assert (code, status) == ("SignatureDoesNotMatch", 403) and "StringToSign" in err
    nobody = front.client(secret="x")
    nobody_client = front.client("test:tester", secret="x")
    assert nobody_client is not None
    from tests.unit.s3.frontserver import USERS

    USERS["ghost:user"] = "x"
    try:
        ghost = front.client("ghost:user")
    finally:
        del USERS["ghost:user"]
    assert error_of(ghost.list_buckets)[:2] == ("InvalidAccessKeyId", 403)
    assert nobody is not None
    front.clock.offset_s = 20 * 60
    try:
        assert error_of(front.client().list_buckets)[:2] == ("RequestTimeTooSkewed", 403)
    finally:
        front.clock.offset_s = 0


def test_sigv2_client(front: Front, bucket: str) -> None:
    v2 = front.client(signature_version="s3")
    v2.put_object(Bucket=bucket, Key="v2", Body=b"sig v2")
    assert v2.get_object(Bucket=bucket, Key="v2")["Body"].read() == b"sig v2"


@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_presigned_urls(front: Front, bucket: str, version: str) -> None:
    s3 = front.client(signature_version=version)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre"},
                                        ExpiresIn=300)  # fmt: skip
    assert ("X-Amz-Signature=" in put_url) is (version == "s3v4")
    # urllib would add a form Content-Type, which SigV2 signs: send the empty one signed.
    status, _, _ = raw("PUT", put_url, headers={"Content-Type": ""}, body=b"presigned body")
    assert status == 200
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"},
                                        ExpiresIn=300)  # fmt: skip
    status, _, body = raw("GET", get_url)
    assert (status, body) == (200, b"presigned body")
    front.clock.offset_s = 301
    try:
        status, headers, body = raw("GET", get_url)
    finally:
        front.clock.offset_s = 0
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    assert b"Request has expired" in body and headers["Content-Type"] == "application/xml"
    status, _, body = raw("GET", get_url.replace(f"/{bucket}/pre", f"/{bucket}/other"))
    assert status == 403 and b"SignatureDoesNotMatch" in body


def test_virtual_hosted_requests(front: Front, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="vh", Body=b"virtual")
    w = sign_v4("GET", f"http://{bucket}.{DOMAIN}:{front.port}/vh")
    url = f"http://127.0.0.1:{front.port}{w.raw_path}"
    status, _, body = raw("GET", url, headers=dict(w.headers))
    assert (status, body) == (200, b"virtual")
    p = presign_v4("GET", f"http://{bucket}.{DOMAIN}:{front.port}/vh")
    query = "&".join(f"{k}={v}" for k, v in p.raw_query)
    status, _, body = raw(
        "GET", f"{url}?{query}", headers={"Host": f"{bucket}.{DOMAIN}:{front.port}"}
    )
    assert (status, body) == (200, b"virtual")


def test_aws_chunked_trailer_upload(front: Front, bucket: str) -> None:
    data = bytes(range(256)) * 300
    body = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=8192,
    ).read()
    headers = {"Content-Encoding": "aws-chunked", "X-Amz-Trailer": "x-amz-checksum-crc32",
               "X-Amz-Decoded-Content-Length": str(len(data)),
               "Content-Length": str(len(body))}  # fmt: skip
    context = {
        "checksum": {
            "request_algorithm": {
                "in": "trailer",
                "algorithm": "crc32",
                "name": "x-amz-checksum-crc32",
            }
        }
    }
    url = f"http://127.0.0.1:{front.port}/{bucket}/chunked"
    w = sign_v4("PUT", url, headers=headers, body=body, context=context)
    status, resp_headers, _ = raw("PUT", url, headers=dict(w.headers), body=body)
    assert status == 200 and resp_headers["x-amz-checksum-crc32"]
    assert front.client().get_object(Bucket=bucket, Key="chunked")["Body"].read() == data
    broken = body.replace(b"\r\n0\r\n", b"\r\n0\r\n", 1)[: len(body) // 2]
    headers["Content-Length"] = str(len(broken))
    w = sign_v4("PUT", url + "2", headers=headers, body=broken, context=context)
    status, _, resp = raw("PUT", url + "2", headers=dict(w.headers), body=broken)
    assert status == 400 and b"IncompleteBody" in resp


def _signing_key(secret: str, date: str) -> bytes:
    import hmac

    key = ("AWS4" + secret).encode()
    for part in (date, "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def test_signed_streaming_upload(front: Front, bucket: str) -> None:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD: botocore signs the seed, the test chains chunks."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from proxy.s3.authtypes import StreamingSigning
    from tests.unit.s3.test_chunked import encode_signed

    class StreamingSigner(S3SigV4Auth):  # type: ignore[misc]  # as chunk-signing SDKs do
        def payload(self, request: Any) -> str:
            return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"

    data = bytes(range(256)) * 200
    for key, tamper, expected in [("signed", False, 200), ("tampered", True, 403)]:
        url = f"http://127.0.0.1:{front.port}/{bucket}/{key}"
        # The encoded length is the same whatever the signatures are: size it first.
        probe = encode_signed(StreamingSigning(b"k" * 32, "d", "s", "0" * 64), data, 8192, None)
        headers = {"Content-Encoding": "aws-chunked", "Content-Length": str(len(probe)),
                   "X-Amz-Decoded-Content-Length": str(len(data))}  # fmt: skip
        req = AWSRequest(method="PUT", url=url, headers=headers, data=b"")
        StreamingSigner(Credentials("test:tester", "testing"), "s3", "us-east-1").add_auth(req)
        amz_date = req.headers["X-Amz-Date"]
        seed = req.headers["Authorization"].rpartition("Signature=")[2]
        signing = StreamingSigning(
            _signing_key("testing", amz_date[:8]),
            amz_date,
            f"{amz_date[:8]}/us-east-1/s3/aws4_request",
            seed,
        )
        body = encode_signed(signing, data, 8192, None)
        if tamper:
            body = body.replace(bytes(range(256)), bytes(range(1, 256)) + b"\x00", 1)
        sent = {k: v for k, v in req.headers.items()}
        status, _, resp = raw("PUT", url, headers=sent, body=body)
        assert status == expected, resp
    assert front.client().get_object(Bucket=bucket, Key="signed")["Body"].read() == data
    assert error_of(front.client().head_object, Bucket=bucket, Key="tampered")[1] == 404
