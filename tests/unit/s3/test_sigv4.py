"""SigV4/SigV2 verification against AWS's published examples and botocore's real signers."""

from __future__ import annotations

import pytest

from common.clock import ManualClock
from proxy.s3 import sigv4
from proxy.s3.authtypes import (
    STREAMING_SIGNED,
    UNSIGNED_PAYLOAD,
    AuthRequest,
    VerifiedAuth,
    parse_amz_date,
    split_query,
)
from proxy.s3.errors import S3Error, invalid_access_key
from tests.unit.s3.botosign import (
    ACCESS_KEY,
    SECRET,
    Wire,
    presign_v2,
    presign_v4,
    sign_v2,
    sign_v4,
)

# The example credentials of the AWS S3 SigV4 documentation.
DOC_AK = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_TIME = parse_amz_date("20130524T000000Z")
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def parse(w: Wire, **kw: object) -> AuthRequest:
    auth = sigv4.parse_auth(w.method, w.raw_path, w.raw_query, w.headers, **kw)  # type: ignore[arg-type]
    assert auth is not None
    return auth


def check(w: Wire, secret: str = SECRET, clock: ManualClock | None = None) -> VerifiedAuth:
    return sigv4.verify(parse(w), secret, clock or w.clock())


def code_of(fn: object, *args: object, **kw: object) -> S3Error:
    with pytest.raises(S3Error) as info:
        fn(*args, **kw)  # type: ignore[operator]
    return info.value


# ---- AWS documentation examples -----------------------------------------------------------


def test_aws_doc_get_object_with_range() -> None:
    auth_value = (
        f"AWS4-HMAC-SHA256 Credential={DOC_AK}/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    headers = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY),
        ("x-amz-date", "20130524T000000Z"),
        ("Authorization", auth_value),
    ]
    auth = sigv4.parse_auth("GET", "/test.txt", [], headers)
    assert auth is not None and auth.access_key == DOC_AK
    assert auth.canonical_request == (
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
        f"x-amz-content-sha256:{EMPTY}\nx-amz-date:20130524T000000Z\n\n"
        f"host;range;x-amz-content-sha256;x-amz-date\n{EMPTY}"
    )
    assert auth.string_to_sign.endswith(
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    )
    verified = sigv4.verify(auth, DOC_SECRET, ManualClock(DOC_TIME))
    assert verified.payload_sha256 == EMPTY and not verified.is_streaming


def test_aws_doc_presigned_get() -> None:
    query = split_query(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    headers = [("Host", "examplebucket.s3.amazonaws.com")]
    auth = sigv4.parse_auth("GET", "/test.txt", query, headers)
    assert auth is not None and auth.payload_hash == UNSIGNED_PAYLOAD
    sigv4.verify(auth, DOC_SECRET, ManualClock(DOC_TIME + 86400))
    err = code_of(sigv4.verify, auth, DOC_SECRET, ManualClock(DOC_TIME + 86401))
    assert (err.code, err.message, err.status) == ("AccessDenied", "Request has expired", 403)


def test_aws_doc_streaming_put_seed_signature() -> None:
    headers = [
        ("Host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", STREAMING_SIGNED),
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("Content-Length", "66824"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={DOC_AK}/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;"
            "x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
            "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        ),
    ]
    auth = sigv4.parse_auth("PUT", "/examplebucket/chunkObject.txt", [], headers)
    assert auth is not None
    verified = sigv4.verify(auth, DOC_SECRET, ManualClock(DOC_TIME))
    assert verified.is_streaming and verified.streaming is not None
    assert verified.streaming.seed_signature.startswith("4f232c43")
    assert verified.streaming.scope == "20130524/us-east-1/s3/aws4_request"


# ---- botocore-signed requests -------------------------------------------------------------

KEYS = [
    "plain.txt",
    "with space/and+plus",
    "unicodé/ключ/鍵",
    "odd!*'()chars~;:@&=$,",
    "percent%25literal",
    "a//double//slash/",
    "./dot/../segments",
]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_botocore_header_auth_roundtrip(key: str, scheme: str) -> None:
    from urllib.parse import quote

    url = f"{scheme}://127.0.0.1:8080/bucket/{quote(key, safe='/~')}"
    w = sign_v4(
        "PUT",
        url,
        body=b"hello world",
        headers={"Content-Type": "text/plain"},
        sign_payload=scheme == "http",
    )
    verified = check(w)
    assert verified.access_key == ACCESS_KEY
    if scheme == "https":
        assert verified.payload_hash == UNSIGNED_PAYLOAD
    else:
        assert verified.payload_sha256 is not None


def test_botocore_query_parameters_are_canonicalised() -> None:
    url = (
        "http://127.0.0.1:8080/bucket?list-type=2&prefix=a%20b%2Fc&delimiter=%2F"
        "&start-after=z%7E&encoding-type=url&fetch-owner=true"
    )
    assert check(sign_v4("GET", url)).version == "v4"


def test_virtual_hosted_style_and_custom_region() -> None:
    w = sign_v4("GET", "http://bucket.s3.cairn.test:8080/key", region="cairn-1")
    auth = parse(w)
    assert auth.region == "cairn-1"
    sigv4.verify(auth, SECRET, w.clock())


def test_multiple_header_values_and_whitespace_are_canonicalised() -> None:
    w = sign_v4("GET", "http://h/b/k", headers={"x-amz-meta-note": "  spaced   out  value "})
    check(w)


def test_configured_region_mismatch_is_malformed_header() -> None:
    w = sign_v4("GET", "http://h/b/k", region="eu-west-1")
    err = code_of(parse, w, region="us-east-1")
    assert err.code == "AuthorizationHeaderMalformed"
    assert ("Region", "us-east-1") in err.extra
    parse(w, region="eu-west-1")


@pytest.mark.parametrize(
    ("mutate", "what"),
    [
        (lambda w: Wire("DELETE", w.raw_path, w.raw_query, w.headers, w.body), "method"),
        (lambda w: Wire(w.method, w.raw_path + "x", w.raw_query, w.headers, w.body), "path"),
        (lambda w: Wire(w.method, w.raw_path, [*w.raw_query, ("acl", "")], w.headers, w.body), "q"),
        (lambda w: w.replace_header("Range", "bytes=0-10"), "signed header"),
        (lambda w: w.replace_header("Host", "other:8080"), "host"),
    ],
)
def test_any_change_breaks_the_signature(mutate: object, what: str) -> None:
    w = sign_v4("GET", "http://127.0.0.1:8080/b/k?versionId=null", headers={"Range": "bytes=0-9"})
    check(w)
    err = code_of(check, mutate(w))  # type: ignore[operator]
    assert err.code == "SignatureDoesNotMatch", what
    names = [name for name, _ in err.extra]
    assert {"AWSAccessKeyId", "StringToSign", "SignatureProvided", "CanonicalRequest"} <= set(names)


def test_unsigned_header_may_change() -> None:
    w = sign_v4("GET", "http://127.0.0.1:8080/b/k")
    check(w.replace_header("User-Agent", "anything"))


def test_wrong_secret() -> None:
    err = code_of(check, sign_v4("GET", "http://h/b/k"), "not-the-secret")
    assert (err.code, err.status) == ("SignatureDoesNotMatch", 403)


def test_clock_skew_limits() -> None:
    w = sign_v4("GET", "http://h/b/k")
    base = w.clock().time()
    check(w, clock=ManualClock(base + 14 * 60))
    check(w, clock=ManualClock(base - 14 * 60))
    for delta in (16 * 60, -16 * 60):
        err = code_of(check, w, clock=ManualClock(base + delta))
        assert (err.code, err.status) == ("RequestTimeTooSkewed", 403)
        assert ("MaxAllowedSkewMilliseconds", "900000") in err.extra


def test_custom_skew() -> None:
    w = sign_v4("GET", "http://h/b/k")
    auth = parse(w)
    with pytest.raises(S3Error):
        sigv4.verify(auth, SECRET, ManualClock(w.clock().time() + 61), skew_s_max=60)


def test_presigned_expiry_and_not_yet_valid() -> None:
    w = presign_v4("PUT", "http://127.0.0.1:8080/b/k", expires_s=600)
    start = w.clock().time()
    for offset in (0, 600):
        check(w, clock=ManualClock(start + offset))
    err = code_of(check, w, clock=ManualClock(start + 601))
    assert err.message == "Request has expired"
    err = code_of(check, w, clock=ManualClock(start - 3600))
    assert err.code == "AccessDenied"


def test_presigned_week_limit() -> None:
    w = presign_v4("GET", "http://h/b/k", expires_s=604800)
    check(w)
    too_long = [(n, "604801" if n == "X-Amz-Expires" else v) for n, v in w.raw_query]
    err = code_of(parse, Wire(w.method, w.raw_path, too_long, w.headers, b""))
    assert err.code == "AuthorizationQueryParametersError"


@pytest.mark.parametrize(
    "drop",
    ["X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"],
)
def test_presigned_missing_parameter(drop: str) -> None:
    w = presign_v4("GET", "http://h/b/k")
    query = [(n, v) for n, v in w.raw_query if n != drop]
    err = code_of(parse, Wire(w.method, w.raw_path, query, w.headers, b""))
    assert (err.code, err.status) == ("AuthorizationQueryParametersError", 400)


def test_presigned_tampered_query() -> None:
    w = presign_v4("GET", "http://h/b/k")
    query = [(n, "7200" if n == "X-Amz-Expires" else v) for n, v in w.raw_query]
    err = code_of(check, Wire(w.method, w.raw_path, query, w.headers, b""))
    assert err.code == "SignatureDoesNotMatch"


GOOD_CRED = "AK/20130524/us-east-1/s3/aws4_request"
GOOD_SIG = "0" * 64


@pytest.mark.parametrize(
    "value",
    [
        f"AWS4-HMAC-SHA256 Credential={GOOD_CRED}, SignedHeaders=host",
        f"AWS4-HMAC-SHA256 Credential={GOOD_CRED}, SignedHeaders=host, Signature=xyz",
        f"AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3, SignedHeaders=host, "
        f"Signature={GOOD_SIG}",
        f"AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/ec2/aws4_request, "
        f"SignedHeaders=host, Signature={GOOD_SIG}",
        f"AWS4-HMAC-SHA256 Credential=AK/2013052/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host, Signature={GOOD_SIG}",
        f"AWS4-HMAC-SHA256 Credential={GOOD_CRED}, SignedHeaders=x-amz-date, Signature={GOOD_SIG}",
        f"AWS4-HMAC-SHA256 Credential={GOOD_CRED}, SignedHeaders=x-amz-date;host, "
        f"Signature={GOOD_SIG}",
        f"AWS4-HMAC-SHA256 Credential={GOOD_CRED}, SignedHeaders=Host, Signature={GOOD_SIG}",
        f"AWS4-HMAC-SHA256 Credential={GOOD_CRED}, SignedHeaders=host, Signature={GOOD_SIG}, X=1",
        f"AWS4-HMAC-SHA256 Credential=AK/20130525/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host, Signature={GOOD_SIG}",
        "AWS4-HMAC-SHA256 " + "x" * 9000,
    ],
)
def test_malformed_authorization_header(value: str) -> None:
    headers = [
        ("Host", "h"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-content-sha256", EMPTY),
        ("Authorization", value),
    ]
    err = code_of(sigv4.parse_auth, "GET", "/b/k", [], headers)
    assert (err.code, err.status) == ("AuthorizationHeaderMalformed", 400)


def _header_wire(**overrides: str | None) -> list[tuple[str, str]]:
    base: dict[str, str | None] = {
        "Host": "h",
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": EMPTY,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={GOOD_CRED}, SignedHeaders=host, "
        f"Signature={GOOD_SIG}",
    }
    base.update(overrides)
    return [(k, v) for k, v in base.items() if v is not None]


def test_content_sha256_header_rules() -> None:
    err = code_of(sigv4.parse_auth, "GET", "/", [], _header_wire(**{"x-amz-content-sha256": None}))
    assert err.code == "InvalidRequest"
    err = code_of(sigv4.parse_auth, "GET", "/", [], _header_wire(**{"x-amz-content-sha256": "x"}))
    assert err.code == "InvalidArgument"
    upper = EMPTY.upper()
    err = code_of(sigv4.parse_auth, "GET", "/", [], _header_wire(**{"x-amz-content-sha256": upper}))
    assert err.code == "InvalidArgument"


def test_missing_or_bad_date() -> None:
    for value in (None, "yesterday", "20130524T000000"):
        err = code_of(sigv4.parse_auth, "GET", "/", [], _header_wire(**{"x-amz-date": value}))
        assert err.code == "AccessDenied"


def test_http_date_header_instead_of_x_amz_date() -> None:
    # botocore always sends X-Amz-Date, so the Date-header branch is checked on the parse:
    # the string to sign must carry the same timestamp in ISO basic form.
    headers = _header_wire(**{"x-amz-date": None, "Date": "Fri, 24 May 2013 00:00:00 GMT"})
    auth = sigv4.parse_auth("GET", "/", [], headers)
    assert auth is not None and auth.amz_date == "20130524T000000Z"
    assert auth.string_to_sign.split("\n")[1] == "20130524T000000Z"


def test_unsupported_authorization_and_double_auth() -> None:
    err = code_of(sigv4.parse_auth, "GET", "/", [], [("Authorization", "Bearer abc")])
    assert err.code == "InvalidArgument"
    w = presign_v4("GET", "http://h/b/k")
    err = code_of(sigv4.parse_auth, "GET", "/", w.raw_query, [("Authorization", "AWS a:b")])
    assert err.code == "InvalidArgument"


def test_anonymous_is_none_and_s3_detection() -> None:
    assert sigv4.parse_auth("GET", "/b/k", [], [("Host", "h")]) is None
    assert not sigv4.is_s3_request({"X-Auth-Token": "AUTH_tk"}, [])
    assert sigv4.is_s3_request({"Authorization": "AWS4-HMAC-SHA256 Credential=..."}, [])
    assert sigv4.is_s3_request({"Authorization": "AWS a:b"}, [])
    assert sigv4.is_s3_request({}, [("X-Amz-Algorithm", "AWS4-HMAC-SHA256")])
    assert sigv4.is_s3_request({}, [("AWSAccessKeyId", "a"), ("Signature", "s")])
    assert not sigv4.is_s3_request({}, [("temp_url_sig", "x")])


def test_invalid_access_key_helper() -> None:
    err = invalid_access_key("nobody")
    assert (err.code, err.status) == ("InvalidAccessKeyId", 403)
    assert b"<AWSAccessKeyId>nobody</AWSAccessKeyId>" in err.to_xml("tx1")


# ---- SigV2 --------------------------------------------------------------------------------


def test_sigv2_header_with_colon_in_access_key() -> None:
    w = sign_v2("PUT", "http://127.0.0.1:8080/bucket/k?acl", headers={"x-amz-acl": "private"})
    verified = check(w)
    assert (verified.version, verified.access_key) == ("v2", ACCESS_KEY)


def test_sigv2_subresources_and_content_headers() -> None:
    url = "http://127.0.0.1:8080/bucket/k%20x?uploadId=abc&partNumber=2&ignored=1"
    w = sign_v2("PUT", url, headers={"Content-Type": "text/plain", "Content-MD5": "AAAA"})
    check(w)
    err = code_of(check, w.replace_header("Content-Type", "text/html"))
    assert err.code == "SignatureDoesNotMatch"


def test_sigv2_virtual_hosted() -> None:
    w = sign_v2("GET", "http://bucket.s3.cairn.test/k", auth_path="/bucket/k")
    auth = parse(w, virtual_host_bucket="bucket")
    assert auth is not None
    sigv4.verify(auth, SECRET, w.clock())
    wrong = sigv4.parse_auth(w.method, w.raw_path, w.raw_query, w.headers)
    assert wrong is not None
    assert code_of(sigv4.verify, wrong, SECRET, w.clock()).code == "SignatureDoesNotMatch"


def test_sigv2_wrong_secret_and_skew() -> None:
    w = sign_v2("GET", "http://h/b/k")
    assert code_of(check, w, "bad").code == "SignatureDoesNotMatch"
    late = ManualClock(w.clock().time() + 3600)
    assert code_of(check, w, clock=late).code == "RequestTimeTooSkewed"


def test_sigv2_presigned_and_expiry() -> None:
    w = presign_v2("GET", "http://127.0.0.1:8080/bucket/k")
    check(w)
    expires = float(dict(w.raw_query)["Expires"])
    err = code_of(check, w, clock=ManualClock(expires + 1))
    assert err.message == "Request has expired"


def test_sigv2_malformed() -> None:
    for value in ("AWS nocolon", "AWS :sig", "AWS key:"):
        headers = [("Authorization", value), ("Date", "Fri, 24 May 2013 00:00:00 GMT")]
        assert code_of(sigv4.parse_auth, "GET", "/", [], headers).code == (
            "AuthorizationHeaderMalformed"
        )
    err = code_of(sigv4.parse_auth, "GET", "/", [], [("Authorization", "AWS a:b")])
    assert err.code == "AccessDenied"
    err = code_of(sigv4.parse_auth, "GET", "/", [("AWSAccessKeyId", "a"), ("Signature", "s")], [])
    assert err.code == "AccessDenied"
