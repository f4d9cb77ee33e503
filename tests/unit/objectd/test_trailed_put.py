"""The object server's half of a trailed PUT (objectd/putbody.py finish_trailed) on real files.

The writer computes no MD5 in this mode; it commits the proxy's MD5 only if the trailer is
well formed, says commit, and matches the length and xxh3-128 of what was written.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import xxhash
from aiohttp import web

from common.puttrailer import PutTrailer, encode_trailer
from common.timestamps import Timestamp
from objectd.diskfile import Deleted, Missing, RealDiskFile, verify_file
from objectd.faulty import FaultPlan, FaultyDiskFile
from objectd.fileformat import ObjectMetadata
from objectd.layout import DeviceLayout
from objectd.putbody import finish_trailed

BODY = os.urandom(3 * 65536 + 777)
MD5 = hashlib.md5(BODY).hexdigest()
XXH = xxhash.xxh3_128_hexdigest(BODY)


def _df(tmp_path: Path) -> RealDiskFile:
    root = tmp_path / "sda"
    root.mkdir(exist_ok=True)
    return RealDiskFile(DeviceLayout(tmp_path, "sda"), 1, "ab" * 16, "/a/c/o")


def _md() -> ObjectMetadata:
    return ObjectMetadata(kind="data", name="/a/c/o", timestamp=Timestamp(5), content_type="x/y")


def _trailer(**kw: object) -> bytearray:
    fields: dict[str, object] = {
        "action": "commit",
        "body_length": len(BODY),
        "md5_hex": MD5,
        "xxh3_128_hex": XXH,
    }
    fields.update(kw)
    return bytearray(encode_trailer(PutTrailer(**fields)))  # type: ignore[arg-type]


def _store(df: RealDiskFile | FaultyDiskFile, trailer: bytearray, etag: str = "") -> object:
    w = df.writer(len(BODY), 0, md5=False)
    split = len(BODY) - 100
    w.write(BODY[:split])
    out = finish_trailed(w, bytearray(BODY[split:]), trailer, len(BODY), etag, _md())
    if isinstance(out, web.Response):
        w.abort()
    return out


def _nothing_on_disk(tmp_path: Path) -> bool:
    return not [p for p in (tmp_path / "sda").rglob("*") if p.is_file()]


def test_a_matching_trailer_commits_the_proxys_md5(tmp_path: Path) -> None:
    df = _df(tmp_path)
    assert _store(df, _trailer(), etag=MD5) == MD5
    found = df.open()
    assert not isinstance(found, Deleted | Missing)
    assert found.info.data.etag == MD5
    assert found.read(0, len(BODY)) == BODY
    found.close()
    # The auditor's whole-file check (blocks and MD5) agrees with what the proxy computed.
    assert list(verify_file(found.info.path))[-1] == len(BODY)


@pytest.mark.parametrize(
    ("trailer", "etag", "code"),
    [
        (_trailer(xxh3_128_hex="00" * 16), "", 422),  # body changed between proxy and disk
        (_trailer(action="cancel"), "", 422),  # the client's ETag was wrong
        (_trailer(body_length=len(BODY) - 1), "", 400),
        (_trailer(), "0" * 32, 422),  # an ETag header that is not the trailer's MD5
        (bytearray(b"garbage"), "", 400),
        (bytearray(), "", 400),
        (bytearray(b"\x00" * 56), "", 400),
    ],
)
def test_a_refused_trailer_commits_nothing(
    tmp_path: Path, trailer: bytearray, etag: str, code: int
) -> None:
    out = _store(_df(tmp_path), trailer, etag)
    assert isinstance(out, web.Response) and out.status == code
    assert _nothing_on_disk(tmp_path)


def test_a_byte_flipped_before_the_writer_is_caught(tmp_path: Path) -> None:
    plan = FaultPlan(flip_byte_at=70_000)
    out = _store(FaultyDiskFile(_df(tmp_path), plan), _trailer())
    assert isinstance(out, web.Response) and out.status == 422
    assert b"xxh3-128" in (out.body or b"")  # type: ignore[operator]
    assert _nothing_on_disk(tmp_path)


def test_an_md5_writer_does_not_pretend_to_have_xxh3_and_vice_versa(tmp_path: Path) -> None:
    df = _df(tmp_path)
    with_md5, without = df.writer(None, 0), df.writer(None, 0, md5=False)
    try:
        with pytest.raises(ValueError):
            with_md5.body_xxh3_128()
        with pytest.raises(ValueError):
            without.etag()
        with pytest.raises(ValueError):  # no ETag given, none computed: nothing committed
            without.commit(_md())
    finally:
        with_md5.abort()
        without.abort()
    assert _nothing_on_disk(tmp_path)
