"""aws-chunked decoding: AWS's documented example, botocore's real encoder, and bad input.

Every good body is decoded whole, byte by byte and in random pieces; every bad one must
raise an S3Error (never anything else, never hang).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import random
import zlib

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.s3 import sigv4
from proxy.s3.authtypes import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    StreamingSigning,
    VerifiedAuth,
)
from proxy.s3.checksums import ChecksumAlgorithm
from proxy.s3.chunked import (
    AwsChunkedDecoder,
    BodyEnd,
    ChunkData,
    Event,
    is_aws_chunked,
    strip_aws_chunked,
)
from proxy.s3.errors import S3Error
from tests.unit.s3.botosign import SECRET, sign_v4

DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_DATE = "20130524T000000Z"
DOC_SCOPE = "20130524/us-east-1/s3/aws4_request"
DOC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_SIGS = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
DOC_BODY = (
    f"10000;chunk-signature={DOC_SIGS[0]}\r\n".encode()
    + b"a" * 65536
    + f"\r\n400;chunk-signature={DOC_SIGS[1]}\r\n".encode()
    + b"a" * 1024
    + f"\r\n0;chunk-signature={DOC_SIGS[2]}\r\n\r\n".encode()
)


def doc_signing() -> StreamingSigning:
    key = sigv4.derive_signing_key(DOC_SECRET, "20130524", "us-east-1")
    return StreamingSigning(key, DOC_DATE, DOC_SCOPE, DOC_SEED)


def doc_decoder(**kw: object) -> AwsChunkedDecoder:
    args: dict[str, object] = {
        "mode": STREAMING_SIGNED,
        "decoded_length": 66560,
        "streaming": doc_signing(),
    }
    args.update(kw)
    return AwsChunkedDecoder(**args)  # type: ignore[arg-type]


def run(decoder: AwsChunkedDecoder, pieces: list[bytes]) -> tuple[bytes, BodyEnd]:
    events: list[Event] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    decoder.close()
    data = b"".join(e.data for e in events if isinstance(e, ChunkData))
    ends = [e for e in events if isinstance(e, BodyEnd)]
    assert len(ends) == 1 and events[-1] is ends[0]
    return data, ends[0]


def splits(body: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(body):
        step = rng.randint(1, 700)
        out.append(body[pos : pos + step])
        pos += step
    return out


def bytewise(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


# ---- AWS's example ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["whole", "bytewise", "random1", "random2"])
def test_aws_doc_signed_body(how: str) -> None:
    pieces = {
        "whole": [DOC_BODY],
        "bytewise": bytewise(DOC_BODY),
        "random1": splits(DOC_BODY, 1),
        "random2": splits(DOC_BODY, 2),
    }[how]
    data, end = run(doc_decoder(), pieces)
    assert data == b"a" * 66560 and end.size_bytes == 66560
    assert end.trailers == () and end.checksum is None


def test_aws_doc_chain_matches_independent_computation() -> None:
    # Recompute the documented chunk signatures with plain hmac, independent of the decoder.
    key = sigv4.derive_signing_key(DOC_SECRET, "20130524", "us-east-1")
    prev = DOC_SEED
    for data, expected in zip([b"a" * 65536, b"a" * 1024, b""], DOC_SIGS, strict=True):
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                DOC_DATE,
                DOC_SCOPE,
                prev,
                hashlib.sha256(b"").hexdigest(),
                hashlib.sha256(data).hexdigest(),
            ]
        )
        prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        assert prev == expected


def flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (flip(DOC_BODY, 200), "SignatureDoesNotMatch"),  # a data byte
        (DOC_BODY.replace(DOC_SIGS[1].encode(), DOC_SIGS[0].encode()), "SignatureDoesNotMatch"),
        (DOC_BODY.replace(DOC_SIGS[2].encode(), b"0" * 64), "SignatureDoesNotMatch"),
        (DOC_BODY[:-2], "IncompleteBody"),  # truncated
        (DOC_BODY[:1000], "IncompleteBody"),
        (b"", "IncompleteBody"),
        (DOC_BODY + b"x", "IncompleteBody"),  # trailing garbage
        (DOC_BODY.replace(b"10000;", b"1000g;"), "InvalidChunkSizeError"),
        (DOC_BODY.replace(b"10000;", b"-10000;"), "InvalidChunkSizeError"),
        (DOC_BODY.replace(b"10000;chunk-signature", b"10000;chunk-sig"), "IncompleteBody"),
        (
            DOC_BODY.replace(b"10000;chunk-signature=ad80", b"10000;chunk-signature=AD80"),
            "IncompleteBody",
        ),
        (DOC_BODY.replace(b"a\r\n400", b"a\n400"), "IncompleteBody"),  # bare LF
        (b"1" * 5000 + b"\r\n", "IncompleteBody"),  # endless framing line
        (b"fffffffffffffffff;chunk-signature=" + b"0" * 64 + b"\r\n", "InvalidChunkSizeError"),
    ],
)
def test_aws_doc_body_tampered(body: bytes, code: str) -> None:
    for pieces in ([body], splits(body, 3)):
        decoder = doc_decoder()
        with pytest.raises(S3Error) as info:
            run(decoder, pieces)
        assert info.value.code == code
        # Errors are terminal.
        with pytest.raises(S3Error):
            decoder.feed(b"more")


def test_decoded_length_mismatch() -> None:
    with pytest.raises(S3Error) as info:
        run(doc_decoder(decoded_length=66559), [DOC_BODY])
    assert info.value.code == "IncompleteBody"
    with pytest.raises(S3Error) as info:
        run(doc_decoder(decoded_length=66561), [DOC_BODY])
    assert info.value.code == "IncompleteBody"


# ---- signed body with a signed trailer (constructed per spec, signed independently) -------


def encode_signed(
    signing: StreamingSigning,
    data: bytes,
    chunk: int,
    trailers: list[tuple[str, str]] | None,
) -> bytes:
    prev = signing.seed_signature
    out = bytearray()
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] + [b""]
    for piece in pieces:
        sts = (
            f"AWS4-HMAC-SHA256-PAYLOAD\n{signing.amz_date}\n{signing.scope}\n{prev}\n"
            f"{hashlib.sha256(b'').hexdigest()}\n{hashlib.sha256(piece).hexdigest()}"
        )
        prev = hmac.new(signing.signing_key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{len(piece):x};chunk-signature={prev}\r\n".encode() + piece
        if piece:
            out += b"\r\n"
    if trailers is None:
        return bytes(out + b"\r\n")
    block = "".join(f"{n}:{v}\n" for n, v in trailers)
    sts = (
        f"AWS4-HMAC-SHA256-TRAILER\n{signing.amz_date}\n{signing.scope}\n{prev}\n"
        f"{hashlib.sha256(block.encode()).hexdigest()}"
    )
    sig = hmac.new(signing.signing_key, sts.encode(), hashlib.sha256).hexdigest()
    lines = "".join(f"{n}:{v}\r\n" for n, v in trailers)
    return bytes(out) + f"{lines}x-amz-trailer-signature:{sig}\r\n\r\n".encode()


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


PAYLOAD = bytes(random.Random(7).getrandbits(8) for _ in range(20000))


@pytest.mark.parametrize("how", ["whole", "random", "bytewise"])
def test_signed_trailer_body(how: str) -> None:
    signing = doc_signing()
    body = encode_signed(signing, PAYLOAD, 8192, [("x-amz-checksum-crc32", crc32_b64(PAYLOAD))])
    pieces = {"whole": [body], "random": splits(body, 4), "bytewise": bytewise(body)}[how]
    decoder = AwsChunkedDecoder(
        mode=STREAMING_SIGNED_TRAILER,
        decoded_length=len(PAYLOAD),
        streaming=signing,
        trailer="x-amz-checksum-crc32",
    )
    data, end = run(decoder, pieces)
    assert data == PAYLOAD
    assert end.checksum == (ChecksumAlgorithm.CRC32, crc32_b64(PAYLOAD))


@pytest.mark.parametrize(
    ("trailers", "code"),
    [
        ([("x-amz-checksum-crc32", crc32_b64(b"other"))], "BadDigest"),
        ([], "MalformedTrailerError"),
        ([("x-amz-checksum-crc32", crc32_b64(PAYLOAD)), ("x-extra", "1")], "MalformedTrailerError"),
    ],
)
def test_signed_trailer_problems(trailers: list[tuple[str, str]], code: str) -> None:
    signing = doc_signing()
    body = encode_signed(signing, PAYLOAD, 8192, trailers)
    decoder = AwsChunkedDecoder(
        mode=STREAMING_SIGNED_TRAILER,
        decoded_length=len(PAYLOAD),
        streaming=signing,
        trailer="x-amz-checksum-crc32",
    )
    with pytest.raises(S3Error) as info:
        run(decoder, [body])
    assert info.value.code == code


def test_signed_trailer_signature_tampered() -> None:
    signing = doc_signing()
    good = crc32_b64(PAYLOAD)
    body = encode_signed(signing, PAYLOAD, 8192, [("x-amz-checksum-crc32", good)])
    # Swap the trailer's value for one that matches different data: signature must fail
    # even before the checksum is compared.
    forged = body.replace(good.encode(), crc32_b64(b"x").encode())
    decoder = AwsChunkedDecoder(
        mode=STREAMING_SIGNED_TRAILER,
        decoded_length=len(PAYLOAD),
        streaming=signing,
        trailer="x-amz-checksum-crc32",
    )
    with pytest.raises(S3Error) as info:
        run(decoder, [forged])
    assert info.value.code == "SignatureDoesNotMatch"
    missing_sig = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    decoder = AwsChunkedDecoder(
        mode=STREAMING_SIGNED_TRAILER, decoded_length=None, streaming=signing,
        trailer="x-amz-checksum-crc32",
    )  # fmt: skip
    with pytest.raises(S3Error) as info:
        run(decoder, [missing_sig])
    assert info.value.code == "MalformedTrailerError"


# ---- botocore's own aws-chunked encoder (unsigned payload, trailing checksum) -------------


CHECKSUM_CLASSES = [
    ("x-amz-checksum-crc32", Crc32Checksum, ChecksumAlgorithm.CRC32),
    ("x-amz-checksum-sha1", Sha1Checksum, ChecksumAlgorithm.SHA1),
    ("x-amz-checksum-sha256", Sha256Checksum, ChecksumAlgorithm.SHA256),
]


def botocore_body(data: bytes, name: str | None, cls: type | None, chunk: int) -> bytes:
    wrapper = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=cls, checksum_name=name or "x",
                                chunk_size=chunk)  # fmt: skip
    return bytes(wrapper.read())


@pytest.mark.parametrize(("name", "cls", "alg"), CHECKSUM_CLASSES)
@pytest.mark.parametrize("size", [0, 1, 1000, 70000])
def test_botocore_unsigned_trailer(name: str, cls: type, alg: ChecksumAlgorithm, size: int) -> None:
    data = PAYLOAD[:size] * (1 + size // max(1, len(PAYLOAD)))
    data = data[:size]
    body = botocore_body(data, name, cls, 16384)
    for pieces in ([body], splits(body, size), bytewise(body) if size < 2000 else [body]):
        decoder = AwsChunkedDecoder(
            mode=STREAMING_UNSIGNED_TRAILER, decoded_length=size, trailer=name
        )
        out, end = run(decoder, pieces)
        assert out == data and end.checksum is not None and end.checksum[0] is alg


def test_botocore_unsigned_without_checksum() -> None:
    body = botocore_body(PAYLOAD, None, None, 4096)
    decoder = AwsChunkedDecoder(mode=STREAMING_UNSIGNED_TRAILER, decoded_length=len(PAYLOAD))
    out, end = run(decoder, [body])
    assert out == PAYLOAD and end.checksum is None


def test_botocore_unsigned_trailer_wrong_checksum() -> None:
    body = botocore_body(PAYLOAD, "x-amz-checksum-crc32", Crc32Checksum, 4096)
    body = body.replace(crc32_b64(PAYLOAD).encode(), crc32_b64(b"nope").encode())
    decoder = AwsChunkedDecoder(
        mode=STREAMING_UNSIGNED_TRAILER, decoded_length=None, trailer="x-amz-checksum-crc32"
    )
    with pytest.raises(S3Error) as info:
        run(decoder, [body])
    assert (info.value.code, info.value.status) == ("BadDigest", 400)


def test_full_client_flow_with_botocore_trailer_signing() -> None:
    """botocore signs STREAMING-UNSIGNED-PAYLOAD-TRAILER; we verify, then decode its body."""
    body = botocore_body(PAYLOAD, "x-amz-checksum-crc32", Crc32Checksum, 8192)
    headers = {
        "Content-Encoding": "aws-chunked",
        "X-Amz-Trailer": "x-amz-checksum-crc32",
        "X-Amz-Decoded-Content-Length": str(len(PAYLOAD)),
        "x-amz-sdk-checksum-algorithm": "CRC32",
    }
    context = {
        "checksum": {
            "request_algorithm": {
                "in": "trailer", "algorithm": "crc32", "name": "x-amz-checksum-crc32",
            }
        }
    }  # fmt: skip
    w = sign_v4("PUT", "http://127.0.0.1:8080/b/k", headers=headers, body=body, context=context)
    auth = sigv4.parse_auth(w.method, w.raw_path, w.raw_query, w.headers)
    assert auth is not None
    verified = sigv4.verify(auth, SECRET, w.clock())
    assert verified.payload_hash == STREAMING_UNSIGNED_TRAILER
    assert is_aws_chunked(w.headers)
    decoder = AwsChunkedDecoder.from_request(verified, w.headers)
    out, end = run(decoder, splits(w.body, 9))
    assert out == PAYLOAD and end.checksum == (ChecksumAlgorithm.CRC32, crc32_b64(PAYLOAD))


def test_from_request_checks_headers() -> None:
    signing = doc_signing()
    signed = VerifiedAuth("ak", "v4", "header", STREAMING_SIGNED, signing)
    with pytest.raises(S3Error) as info:
        AwsChunkedDecoder.from_request(signed, [])
    assert info.value.code == "MissingContentLength"
    with pytest.raises(S3Error) as info:
        AwsChunkedDecoder.from_request(signed, [("x-amz-decoded-content-length", "-1")])
    assert info.value.code == "InvalidArgument"
    unsigned = VerifiedAuth("ak", "v4", "header", "UNSIGNED-PAYLOAD")
    with pytest.raises(S3Error):
        AwsChunkedDecoder.from_request(unsigned, [("x-amz-decoded-content-length", "1")])
    with pytest.raises(S3Error):
        AwsChunkedDecoder(mode=STREAMING_UNSIGNED_TRAILER, decoded_length=1, trailer="Bad Name")
    with pytest.raises(S3Error) as info:
        AwsChunkedDecoder(mode=STREAMING_UNSIGNED_TRAILER, decoded_length=1,
                          trailer="x-amz-checksum-md4")  # fmt: skip
    assert info.value.code == "InvalidRequest"


def test_content_encoding_helpers() -> None:
    assert strip_aws_chunked("aws-chunked") is None
    assert strip_aws_chunked("gzip,aws-chunked") == "gzip"
    assert strip_aws_chunked("aws-chunked, gzip") == "gzip"
    assert strip_aws_chunked(None) is None
    assert is_aws_chunked([("Content-Encoding", "gzip, aws-chunked")])
    assert not is_aws_chunked([("Content-Encoding", "gzip")])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_fuzz_parses_or_raises_s3_error(blob: bytes, step: int) -> None:
    for mode in (STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER):
        decoder = AwsChunkedDecoder(
            mode=mode,
            decoded_length=None,
            streaming=doc_signing() if mode == STREAMING_SIGNED else None,
            trailer="x-amz-checksum-crc32" if mode == STREAMING_UNSIGNED_TRAILER else None,
        )
        try:
            for i in range(0, len(blob), step):
                decoder.feed(blob[i : i + step])
            decoder.close()
        except S3Error:
            pass


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(DOC_BODY) - 1), st.integers(0, 7))
def test_fuzz_any_single_bit_flip_in_the_doc_body_is_caught(at: int, bit: int) -> None:
    body = DOC_BODY[:at] + bytes([DOC_BODY[at] ^ (1 << bit)]) + DOC_BODY[at + 1 :]
    with pytest.raises(S3Error):
        run(doc_decoder(), [body])
