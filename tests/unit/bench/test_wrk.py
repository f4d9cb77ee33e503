"""wrk: the generated Lua script, the parser of its result line, and a real wrk run."""

from __future__ import annotations

import shutil
import urllib.request

import pytest

from bench.target import SwiftTarget
from bench.wrk import WrkJob, lua_script, parse_output, run_wrk

from ._memswift import TOKEN, memory_swift

GOOD = (
    "Running 3s test @ http://127.0.0.1:1/\n  1 threads and 16 connections\n"
    "BENCHRESULT requests=129 duration_us=3001234 bytes=24492 err_connect=0 err_read=1 "
    "err_write=0 err_status=2 err_timeout=3 p50_us=342400 p99_us=625500 per_thread_ok=60,67\n"
)


def _job(**kw: object) -> WrkJob:
    base: dict[str, object] = dict(
        method="PUT",
        container_path="/v1/AUTH_a/c",
        prefix="o",
        headers={"X-Auth-Token": "AUTH_tk1"},
        duration_s=2,
        connections=4,
        object_bytes=4096,
    )
    base.update(kw)
    return WrkJob(**base)  # type: ignore[arg-type]


def test_parse_result_line() -> None:
    out = parse_output(GOOD)
    assert out.requests == 129 and out.duration_us == 3001234
    assert out.p50_us == 342400 and out.p99_us == 625500
    assert out.errors == 6 and out.ok == 127
    assert out.per_thread_ok == (60, 67)
    assert out.pool_left(2) == 120


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("no result here\n", "found 0"),
        (GOOD + GOOD, "found 2"),
        (GOOD.replace("p99_us=625500 ", ""), "lacks p99_us"),
        (GOOD.replace("requests=129", "requests=12x"), "non-integer"),
        (GOOD.replace("err_read=1", "err_read=-1"), "negative"),
        (GOOD.replace("bytes=24492", "bytes=1 bytes=2"), "repeated"),
        (GOOD.replace("err_write=0", "err_write"), "bad or repeated"),
    ],
)
def test_parse_rejects_bad_output(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_output(text)


def test_lua_script_carries_the_job() -> None:
    s = lua_script(_job(object_bytes=1024))
    assert 'local method = "PUT"' in s
    assert 'local base = "/v1/AUTH_a/c/o"' in s
    assert '["X-Auth-Token"] = "AUTH_tk1"' in s
    assert 'string.rep("x", 1024)' in s
    g = lua_script(_job(method="GET", pool=77))
    assert "local pool = 77" in g and "local body = nil" in g


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"method": "HEAD", "pool": 3}, "PUT or GET"),
        ({"method": "GET"}, "pool"),
        ({"headers": {"X-Auth-Token": 'a"b'}}, "Lua literal"),
        ({"headers": {"X-Auth-Token": "a\nb"}}, "Lua literal"),
        ({"prefix": 'o"'}, "printable"),
        ({"connections": 1, "threads": 2}, "threads"),
        ({"duration_s": 0.5}, "whole seconds"),
    ],
)
def test_job_validation(kw: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        _job(**kw)


@pytest.mark.integration
@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_real_wrk_put_then_get_uses_contiguous_names() -> None:
    with memory_swift() as (url, store):
        target = SwiftTarget(url, TOKEN)
        req = urllib.request.Request(url + "/c", method="PUT", headers={"X-Auth-Token": TOKEN})
        urllib.request.urlopen(req, timeout=10).close()
        put = _job(
            container_path=target.container_path("c"),
            headers=target.static_headers(),
            duration_s=1,
            connections=2,
            threads=2,
            object_bytes=100,
        )
        result, out = run_wrk(target.base_url, put, "put")
        left = out.pool_left(2)
        assert left > 0 and result.errors == 0 and result.tool == "wrk"
        names = store.objects["c"]
        assert all(f"o{i}" in names for i in range(left))  # o0 included (see lua init)
        assert set(names.values()) == {100}
        get = _job(
            method="GET",
            container_path=target.container_path("c"),
            headers=target.static_headers(),
            duration_s=1,
            connections=2,
            pool=left,
            object_bytes=100,
        )
        gres, gout = run_wrk(target.base_url, get, "get")
        assert gout.err_status == 0 and gres.ops > 0
        assert gres.bytes_moved == gres.ops * 100
        assert gres.client_cpu_s > 0
