"""Body digests: known check values, botocore's checksum classes as the reference, errors."""

from __future__ import annotations

import base64
import hashlib

import pytest
import xxhash
from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum, Sha512Checksum

from proxy.s3.checksums import (
    BodyVerifier,
    ChecksumAlgorithm,
    checksum_from_headers,
    crc32c_py,
    crc64nvme_py,
    new_hasher,
    parse_content_md5,
)
from proxy.s3.errors import S3Error

DATA = b"The quick brown fox jumps over the lazy dog" * 50


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def digest_of(alg: ChecksumAlgorithm, data: bytes, pieces: int = 7) -> bytes:
    h = new_hasher(alg)
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        h.update(data[i : i + step])
    return h.digest()


def test_crc_check_values() -> None:
    # The catalogue check values of the CRC models, over b"123456789".
    assert crc32c_py(b"123456789") == 0xE3069283
    assert crc64nvme_py(b"123456789") == 0xAE8B14860A799888
    assert digest_of(ChecksumAlgorithm.CRC32C, b"123456789") == bytes.fromhex("e3069283")
    assert digest_of(ChecksumAlgorithm.CRC64NVME, b"123456789") == bytes.fromhex("ae8b14860a799888")
    # Continuation: piecewise equals whole.
    assert crc32c_py(b"6789", crc32c_py(b"12345")) == 0xE3069283


def test_crc32c_package_agrees_with_the_table_implementation() -> None:
    crc32c = pytest.importorskip("crc32c", reason="the optional crc32c accelerator is absent")
    assert crc32c.crc32c(DATA) == crc32c_py(DATA)


@pytest.mark.parametrize(
    ("alg", "reference"),
    [
        (ChecksumAlgorithm.CRC32, Crc32Checksum),
        (ChecksumAlgorithm.SHA1, Sha1Checksum),
        (ChecksumAlgorithm.SHA256, Sha256Checksum),
        (ChecksumAlgorithm.SHA512, Sha512Checksum),
    ],
)
def test_matches_botocore(alg: ChecksumAlgorithm, reference: type) -> None:
    ref = reference()
    ref.update(DATA)
    assert digest_of(alg, DATA) == ref.digest()
    assert len(ref.digest()) == alg.digest_bytes


def test_xxhash_digests_are_canonical_big_endian() -> None:
    assert digest_of(ChecksumAlgorithm.XXHASH64, DATA) == xxhash.xxh64_intdigest(DATA).to_bytes(
        8, "big"
    )
    assert len(digest_of(ChecksumAlgorithm.XXHASH128, DATA)) == 16


def test_checksum_headers() -> None:
    value = b64(hashlib.sha256(DATA).digest())
    assert checksum_from_headers({"x-amz-checksum-sha256": value}) == (
        ChecksumAlgorithm.SHA256,
        value,
    )
    assert checksum_from_headers({"x-amz-checksum-type": "FULL_OBJECT"}) is None
    assert checksum_from_headers({}) is None
    bad = [
        {"x-amz-checksum-crc32": "AAAA"},  # 3 bytes
        {"x-amz-checksum-crc32": "not base64!"},
        {"x-amz-checksum-md4": "AAAAAA=="},
        {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-sha1": b64(b"x" * 20)},
        {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-sdk-checksum-algorithm": "SHA256"},
    ]
    for headers in bad:
        with pytest.raises(S3Error) as info:
            checksum_from_headers(headers)
        assert info.value.code == "InvalidRequest"


def test_content_md5() -> None:
    digest = hashlib.md5(DATA).digest()
    assert parse_content_md5(b64(digest)) == digest
    for bad in ("", "abc", b64(digest[:15]), "!!!!"):
        with pytest.raises(S3Error) as info:
            parse_content_md5(bad)
        assert info.value.code == "InvalidDigest"


def feed(verifier: BodyVerifier, data: bytes = DATA) -> None:
    for i in range(0, len(data), 100):
        verifier.update(data[i : i + 100])


def test_body_verifier_all_good() -> None:
    crc = (ChecksumAlgorithm.CRC32, b64(digest_of(ChecksumAlgorithm.CRC32, DATA)))
    v = BodyVerifier(
        content_md5=hashlib.md5(DATA).digest(),
        checksum=crc,
        sha256_hex=hashlib.sha256(DATA).hexdigest(),
    )
    feed(v)
    digests = v.finish()
    assert digests.md5_hex == hashlib.md5(DATA).hexdigest()
    assert digests.size_bytes == len(DATA) and digests.checksum == crc


def test_body_verifier_mismatches() -> None:
    v = BodyVerifier(content_md5=hashlib.md5(b"x").digest())
    feed(v)
    with pytest.raises(S3Error) as info:
        v.finish()
    assert (info.value.code, info.value.status) == ("BadDigest", 400)

    v = BodyVerifier(sha256_hex=hashlib.sha256(b"x").hexdigest())
    feed(v)
    with pytest.raises(S3Error) as info:
        v.finish()
    assert info.value.code == "XAmzContentSHA256Mismatch"

    v = BodyVerifier(checksum=(ChecksumAlgorithm.SHA1, b64(hashlib.sha1(b"x").digest())))
    feed(v)
    with pytest.raises(S3Error) as info:
        v.finish()
    assert info.value.code == "BadDigest" and "SHA1" in info.value.message


def test_body_verifier_trailer_and_compute_only() -> None:
    v = BodyVerifier(compute=ChecksumAlgorithm.CRC32C)
    feed(v)
    expected = b64(digest_of(ChecksumAlgorithm.CRC32C, DATA))
    assert v.finish(trailer_checksum=(ChecksumAlgorithm.CRC32C, expected)).checksum == (
        ChecksumAlgorithm.CRC32C,
        expected,
    )
    v = BodyVerifier(compute=ChecksumAlgorithm.CRC32)
    feed(v)
    assert v.finish().checksum is not None
