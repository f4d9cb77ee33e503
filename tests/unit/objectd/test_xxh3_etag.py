"""Objects whose ETag is the body's xxh3-128 (blockd's chunk objects; docs/object-format.md,
"ETag algorithms"): the version 2 PUT trailer, the version 2 object file, the auditor's check
of such a file and the store client's check of the replicas' answers."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from types import SimpleNamespace

import msgpack
import pytest
import xxhash
from multidict import CIMultiDict

from common.puttrailer import (
    TRAILER_HEADER,
    TRAILER_SUPPORT_HEADER,
    TRAILER_VERSIONS_HEADER,
    PutTrailer,
    TrailerError,
    TrailerServers,
    decode_trailer,
    encode_trailer,
    trailed_headers,
)
from common.timestamps import Timestamp
from objectd.cluster_client import _Answer, _etags_agree, _hash_body
from objectd.diskfile import ChecksumMismatch, RealDiskFile, load_metadata, verify_file
from objectd.fileformat import (
    TRAILER,
    FileFormatError,
    ObjectMetadata,
    encode_footer,
    parse_footer,
)
from objectd.layout import DeviceLayout
from objectd.putbody import check_trailer, trailed_body_length

BODY = bytes(range(256)) * 1000
XXH = xxhash.xxh3_128_hexdigest(BODY)
MD5 = hashlib.md5(BODY).hexdigest()
TS = Timestamp.from_float(1_700_000_000.0)


# -- the PUT trailer, version 2 ------------------------------------------------------------
def test_version_2_trailer_round_trip_and_layout() -> None:
    t = PutTrailer("commit", len(BODY), "", XXH)
    assert (t.version, t.etag, t.etag_alg) == (2, XXH, "xxh3-128")
    raw = encode_trailer(t)
    assert raw[4] == 2 and raw[16:32] == bytes(16) and raw[32:48] == bytes.fromhex(XXH)
    assert decode_trailer(raw) == t
    v1 = PutTrailer("commit", len(BODY), MD5, XXH)
    assert (v1.version, v1.etag, v1.etag_alg) == (1, MD5, "md5")


def test_a_version_2_trailer_with_an_md5_is_refused() -> None:
    raw = bytearray(encode_trailer(PutTrailer("commit", 5, "", XXH)))
    raw[16] = 1
    fields = bytes(raw[:48])
    raw[48:] = xxhash.xxh3_64_intdigest(fields).to_bytes(8, "big")  # checksum still good
    with pytest.raises(TrailerError, match="no MD5"):
        decode_trailer(bytes(raw))


def test_version_2_is_announced_and_accepted_by_the_server() -> None:
    h = trailed_headers({"X-Timestamp": "1"}, 100, 2)
    assert h[TRAILER_HEADER] == "2"
    assert trailed_body_length(h, int(h["Content-Length"])) == 100
    with pytest.raises(AssertionError):
        trailed_headers({}, 100, 3)


def test_check_trailer_answers_the_etag_and_its_algorithm() -> None:
    v2 = encode_trailer(PutTrailer("commit", len(BODY), "", XXH))
    assert check_trailer(v2, len(BODY), len(BODY), lambda: XXH, "") == (XXH, "xxh3-128")
    assert check_trailer(v2, len(BODY), len(BODY), lambda: XXH, XXH) == (XXH, "xxh3-128")
    refused = check_trailer(v2, len(BODY), len(BODY), lambda: XXH, MD5)  # an MD5 ETag header
    assert not isinstance(refused, tuple) and refused.status == 422
    changed = check_trailer(v2, len(BODY), len(BODY), lambda: "0" * 32, "")
    assert not isinstance(changed, tuple) and changed.status == 422
    v1 = encode_trailer(PutTrailer("commit", len(BODY), MD5, XXH))
    assert check_trailer(v1, len(BODY), len(BODY), lambda: XXH, "") == (MD5, "md5")


def test_servers_take_version_2_only_when_they_say_so() -> None:
    node = SimpleNamespace(ip="127.0.0.1", port=6200)
    servers = TrailerServers()
    servers.learn(node, {TRAILER_SUPPORT_HEADER: "1"})
    assert servers.takes(node) and not servers.takes(node, 2)
    servers.learn(node, {TRAILER_SUPPORT_HEADER: "1", TRAILER_VERSIONS_HEADER: "1 2"})
    assert servers.takes(node, 2)
    servers.forget(node)
    assert not servers.takes(node) and not servers.takes(node, 2)


def test_a_server_rolled_back_to_version_1_loses_version_2_at_once() -> None:
    node = SimpleNamespace(ip="127.0.0.1", port=6200)
    servers = TrailerServers()
    servers.learn(node, {TRAILER_SUPPORT_HEADER: "1", TRAILER_VERSIONS_HEADER: "1 2"})
    servers.learn(node, {TRAILER_SUPPORT_HEADER: "1", TRAILER_VERSIONS_HEADER: "1"})
    assert servers.takes(node) and not servers.takes(node, 2)
    servers.learn(node, {TRAILER_SUPPORT_HEADER: "1", TRAILER_VERSIONS_HEADER: "1 2"})
    servers.learn(node, {TRAILER_SUPPORT_HEADER: "1"})  # no versions header: version 1 only
    assert servers.takes(node) and not servers.takes(node, 2)
    servers.learn(node, {TRAILER_SUPPORT_HEADER: "1", TRAILER_VERSIONS_HEADER: "1 2"})
    servers.learn(node, {})  # an answer without the support header changes nothing
    assert servers.takes(node, 2)
    servers.forget(node, 2)  # it refused a version 2 trailer: version 1 stays
    assert servers.takes(node) and not servers.takes(node, 2)


def test_the_store_client_hashes_no_md5_for_a_version_2_trailer() -> None:
    t = _hash_body(BODY, md5=False)
    assert (t.etag, t.version) == (XXH, 2)
    assert decode_trailer(t.encoded) == PutTrailer("commit", len(BODY), "", XXH)
    assert _hash_body(BODY).etag == MD5


# -- the object file, version 2 ------------------------------------------------------------
def _md(alg: str = "xxh3-128", etag: str = XXH) -> ObjectMetadata:
    return ObjectMetadata(
        kind="data",
        name="/.cairn_block/vol-1/000000000001",
        timestamp=TS,
        content_length=len(BODY),
        etag=etag,
        block_xxh3=b"".join(
            xxhash.xxh3_64_digest(BODY[i : i + 65536]) for i in range(0, len(BODY), 65536)
        ),
        etag_alg=alg,  # type: ignore[arg-type]
    )


def _parse(footer: bytes) -> ObjectMetadata:
    meta, trailer = footer[: -TRAILER.size], footer[-TRAILER.size :]
    return parse_footer(meta, trailer, len(BODY) + len(footer))


def test_an_xxh3_etag_file_is_version_2_and_reads_back() -> None:
    footer = encode_footer(_md())
    assert int.from_bytes(footer[-TRAILER.size + 8 : -TRAILER.size + 10], "big") == 2
    assert _parse(footer) == _md()
    md5_footer = encode_footer(_md("md5", MD5))  # an MD5 ETag: version 1, no new key
    assert int.from_bytes(md5_footer[-TRAILER.size + 8 : -TRAILER.size + 10], "big") == 1
    assert b"etag_alg" not in md5_footer
    assert _parse(md5_footer).etag_alg == "md5"


def _with_version(footer: bytes, version: int, record: dict[str, object] | None = None) -> bytes:
    """`footer` rewritten as `version` (and `record`), with a valid checksum."""
    meta = footer[: -TRAILER.size]
    if record is not None:
        meta = msgpack.packb(record, use_bin_type=True)
    body_len = len(BODY)
    head = TRAILER.pack(b"CAIRNOBJ", version, 0, len(meta), body_len, 0)[:24]
    return meta + head + xxhash.xxh3_64_intdigest(meta + head).to_bytes(8, "big")


def test_the_version_must_match_the_etag_algorithm() -> None:
    with pytest.raises(FileFormatError, match="version 1 file"):
        _parse(_with_version(encode_footer(_md()), 1))
    with pytest.raises(FileFormatError, match="version 2 file"):
        _parse(_with_version(encode_footer(_md("md5", MD5)), 2))
    rec = _md().to_record() | {"etag_alg": "sha1"}
    with pytest.raises(FileFormatError, match="unknown ETag algorithm"):
        _parse(_with_version(b"", 2, rec))
    rec = _md("md5", MD5).to_record() | {"etag_alg": "md5"}  # a version 1 record with the key
    with pytest.raises(FileFormatError, match="version 1 record carries etag_alg"):
        _parse(_with_version(b"", 1, rec))
    with pytest.raises(FileFormatError, match="version 1 record carries etag_alg"):
        ObjectMetadata.from_record(rec)
    with pytest.raises(FileFormatError, match="unsupported format version 3"):
        _parse(_with_version(encode_footer(_md()), 3))
    with pytest.raises(FileFormatError, match="no ETag"):
        ObjectMetadata(kind="ts", name="/a/c/o", timestamp=TS, etag_alg="xxh3-128")


def _stored(tmp_path: Path, md: ObjectMetadata) -> Path:
    (tmp_path / "sda").mkdir(parents=True, exist_ok=True)
    df = RealDiskFile(DeviceLayout(tmp_path, "sda"), 1, "0" * 29 + "abc", md.name)
    w = df.writer(len(BODY), 0, md5=False)
    w.write(BODY)
    w.commit(md, md.etag)
    return df.hash_dir / f"{TS.internal}.data"


def test_the_auditor_checks_an_xxh3_etag(tmp_path: Path) -> None:
    path = _stored(tmp_path, _md())
    assert load_metadata(path).etag_alg == "xxh3-128"
    assert list(verify_file(path))[-1] == len(BODY)
    # A body that is not the one the ETag names: found (the block digests agree with it).
    bad = _stored(tmp_path / "bad", _md(etag="0" * 32))
    with pytest.raises(ChecksumMismatch, match="xxh3-128 differs"):
        list(verify_file(bad))
    # Bit rot in the body: found by the block digests, as for any file.
    with open(path, "r+b") as f:
        f.seek(70000)
        f.write(b"\xff")
    with pytest.raises(ChecksumMismatch, match="block 1"):
        list(verify_file(path))


# -- the store client's check of the replicas' ETags -------------------------------------
def _answer(etag: str, trailer_etag: str) -> _Answer:
    return _Answer(201, CIMultiDict({"Etag": etag}), b"", None, trailer_etag=trailer_etag)


def test_replicas_answers_are_checked_against_what_each_was_sent() -> None:
    v2 = _hash_body(BODY, md5=False)
    v1 = _hash_body(BODY)

    def agree(answers: list[_Answer], trailer: object) -> bool:
        return asyncio.run(_etags_agree(answers, BODY, trailer))  # type: ignore[arg-type]

    assert agree([_answer(XXH, XXH)] * 3, v2)
    # A handoff not known to take version 2 got the body plain: it stored the MD5.
    assert agree([_answer(XXH, XXH), _answer(XXH, XXH), _answer(MD5, "")], v2)
    assert not agree([_answer(XXH, XXH), _answer(XXH, XXH), _answer(XXH, "")], v2)
    assert not agree([_answer(XXH, XXH), _answer(MD5, XXH)], v2)  # damaged on its way
    assert agree([_answer(MD5, MD5), _answer(MD5, "")], v1)
    assert not agree([_answer(MD5, MD5), _answer("1" * 32, "")], v1)
    assert agree([_answer("ab" * 16, "")] * 2, None)  # small: the replicas agree
    assert not agree([_answer("ab" * 16, ""), _answer("cd" * 16, "")], None)
    assert not agree([_answer("", "")], None)
