"""The object server's replication endpoints and recon over HTTP, including bad input."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
import xxhash

from common.timestamps import Timestamp
from objectd.client import ReplicateError, direct_replicate
from objectd.fileformat import BLOCK_BYTES, EtagAlg, ObjectMetadata
from objectd.hashes import decode_cache
from objectd.recon import write_recon
from objectd.ssync_proto import (
    ETAG_ALGS_HEADER,
    PREAMBLE,
    Data,
    End,
    Event,
    FileEnd,
    FileStart,
    Offer,
    OfferEnd,
    OfferEntry,
    RemoteError,
    Result,
    SenderParser,
    Want,
    WantEnd,
    WantEntry,
    encode,
)
from ring.hashing import hash_path
from tests.integration.objectd.conftest import PREFIX, SUFFIX, object_server, run, ts

pytestmark = pytest.mark.integration


def _md(
    body: bytes, t: Timestamp, etag: str | None = None, etag_alg: EtagAlg = "md5"
) -> ObjectMetadata:
    import xxhash

    blocks = b"".join(
        xxhash.xxh3_64_digest(body[i : i + BLOCK_BYTES]) for i in range(0, len(body), BLOCK_BYTES)
    )
    return ObjectMetadata(
        kind="data",
        name="/AUTH_a/c/o",
        timestamp=t,
        content_type="text/plain",
        content_length=len(body),
        etag=etag or hashlib.md5(body).hexdigest(),
        block_xxh3=blocks,
        etag_alg=etag_alg,
    )


async def _ssync(session, url: str, raw: bytes):
    async with session.post(f"{url}/_ssync/sda/7", data=raw) as r:
        assert r.status == 200
        assert r.headers[ETAG_ALGS_HEADER] == "md5 xxh3-128"  # what this receiver takes
        data = await r.read()
    return SenderParser().feed(data)


def test_replicate_answers_hashes_and_refuses_bad_paths(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, s):
            hdrs = {"X-Timestamp": ts(clock), "Content-Type": "a/b"}
            async with s.put(url + "/sda/7/AUTH_a/c/o", data=b"x", headers=hdrs) as r:
                assert r.status == 201
            hashes = await direct_replicate(s, url, "sda", 7)
            suffix = hash_path(PREFIX, SUFFIX, "AUTH_a", "c", "o")[-3:]
            assert list(hashes) == [suffix]
            assert await direct_replicate(s, url, "sda", 7, [suffix, "000"]) == hashes
            assert await direct_replicate(s, url, "sda", 8) == {}
            for path, want in (
                ("/_replicate/sda/x", 400),
                ("/_replicate/sda/7/abcd", 400),
                ("/_replicate/sda/7/ab-", 400),
                ("/_replicate/..%2F/7", 400),
                ("/_replicate/sdz/7", 507),
                ("/_ssync/sdz/7", 507),
            ):
                async with s.post(url + path) as r:
                    assert r.status == want, path
            with pytest.raises(ReplicateError) as e:
                await direct_replicate(s, url, "sdz", 7)
            assert e.value.status == 507

    run(go())


BODY = b"hello" * 30_000
_MD5 = hashlib.md5(BODY).hexdigest()
_XXH = xxhash.xxh3_128_hexdigest(BODY)


@pytest.mark.parametrize(
    "etag_alg, bad_etag, good_etag",
    [
        ("md5", "0" * 32, _MD5),
        ("xxh3-128", "0" * 32, _XXH),  # a wrong xxh3-128 ETag
        ("xxh3-128", _MD5, _XXH),  # the body's MD5 sent as its xxh3-128 ETag
    ],
    ids=["md5", "xxh3-wrong", "xxh3-given-md5"],
)
def test_ssync_stores_a_file_and_refuses_a_body_that_does_not_match_its_etag(
    conf, clock, etag_alg, bad_etag, good_etag
):
    body = BODY
    t = Timestamp.from_float(clock.time())
    h = hash_path(PREFIX, SUFFIX, "AUTH_a", "c", "o")

    def exchange(md: ObjectMetadata, payload: bytes) -> bytes:
        frames: list[Event] = [
            Offer((OfferEntry(h, (t, "data"), None),)),
            OfferEnd(),
            FileStart(h, md),
        ]
        frames += [Data(payload[i : i + 65536]) for i in range(0, len(payload), 65536)]
        return PREAMBLE + b"".join(encode(f) for f in [*frames, FileEnd(), End()])

    async def go():
        async with object_server(conf, clock) as (url, s):
            bad = await _ssync(s, url, exchange(_md(body, t, bad_etag, etag_alg), body))
            assert bad[0] == Want((WantEntry(h, ("data",)),))
            assert isinstance(bad[2], Result) and bad[2].failed == 1 and bad[2].written == 0
            async with s.get(url + "/sda/7/AUTH_a/c/o") as r:
                assert r.status == 404
            good = await _ssync(s, url, exchange(_md(body, t, good_etag, etag_alg), body))
            assert good[2] == Result(written=1, skipped=0, failed=0)
            async with s.get(url + "/sda/7/AUTH_a/c/o") as r:
                assert r.status == 200 and await r.read() == body
                assert r.headers["X-Backend-Timestamp"] == t.internal
                assert r.headers["Etag"].strip('"') == good_etag
            # Offered again, nothing is wanted.
            offer = [Offer((OfferEntry(h, (t, "data"), None),)), OfferEnd(), End()]
            again = await _ssync(s, url, PREAMBLE + b"".join(encode(f) for f in offer))
            assert again == [WantEnd(), Result(written=0, skipped=0, failed=0)]

    run(go())


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"GET / HTTP/1.1\r\n\r\n", "preamble"),
        (PREAMBLE + b"\x01\x00\x00\x00\x01\xc1", "msgpack"),
        (PREAMBLE + encode(OfferEnd()), "ended early"),
        (
            PREAMBLE + encode(OfferEnd()) + encode(FileStart("a" * 32, _md(b"", Timestamp(1)))),
            "not asked for",
        ),
    ],
)
def test_ssync_garbage_gets_an_error_frame_not_a_traceback(conf, clock, raw, why):
    async def go():
        async with object_server(conf, clock) as (url, s):
            events = await _ssync(s, url, raw)
            assert isinstance(events[-1], RemoteError) and why in events[-1].message

    run(go())


def test_recon_endpoint_and_gauges(conf, clock, devices_dir):
    async def go():
        write_recon(
            devices_dir,
            "object-replicator",
            1.0,
            3.5,
            {"partitions_in_sync": 7, "partitions_total": 9},
        )
        write_recon(devices_dir, "object-updater", 1.0, 2.0, {"async_pendings": 4})
        async with object_server(conf, clock) as (url, s):
            async with s.get(url + "/recon/object-replicator") as r:
                assert r.status == 200
                rec = await r.json()
            assert rec["stats"]["partitions_in_sync"] == 7 and rec["pass_seconds"] == 2.5
            async with s.get(url + "/recon/object-auditor") as r:
                assert r.status == 404
            async with s.get(url + "/recon/..%2Fx") as r:
                assert r.status == 400
            async with s.get(url + "/metrics") as r:
                text = await r.text()
            assert "cairn_replication_pass_seconds 2.5" in text
            assert "cairn_partitions_in_sync 7.0" in text
            assert "cairn_async_pendings 4.0" in text
            async with s.get(url + "/healthcheck") as r:
                assert r.status == 200

    run(go())


def test_replicate_body_is_versioned_msgpack(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, s):
            async with s.post(url + "/_replicate/sda/1") as r:
                raw = await r.read()
            assert msgpack.unpackb(raw) == {"v": 1, "hashes": {}}
            assert decode_cache(raw) == {}

    run(go())
