"""The Swift API through python-swiftclient and the `swift` CLI, against `cairn up`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from swiftclient import ClientException

from tests.cluster import http

pytestmark = pytest.mark.integration


def _name(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def conn(cluster):
    return cluster.connection("test:tester", "testing")


def test_auth_and_account_stat(cluster, conn):
    url, _token = conn.get_auth()
    assert url.endswith("/v1/AUTH_test")
    headers = conn.head_account()
    assert "x-account-container-count" in headers
    assert headers["x-trans-id"].startswith("tx")


def test_bad_credentials_get_401(cluster):
    with pytest.raises(ClientException) as e:
        cluster.connection("test:tester", "wrong").get_auth()
    assert e.value.http_status == 401


def test_no_token_gets_401(cluster):
    status, _, _ = http("GET", f"{cluster.proxy_url}/v1/AUTH_test")
    assert status == 401


def test_upload_download_list_delete(conn):
    c = _name()
    conn.put_container(c)
    data = os.urandom(300_000)
    etag = conn.put_object(c, "dir/obj.bin", data, content_type="application/x-test")
    assert etag == hashlib.md5(data).hexdigest()
    headers, body = conn.get_object(c, "dir/obj.bin")
    assert body == data
    assert headers["content-type"] == "application/x-test"
    assert headers["etag"] == etag
    _, listing = conn.get_container(c)
    assert [o["name"] for o in listing] == ["dir/obj.bin"]
    assert listing[0]["bytes"] == len(data)
    assert listing[0]["hash"] == etag
    stat = conn.head_container(c)
    assert stat["x-container-object-count"] == "1"
    assert stat["x-container-bytes-used"] == str(len(data))
    conn.delete_object(c, "dir/obj.bin")
    with pytest.raises(ClientException) as e:
        conn.get_object(c, "dir/obj.bin")
    assert e.value.http_status == 404
    conn.delete_container(c)
    with pytest.raises(ClientException) as e:
        conn.head_container(c)
    assert e.value.http_status == 404


def test_account_listing_shows_containers(conn):
    c = _name("acct")
    conn.put_container(c)
    conn.put_object(c, "x", b"12345")
    _, containers = conn.get_account(prefix=c)
    assert [x["name"] for x in containers] == [c]


def test_delete_nonempty_container_409(conn):
    c = _name()
    conn.put_container(c)
    conn.put_object(c, "o", b"x")
    with pytest.raises(ClientException) as e:
        conn.delete_container(c)
    assert e.value.http_status == 409


def test_chunked_upload(conn):
    c = _name()
    conn.put_container(c)
    chunks = [os.urandom(70_000) for _ in range(5)]
    conn.put_object(c, "chunked", (x for x in chunks))
    _, body = conn.get_object(c, "chunked")
    assert body == b"".join(chunks)


def test_etag_mismatch_is_422(conn):
    c = _name()
    conn.put_container(c)
    with pytest.raises(ClientException) as e:
        conn.put_object(c, "o", b"hello", etag="0" * 32)
    assert e.value.http_status == 422


def test_metadata_on_all_levels(conn):
    c = _name()
    conn.put_container(c, headers={"X-Container-Meta-Color": "blue"})
    assert conn.head_container(c)["x-container-meta-color"] == "blue"
    conn.post_container(c, {"X-Container-Meta-Color": "red", "X-Container-Meta-Size": "9"})
    h = conn.head_container(c)
    assert h["x-container-meta-color"] == "red" and h["x-container-meta-size"] == "9"
    conn.put_object(c, "o", b"data", headers={"X-Object-Meta-Flavor": "salty"})
    assert conn.head_object(c, "o")["x-object-meta-flavor"] == "salty"
    conn.post_object(c, "o", {"X-Object-Meta-Flavor": "sweet"})
    h = conn.head_object(c, "o")
    assert h["x-object-meta-flavor"] == "sweet"
    assert h["content-length"] == "4"
    conn.post_account({"X-Account-Meta-Team": "storage"})
    assert conn.head_account()["x-account-meta-team"] == "storage"


def test_ranges(conn):
    c = _name()
    conn.put_container(c)
    data = bytes(range(256)) * 40
    conn.put_object(c, "r", data)
    h, body = conn.get_object(c, "r", headers={"Range": "bytes=10-19"})
    assert body == data[10:20]
    assert h["content-range"] == f"bytes 10-19/{len(data)}"
    _, body = conn.get_object(c, "r", headers={"Range": "bytes=-5"})
    assert body == data[-5:]
    h, body = conn.get_object(c, "r", headers={"Range": "bytes=0-1,5-6"})
    assert h["content-type"].startswith("multipart/byteranges")
    assert data[0:2] in body and data[5:7] in body
    with pytest.raises(ClientException) as e:
        conn.get_object(c, "r", headers={"Range": f"bytes={len(data) + 10}-"})
    assert e.value.http_status == 416


def test_conditional_get(conn):
    c = _name()
    conn.put_container(c)
    etag = conn.put_object(c, "o", b"conditional")
    h, _ = conn.get_object(c, "o", headers={"If-Match": etag})
    assert h["etag"] == etag
    with pytest.raises(ClientException) as e:
        conn.get_object(c, "o", headers={"If-Match": "nope"})
    assert e.value.http_status == 412
    with pytest.raises(ClientException) as e:
        conn.get_object(c, "o", headers={"If-None-Match": etag})
    assert e.value.http_status == 304
    lm = h["last-modified"]
    with pytest.raises(ClientException) as e:
        conn.get_object(c, "o", headers={"If-Modified-Since": lm})
    assert e.value.http_status == 304


def test_copy_and_x_copy_from(conn):
    c = _name()
    conn.put_container(c)
    conn.put_object(c, "src", b"copy me", headers={"X-Object-Meta-A": "1"})
    conn.copy_object(c, "src", f"/{c}/dst1")
    h, body = conn.get_object(c, "dst1")
    assert body == b"copy me" and h["x-object-meta-a"] == "1"
    conn.put_object(c, "dst2", None, headers={"X-Copy-From": f"/{c}/src", "Content-Length": "0"})
    assert conn.get_object(c, "dst2")[1] == b"copy me"


def test_slo_ranged_get_across_segment_boundary(conn):
    c = _name()
    conn.put_container(c)
    segs = [os.urandom(1000 + i) for i in range(4)]
    manifest = []
    for i, s in enumerate(segs):
        etag = conn.put_object(c, f"seg/{i:02d}", s)
        manifest.append({"path": f"/{c}/seg/{i:02d}", "etag": etag, "size_bytes": len(s)})
    conn.put_object(c, "big", json.dumps(manifest), query_string="multipart-manifest=put")
    whole = b"".join(segs)
    h, body = conn.get_object(c, "big")
    assert body == whole
    assert h["x-static-large-object"].lower() == "true"
    assert int(h["content-length"]) == len(whole)
    h, body = conn.get_object(c, "big", headers={"Range": "bytes=990-2010"})
    assert body == whole[990:2011]
    assert h["content-range"] == f"bytes 990-2010/{len(whole)}"
    _, raw = conn.get_object(c, "big", query_string="multipart-manifest=get")
    assert len(json.loads(raw)) == 4
    conn.delete_object(c, "big", query_string="multipart-manifest=delete")
    _, listing = conn.get_container(c)
    assert listing == []


def test_slo_bad_manifest_rejected(conn):
    c = _name()
    conn.put_container(c)
    conn.put_object(c, "seg", b"abc")
    bad = [{"path": f"/{c}/seg", "etag": "0" * 32}]
    with pytest.raises(ClientException) as e:
        conn.put_object(c, "m", json.dumps(bad), query_string="multipart-manifest=put")
    assert e.value.http_status == 400
    missing = [{"path": f"/{c}/nope"}]
    with pytest.raises(ClientException) as e:
        conn.put_object(c, "m", json.dumps(missing), query_string="multipart-manifest=put")
    assert e.value.http_status == 400


def test_dlo(conn):
    c = _name()
    conn.put_container(c)
    for i in range(3):
        conn.put_object(c, f"parts/{i}", f"part{i};".encode())
    conn.put_object(c, "dlo", b"", headers={"X-Object-Manifest": f"{c}/parts/"})
    _, body = conn.get_object(c, "dlo")
    assert body == b"part0;part1;part2;"


def test_bad_names(cluster, conn):
    c = _name()
    conn.put_container(c)
    with pytest.raises(ClientException) as e:
        conn.put_object(c, "x" * 1025, b"")
    assert e.value.http_status == 400
    with pytest.raises(ClientException) as e:
        conn.put_container("c" * 257)
    assert e.value.http_status == 400
    status, _, _ = http(
        "PUT", f"{conn.url}/{c}/a%00b", {"X-Auth-Token": conn.token, "Content-Length": "0"}, b""
    )
    assert status == 412
    # Dot segments are ordinary characters in Swift names and never escape anything
    # (requests would normalise them away, so this one goes through http.client as is).
    import http.client as httplib
    from urllib.parse import urlsplit

    u = urlsplit(conn.url)
    hc = httplib.HTTPConnection(u.hostname, u.port, timeout=30)
    hc.request("PUT", f"{u.path}/{c}/a/../b", b"dots", {"X-Auth-Token": conn.token})
    assert hc.getresponse().status == 201
    hc.close()
    _, listing = conn.get_container(c)
    assert [o["name"] for o in listing] == ["a/../b"]


def test_info_is_public(cluster):
    status, _, body = http("GET", f"{cluster.proxy_url}/info")
    assert status == 200
    info = json.loads(body)
    assert info["swift"]["max_object_name_length"] == 1024
    assert "slo" in info


def test_swift_cli(cluster, tmp_path: Path):
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello from the swift CLI\n")
    base = [
        sys.executable,
        "-m",
        "swiftclient.shell",
        "-A",
        cluster.auth_url,
        "-U",
        "test:tester",
        "-K",
        "testing",
    ]
    c = _name("cli")
    subprocess.run(
        [*base, "upload", c, "hello.txt"], cwd=tmp_path, check=True, capture_output=True, timeout=60
    )
    out = subprocess.run([*base, "list", c], check=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["hello.txt"]
    dl = tmp_path / "dl"
    dl.mkdir()
    subprocess.run(
        [*base, "download", c, "hello.txt"], cwd=dl, check=True, capture_output=True, timeout=60
    )
    assert (dl / "hello.txt").read_bytes() == f.read_bytes()
    out = subprocess.run([*base, "stat"], check=True, capture_output=True, text=True, timeout=60)
    assert "Account: AUTH_test" in out.stdout


def test_put_if_none_match_star(conn):
    c = _name()
    conn.put_container(c)
    conn.put_object(c, "once", b"first", headers={"If-None-Match": "*"})
    with pytest.raises(ClientException) as e:
        conn.put_object(c, "once", b"second", headers={"If-None-Match": "*"})
    assert e.value.http_status == 412
    assert conn.get_object(c, "once")[1] == b"first"


def test_zero_byte_object(conn):
    c = _name()
    conn.put_container(c)
    conn.put_object(c, "empty", b"")
    headers, body = conn.get_object(c, "empty")
    assert body == b"" and headers["content-length"] == "0"
    assert headers["etag"] == hashlib.md5(b"").hexdigest()
