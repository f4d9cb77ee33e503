"""objectd.client against a real object server, and the server's command line."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from objectd.client import (
    direct_delete_object,
    direct_get_object,
    direct_head_object,
    direct_post_object,
    direct_put_object,
)
from tests.integration.objectd.conftest import object_server, run, ts

pytestmark = pytest.mark.integration


def test_direct_calls_round_trip(conf, clock):
    async def chunks():
        yield b"hello "
        yield b"world"

    async def go():
        async with object_server(conf, clock) as (url, s):
            args = (s, url, "sda", 9, "AUTH_a", "c", "dir/obj name")
            hdrs = {"X-Timestamp": ts(clock), "Content-Type": "text/plain"}
            status, h = await direct_put_object(*args, chunks(), hdrs, expect_continue=True)
            assert status == 201 and h["ETag"] == "5eb63bbbe01eeed093cb22bb8f5acdc3"
            resp = await direct_get_object(*args, {"Range": "bytes=6-"})
            try:
                assert resp.status == 206 and await resp.read() == b"world"
            finally:
                resp.release()
            meta = {"X-Timestamp": ts(clock, 1), "X-Object-Meta-K": "v"}
            assert (await direct_post_object(*args, meta))[0] == 202
            status, h = await direct_head_object(*args)
            assert status == 200 and h["X-Object-Meta-K"] == "v"
            assert (await direct_delete_object(*args, {"X-Timestamp": ts(clock, 2)}))[0] == 204
            assert (await direct_head_object(*args))[0] == 404
            # a stale write is refused, and If-None-Match: * protects an existing object
            old = {"X-Timestamp": ts(clock, 1), "Content-Type": "a/b"}
            assert (await direct_put_object(*args, b"x", old))[0] == 409
            new = {"X-Timestamp": ts(clock, 3), "Content-Type": "a/b"}
            assert (await direct_put_object(*args, b"x", new))[0] == 201
            again = {**new, "X-Timestamp": ts(clock, 4), "If-None-Match": "*"}
            assert (await direct_put_object(*args, b"y", again))[0] == 412

    run(go())


def test_direct_call_to_a_dead_node_fails_fast():
    async def go():
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectionError):
                await direct_head_object(s, "http://127.0.0.1:9", "sda", 1, "a", "c", "o")

    run(go())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_command_line_serves_the_node(tmp_path: Path):
    port = _free_port()
    (tmp_path / "nodes" / "n1" / "sda").mkdir(parents=True)
    cfg = tmp_path / "deploy.toml"
    cfg.write_text(
        f"""
[cluster]
hash_path_prefix = "p"
hash_path_suffix = "s"

[[nodes]]
name = "n1"
object_port = {port}
devices = [{{ name = "sda" }}]
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "objectd.server", "--config", str(cfg), "--node", "n1"],
        cwd=Path(__file__).resolve().parents[3],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        async def poll() -> int:
            async with aiohttp.ClientSession() as s:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    try:
                        async with s.get(f"http://127.0.0.1:{port}/healthcheck") as r:
                            return r.status
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                return -1

        assert run(poll()) == 200
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_command_line_rejects_unknown_node(tmp_path: Path):
    cfg = tmp_path / "deploy.toml"
    cfg.write_text(
        '[cluster]\nhash_path_prefix = "p"\nhash_path_suffix = "s"\n'
        '[[nodes]]\nname = "n1"\ndevices = [{ name = "sda" }]\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "objectd.server", "--config", str(cfg), "--node", "zz"],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2 and "no node named 'zz'" in out.stderr
