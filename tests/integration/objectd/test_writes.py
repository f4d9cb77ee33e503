"""PUT failure paths over real sockets: truncated bodies, stalled clients, faulty disks."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from objectd.faulty import FaultPlan
from tests.integration.objectd.conftest import object_server, run, ts

pytestmark = pytest.mark.integration

OBJ = "/sda/7/AUTH_a/c/o"


def _files(devices_dir: Path, pattern: str) -> list[Path]:
    return sorted((devices_dir / "sda").rglob(pattern))


async def _raw_put(
    url: str, head_extra: str, body: bytes, length: int, clock
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT {OBJ} HTTP/1.1\r\nHost: {host}\r\nX-Timestamp: {ts(clock)}\r\n"
        f"Content-Type: x/y\r\nContent-Length: {length}\r\n{head_extra}\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


async def _wait_for_no_tmp(devices_dir: Path) -> None:
    # the temp file is removed off the event loop; give that a moment (bounded)
    for _ in range(200):
        if not _files(devices_dir, "tmp/*"):
            return
        await asyncio.sleep(0.01)


async def _wait_for_metric(s, url: str, needle: str) -> None:
    for _ in range(500):
        async with s.get(url + "/metrics") as r:
            if needle in await r.text():
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"metric {needle} never appeared")


def test_client_closing_mid_body_writes_nothing(conf, clock, devices_dir):
    async def go():
        async with object_server(conf, clock) as (url, s):
            _reader, writer = await _raw_put(url, "", b"x" * 10, 1000, clock)
            writer.close()
            await writer.wait_closed()
            await _wait_for_metric(s, url, 'method="PUT",service="object-server",status="499"')
            await _wait_for_no_tmp(devices_dir)
            async with s.get(url + OBJ) as r:
                assert r.status == 404

    run(go())
    assert _files(devices_dir, "*.data") == []
    assert _files(devices_dir, "tmp/*") == []


def test_stalled_body_times_out_with_408(conf, clock, devices_dir):
    quick = replace(conf, node_timeout_s=0.2)

    async def go():
        async with object_server(quick, clock) as (url, _s):
            reader, writer = await _raw_put(url, "", b"x" * 10, 1000, clock)
            status_line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            return status_line

    assert run(go()).startswith(b"HTTP/1.1 408")
    assert _files(devices_dir, "*.data") == []


def test_expect_100_continue_before_body(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, _s):
            reader, writer = await _raw_put(url, "Expect: 100-continue\r\n", b"", 3, clock)
            line = await asyncio.wait_for(reader.readline(), 10)
            assert line.startswith(b"HTTP/1.1 100")
            await reader.readline()
            writer.write(b"abc")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            return line

    assert run(go()).startswith(b"HTTP/1.1 201")


def _put_headers(clock, body: bytes, delta: float) -> dict[str, str]:
    return {
        "X-Timestamp": ts(clock, delta),
        "Content-Type": "x/y",
        "Content-Length": str(len(body)),
    }


@pytest.mark.parametrize(
    "plan",
    [FaultPlan(fail_write_after_bytes=100_000), FaultPlan(fail_commit=True)],
    ids=["write-fails-midway", "fails-before-rename"],
)
def test_failed_overwrite_keeps_old_data(conf, clock, devices_dir, plan):
    old, new = b"old" * 1000, b"new" * 200_000

    async def go():
        async with object_server(conf, clock) as (url, s):
            hdrs = _put_headers(clock, old, 0)
            async with s.put(url + OBJ, data=old, headers=hdrs) as r:
                assert r.status == 201
        async with object_server(conf, clock, fault_plan=plan) as (url, s):
            async with s.put(url + OBJ, data=new, headers=_put_headers(clock, new, 1)) as r:
                assert r.status == 500
            async with s.get(url + OBJ) as r:
                assert r.status == 200 and await r.read() == old
            await _wait_for_no_tmp(devices_dir)

    run(go())
    assert len(_files(devices_dir, "*.data")) == 1
    assert _files(devices_dir, "tmp/*") == []


def test_enospc_is_507(conf, clock, devices_dir):
    async def go():
        plan = FaultPlan(enospc_on_write=True)
        async with object_server(conf, clock, fault_plan=plan) as (url, s):
            hdrs = _put_headers(clock, b"abc", 0)
            async with s.put(url + OBJ, data=b"abc", headers=hdrs) as r:
                assert r.status == 507

    run(go())
    assert _files(devices_dir, "*.data") == []


def test_hung_disk_answers_503_instead_of_waiting(conf, clock, devices_dir):
    slow = replace(conf, disk_timeout_s=0.2)

    async def go():
        plan = FaultPlan(stall_write_s=1.0)
        async with object_server(slow, clock, fault_plan=plan) as (url, s):
            hdrs = _put_headers(clock, b"abc", 0)
            async with s.put(url + OBJ, data=b"abc", headers=hdrs) as r:
                assert r.status == 503

    run(go())
    assert _files(devices_dir, "*.data") == []


def test_expect_continue_learns_507_without_sending_the_body(conf, clock):
    async def go():
        async with object_server(conf, clock) as (url, _s):
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            head = (
                f"PUT /sdz/1/a/c/o HTTP/1.1\r\nHost: {host}\r\nX-Timestamp: {ts(clock)}\r\n"
                "Content-Type: x/y\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n"
            )
            writer.write(head.encode())  # headers only: the body is never sent
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            return line

    assert run(go()).startswith(b"HTTP/1.1 507")


def test_chunked_body_cut_at_a_chunk_boundary_commits_nothing(conf, clock, devices_dir):
    async def go():
        async with object_server(conf, clock) as (url, s):
            host, port = url.removeprefix("http://").split(":")
            _reader, writer = await asyncio.open_connection(host, int(port))
            head = (
                f"PUT {OBJ} HTTP/1.1\r\nHost: {host}\r\nX-Timestamp: {ts(clock)}\r\n"
                "Content-Type: x/y\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            # two whole chunks, then the connection ends without the terminating 0-chunk
            writer.write(head.encode() + b"5\r\nhello\r\n5\r\nworld\r\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            await _wait_for_metric(s, url, 'method="PUT",service="object-server",status="499"')
            async with s.get(url + OBJ) as r:
                assert r.status == 404

    run(go())
    assert _files(devices_dir, "*.data") == []


def test_length_limits_and_missing_length(conf, clock, devices_dir):
    small = replace(conf, object_bytes_max=10)

    async def chunks():
        for _ in range(4):
            yield b"x" * 5

    async def go():
        async with object_server(small, clock) as (url, s):
            hdrs = _put_headers(clock, b"x" * 11, 0)
            async with s.put(url + OBJ, data=b"x" * 11, headers=hdrs) as r:
                assert r.status == 413
            chunked = {"X-Timestamp": ts(clock), "Content-Type": "x/y"}
            async with s.put(url + OBJ, data=chunks(), headers=chunked) as r:
                assert r.status == 413
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"PUT {OBJ} HTTP/1.1\r\nHost: {host}\r\nX-Timestamp: {ts(clock)}\r\n"
                "Content-Type: x/y\r\n\r\n".encode()
            )
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            assert line.startswith(b"HTTP/1.1 411")

    run(go())
    assert _files(devices_dir, "*.data") == []
