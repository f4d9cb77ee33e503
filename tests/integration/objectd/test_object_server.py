"""The object server over real HTTP on 127.0.0.1 with real device directories."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from yarl import URL

from tests.integration.objectd.conftest import object_server, run, ts

pytestmark = pytest.mark.integration

OBJ = "/sda/7/AUTH_a/c/o"


def _put_headers(timestamp: str, body: bytes, **extra: str) -> dict[str, str]:
    h = {
        "X-Timestamp": timestamp,
        "Content-Type": "text/plain",
        "Content-Length": str(len(body)),
    }
    h.update(extra)
    return h


def data_files(devices_dir: Path) -> list[Path]:
    return sorted((devices_dir / "sda" / "objects").rglob("*.data"))


def test_put_get_head_delete_roundtrip(conf, clock, devices_dir):
    body = b"hello world" * 1000

    async def go():
        async with object_server(conf, clock) as (url, s):
            t1 = ts(clock)
            hdrs = _put_headers(
                t1, body, **{"X-Object-Meta-Color": "blue", "Content-Encoding": "gzip"}
            )
            async with s.put(url + OBJ, data=body, headers=hdrs) as r:
                assert r.status == 201
                assert r.headers["ETag"] == hashlib.md5(body).hexdigest()
            async with s.get(url + OBJ) as r:
                assert r.status == 200
                assert await r.read() == body
                assert r.headers["Content-Type"] == "text/plain"
                assert r.headers["X-Object-Meta-Color"] == "blue"
                assert r.headers["Content-Encoding"] == "gzip"
                assert r.headers["X-Timestamp"] == t1
                assert r.headers["ETag"] == hashlib.md5(body).hexdigest()
                assert r.headers["Last-Modified"]
            async with s.head(url + OBJ) as r:
                assert r.status == 200
                assert r.headers["Content-Length"] == str(len(body))
                assert await r.read() == b""
            t2 = ts(clock, 1)
            async with s.delete(url + OBJ, headers={"X-Timestamp": t2}) as r:
                assert r.status == 204
            async with s.get(url + OBJ) as r:
                assert r.status == 404
                assert r.headers["X-Backend-Timestamp"] == t2
            async with s.delete(url + OBJ, headers={"X-Timestamp": ts(clock, 2)}) as r:
                assert r.status == 404

    run(go())
    hash_dirs = list((devices_dir / "sda" / "objects" / "7").glob("*/*"))
    assert len(hash_dirs) == 1
    names = sorted(p.name for p in hash_dirs[0].iterdir())
    assert len(names) == 1 and names[0].endswith(".ts")  # older files cleaned up


def test_chunked_put(conf, clock):
    chunks = [b"a" * 70000, b"b" * 12345, b"c"]

    async def gen():
        for c in chunks:
            yield c

    async def go():
        async with object_server(conf, clock) as (url, s):
            hdrs = {"X-Timestamp": ts(clock), "Content-Type": "x/y"}
            async with s.put(url + OBJ, data=gen(), headers=hdrs) as r:
                assert r.status == 201
            async with s.get(url + OBJ) as r:
                assert await r.read() == b"".join(chunks)

    run(go())


def test_etag_mismatch_is_422_and_nothing_written(conf, clock, devices_dir):
    async def go():
        async with object_server(conf, clock) as (url, s):
            hdrs = _put_headers(ts(clock), b"abc", ETag="0" * 32)
            async with s.put(url + OBJ, data=b"abc", headers=hdrs) as r:
                assert r.status == 422
            good = _put_headers(ts(clock, 1), b"abc", ETag=f'"{hashlib.md5(b"abc").hexdigest()}"')
            async with s.put(url + OBJ, data=b"abc", headers=good) as r:
                assert r.status == 201

    run(go())
    assert len(data_files(devices_dir)) == 1


def test_stale_timestamps_conflict(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, s):
            t1 = ts(clock, 10)
            async with s.put(url + OBJ, data=b"x", headers=_put_headers(t1, b"x")) as r:
                assert r.status == 201
            for older in (t1, ts(clock, 5)):
                async with s.put(url + OBJ, data=b"y", headers=_put_headers(older, b"y")) as r:
                    assert r.status == 409
                    assert r.headers["X-Backend-Timestamp"] == t1
            async with s.delete(url + OBJ, headers={"X-Timestamp": ts(clock, 5)}) as r:
                assert r.status == 409
            t3 = ts(clock, 20)
            async with s.delete(url + OBJ, headers={"X-Timestamp": t3}) as r:
                assert r.status == 204
            # a PUT older than the tombstone loses too
            async with s.put(url + OBJ, data=b"z", headers=_put_headers(ts(clock, 15), b"z")) as r:
                assert r.status == 409
                assert r.headers["X-Backend-Timestamp"] == t3
            async with s.get(url + OBJ) as r:
                assert r.status == 404

    run(go())


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/sda/7/a/c/o", {"Content-Type": "x/y"}),  # no X-Timestamp
        ("/sda/7/a/c/o", {"X-Timestamp": "yesterday", "Content-Type": "x/y"}),
        ("/sda/7/a/c/o%00x", None),
        ("/sda/7/a/c/" + "o" * 1025, None),
        ("/sda/notapart/a/c/o", None),
        ("/sda/7/a/c", None),
        ("/%2E%2E/7/a/c/o", None),
        ("/sda/7/a/c/o%FF", None),
        ("/sda/7/a/c/o", {"X-Timestamp": "1.0", "Content-Type": "x/y", "X-Delete-At": "soon"}),
        ("/sda/7/a/c/o", {"X-Timestamp": "1.0"}),  # no Content-Type
    ],
)
def test_bad_put_requests_are_400(conf, clock, path, headers):
    async def go():
        async with object_server(conf, clock) as (url, s):
            hdrs = headers if headers is not None else {"X-Timestamp": "1.0", "Content-Type": "x"}
            req = URL(url + path, encoded=True)
            async with s.put(req, data=b"x", headers=hdrs, skip_auto_headers=["Content-Type"]) as r:
                assert r.status == 400, await r.text()
                assert (await r.text()).strip()

    run(go())


def test_dotdot_object_names_stay_inside_the_device(conf, clock, devices_dir, tmp_path):
    names = ["..", "../../../../etc/passwd", "a/../../b", "%2E%2E/%2E%2E"]

    async def go():
        async with object_server(conf, clock) as (url, s):
            for i, n in enumerate(names):
                obj = URL(f"{url}/sda/3/a/c/{n}", encoded=True)
                async with s.put(obj, data=b"d", headers=_put_headers(ts(clock, i), b"d")) as r:
                    assert r.status == 201
                async with s.get(obj) as r:
                    assert r.status == 200 and await r.read() == b"d"

    run(go())
    assert len(data_files(devices_dir)) == len(names)
    outside = [
        p for p in tmp_path.rglob("*") if p.is_file() and devices_dir / "sda" not in p.parents
    ]
    assert outside == []


def test_missing_device_is_507_even_before_the_body(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, s):
            hdrs = _put_headers(ts(clock), b"x" * 100)
            async with s.put(
                url + "/sdz/1/a/c/o", data=b"x" * 100, headers=hdrs, expect100=True
            ) as r:
                assert r.status == 507
            async with s.get(url + "/sdz/1/a/c/o") as r:
                assert r.status == 507
            async with s.put(
                url + OBJ, data=b"x", headers=_put_headers(ts(clock), b"x"), expect100=True
            ) as r:
                assert r.status == 201

    run(go())


def test_fallocate_reserve_is_507(conf, clock):
    from dataclasses import replace

    full = replace(conf, fallocate_reserve_bytes=1 << 62)

    async def go():
        async with object_server(full, clock) as (url, s):
            hdrs = _put_headers(ts(clock), b"x")
            async with s.put(url + OBJ, data=b"x", headers=hdrs) as r:
                assert r.status == 507

    run(go())


def test_post_replaces_user_metadata(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, s):
            hdrs = _put_headers(
                ts(clock),
                b"x",
                **{
                    "X-Object-Meta-A": "1",
                    "X-Object-Sysmeta-S": "keep",
                    "X-Static-Large-Object": "True",
                },
            )
            async with s.put(url + OBJ, data=b"x", headers=hdrs) as r:
                assert r.status == 201
            t2 = ts(clock, 1)
            async with s.post(url + OBJ, headers={"X-Timestamp": t2, "X-Object-Meta-B": "2"}) as r:
                assert r.status == 202
            async with s.head(url + OBJ) as r:
                assert "X-Object-Meta-A" not in r.headers
                assert r.headers["X-Object-Meta-B"] == "2"
                assert r.headers["X-Object-Sysmeta-S"] == "keep"
                assert r.headers["X-Static-Large-Object"] == "True"
                assert r.headers["X-Timestamp"] == t2
            async with s.post(url + OBJ, headers={"X-Timestamp": t2}) as r:
                assert r.status == 409
            async with s.post(url + "/sda/7/a/c/nothing", headers={"X-Timestamp": t2}) as r:
                assert r.status == 404

    run(go())


def test_expired_object_is_404(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, s):
            at = str(int(clock.time()) + 100)
            hdrs = _put_headers(ts(clock), b"x", **{"X-Delete-At": at})
            async with s.put(url + OBJ, data=b"x", headers=hdrs) as r:
                assert r.status == 201
            async with s.get(url + OBJ) as r:
                assert r.status == 200 and r.headers["X-Delete-At"] == at
            clock.advance(100)
            async with s.get(url + OBJ) as r:
                assert r.status == 404
            async with s.head(url + OBJ, headers={"X-Backend-Replication": "true"}) as r:
                assert r.status == 200
            bad = {"X-Timestamp": ts(clock), "X-If-Delete-At": "5"}
            async with s.delete(url + OBJ, headers=bad) as r:
                assert r.status == 412
            good = {"X-Timestamp": ts(clock, 1), "X-If-Delete-At": at}
            async with s.delete(url + OBJ, headers=good) as r:
                assert r.status == 204

    run(go())


def test_healthcheck_and_metrics(conf, clock, devices_dir):
    async def go():
        async with object_server(conf, clock) as (url, s):
            async with s.get(url + "/healthcheck") as r:
                assert r.status == 200
            async with s.put(url + OBJ, data=b"abc", headers=_put_headers(ts(clock), b"abc")) as r:
                assert r.status == 201
            async with s.get(url + "/metrics") as r:
                text = await r.text()
                assert "cairn_object_bytes_in_total 3.0" in text
            (devices_dir / "sda").rename(devices_dir.parent / "gone")
            async with s.get(url + "/healthcheck") as r:
                assert r.status == 503

    run(go())
