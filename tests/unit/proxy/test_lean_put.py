"""Large PUTs on the proxy's lean path (proxy/leanput.py), against real object servers.

Three object servers (real ones, or stand-ins for a node that misbehaves) behind one ring on
127.0.0.1; the proxy's stream_put sends bodies of LEAN_PUT_BYTES_MIN and more, which go the
lean way. What must hold: every replica stores the body and answers the proxy's MD5; a bad
client ETag or a short body commits nothing; a node that never takes the body, or is down,
is dropped and the other two make the quorum.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from common.clock import ManualClock
from common.leanhttp import ConnectionClosed
from common.nodes import ErrorLimiter
from common.server import running_app
from objectd.server import ObjectServerConf, make_object_app
from proxy import leanput
from proxy.backend import Backend, Resp
from proxy.leanput import LEAN_PUT_BYTES_MIN, WRITE_HIGH_BYTES, PutStream
from proxy.objput import ClientBodyError, stream_put
from ring import NewDevice, Ring, RingBuilder, write_ring

PREFIX, SUFFIX = "pre", "suf"
BODY = os.urandom(LEAN_PUT_BYTES_MIN + 123_457)
MD5 = hashlib.md5(BODY).hexdigest()
CHUNK = 200_000


async def _real(devices_dir: Path, clock: ManualClock) -> web.Application:
    (devices_dir / "sda").mkdir(parents=True)
    conf = ObjectServerConf(
        devices_dir=devices_dir, hash_path_prefix=PREFIX, hash_path_suffix=SUFFIX
    )
    return await make_object_app(conf, clock)


class _Stuck:
    """A node that says 100 Continue, then never reads the body (a tiny receive buffer, so
    the proxy's unsent bytes pile up at once)."""

    def __init__(self, read_bytes: int = 0, answer: bytes = b"", *, mute: bool = False) -> None:
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.read_bytes = read_bytes  # then `answer` (if any) and a close
        self.answer = answer
        self.mute = mute  # not even 100 Continue

    async def __aenter__(self) -> str:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._serve, sock=sock)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def __aexit__(self, *_exc: object) -> None:
        self.release.set()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The proxy hanging up first is one of the outcomes under test: this end then just
        # closes its side (every Python 3.11 patch release, whether or not asyncio closes a
        # finished handler's transport itself).
        try:
            await reader.readuntil(b"\r\n\r\n")
            if not self.mute:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if self.read_bytes:
                await reader.readexactly(self.read_bytes)
                if self.answer:
                    writer.write(self.answer)
                    return
            await self.release.wait()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Apps = list[Callable[[Path, ManualClock], Awaitable[web.Application]] | _Stuck]


class _Counting(PutStream):
    """A PutStream that notes, per connection, how many pieces it was given and the most
    bytes it held unsent when given one."""

    writes: dict[int, int] = {}
    unsent_max = 0

    def write(self, parts: list[bytes]) -> None:
        assert self.transport is not None
        _Counting.unsent_max = max(_Counting.unsent_max, self.transport.get_write_buffer_size())
        _Counting.writes[id(self)] = _Counting.writes.get(id(self), 0) + 1
        super().write(parts)


async def _body(data: bytes, upto: int | None = None) -> AsyncIterator[bytes]:
    end = len(data) if upto is None else upto
    for i in range(0, end, CHUNK):
        yield data[i : min(i + CHUNK, end)]
        await asyncio.sleep(0)


async def _with_cluster(
    tmp_path: Path,
    apps: Apps,
    test: Callable[[Backend, Ring, list[str], ManualClock], Awaitable[None]],
    *,
    node_timeout_s: float = 10.0,
    down: int | None = None,
) -> None:
    clock = ManualClock()
    runners: list[AbstractAsyncContextManager[str]] = [
        make if isinstance(make, _Stuck) else running_app(await make(tmp_path / f"n{i}", clock))
        for i, make in enumerate(apps)
    ]
    async with aiohttp.ClientSession() as session:
        urls = [await r.__aenter__() for r in runners]
        try:
            ports = [int(u.rsplit(":", 1)[1]) for u in urls]
            if down is not None:
                await runners[down].__aexit__(None, None, None)
            builder = RingBuilder(2, 3, 0)
            for i, port in enumerate(ports):
                builder.add(NewDevice(1, i + 1, "127.0.0.1", port, "127.0.0.1", port, "sda", 1.0))
            builder.rebalance(seed=1)
            write_ring(tmp_path / "object.ring", builder.ring_data())
            ring = Ring(tmp_path / "object.ring", PREFIX, SUFFIX, clock=clock)
            backend = Backend(
                SimpleNamespace(),  # type: ignore[arg-type]  # stream_put takes the ring itself
                session,
                clock,
                conn_timeout_s=0.5,  # (also how long the trailer probe waits on a stand-in)
                node_timeout_s=node_timeout_s,
                error_limiter=ErrorLimiter(clock, limit=10, interval_s=60),
            )
            await test(backend, ring, urls, clock)
            await backend.pool.close()
            await backend.put_pool.close()
        finally:
            for i, r in enumerate(runners):
                if i != down:
                    await r.__aexit__(None, None, None)


async def _put(
    backend: Backend,
    ring: Ring,
    clock: ManualClock,
    name: str,
    body: AsyncIterator[bytes],
    etag: str = "",
    length: int = len(BODY),
) -> list[Resp]:
    clock.advance(1.0)
    ts = f"{clock.time():.5f}"

    def headers_for(_i: int, _node: object) -> CIMultiDict[str]:
        h = CIMultiDict(
            {
                "Content-Length": str(length),
                "X-Timestamp": ts,
                "Content-Type": "application/octet-stream",
            }
        )
        if etag:
            h["ETag"] = etag
        return h

    return await stream_put(
        backend,
        ring,
        0,
        lambda d: f"/{d.device}/0/AUTH_a/c/{name}",
        headers_for,
        body,
        connect_timeout_s=0.5,
    )


async def _stored(urls: list[str], name: str) -> list[bytes | int]:
    """Each server's copy of the object (its bytes), or the GET's status."""
    out: list[bytes | int] = []
    async with aiohttp.ClientSession() as s:
        for u in urls:
            async with s.get(f"{u}/sda/0/AUTH_a/c/{name}") as r:
                out.append(await r.read() if r.status == 200 else r.status)
    return out


def test_every_replica_stores_the_body_with_the_proxys_md5(tmp_path: Path) -> None:
    async def test(backend: Backend, ring: Ring, urls: list[str], clock: ManualClock) -> None:
        for name in ("a", "b"):  # the second one on servers known to take the trailer
            results = await _put(backend, ring, clock, name, _body(BODY))
            assert [r.status for r in results] == [201, 201, 201]
            assert {r.headers["Etag"].strip('"') for r in results} == {MD5}
            assert await _stored(urls, name) == [BODY, BODY, BODY]

    asyncio.run(_with_cluster(tmp_path, [_real, _real, _real], test))


def test_a_client_etag_the_body_does_not_have_commits_nothing(tmp_path: Path) -> None:
    async def test(backend: Backend, ring: Ring, urls: list[str], clock: ManualClock) -> None:
        results = await _put(backend, ring, clock, "bad", _body(BODY), etag="0" * 32)
        assert [r.status for r in results] == [422, 422, 422]
        results = await _put(backend, ring, clock, "good", _body(BODY), etag=MD5)
        assert [r.status for r in results] == [201, 201, 201]
        assert await _stored(urls, "bad") == [404, 404, 404]

    asyncio.run(_with_cluster(tmp_path, [_real, _real, _real], test))


def test_a_short_body_commits_nothing(tmp_path: Path) -> None:
    async def test(backend: Backend, ring: Ring, urls: list[str], clock: ManualClock) -> None:
        with pytest.raises(ClientBodyError) as e:
            await _put(backend, ring, clock, "short", _body(BODY, len(BODY) - 1))
        assert e.value.status == 499
        assert await _stored(urls, "short") == [404, 404, 404]

    asyncio.run(_with_cluster(tmp_path, [_real, _real, _real], test))


def test_a_node_that_never_takes_the_body_is_dropped_mid_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stuck node is given up while the body is still being sent (it got fewer pieces
    than the others), and no connection ever held more than WRITE_HIGH_BYTES unsent when
    given a piece: the proxy does not buffer a slow node's share of the body."""
    big = os.urandom(4 * WRITE_HIGH_BYTES)
    monkeypatch.setattr(leanput, "PutStream", _Counting)
    _Counting.writes.clear()

    async def test(backend: Backend, ring: Ring, urls: list[str], clock: ManualClock) -> None:
        results = await _put(backend, ring, clock, "slow", _body(big), length=len(big))
        by_url = {f"http://127.0.0.1:{r.node.port}": r.status for r in results if r.node}
        assert by_url == {urls[0]: 201, urls[1]: 201, urls[2]: 503}
        assert (await _stored(urls[:2], "slow")) == [big, big]
        counts = sorted(_Counting.writes.values())
        assert len(counts) == 3 and counts[0] < counts[1] == counts[2]
        assert _Counting.unsent_max <= WRITE_HIGH_BYTES

    asyncio.run(_with_cluster(tmp_path, [_real, _real, _Stuck()], test, node_timeout_s=0.5))


@pytest.mark.parametrize(
    ("read_bytes", "answer"),
    [
        (1_000_000, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
        (1_000_000, b"HTTP/1.1 201 Cre"),  # a close in the middle of an answer
        (len(BODY) + 56, b""),  # the whole body and trailer, then never an answer
    ],
)
def test_a_node_failing_mid_body_or_mute_after_it_is_a_503(
    tmp_path: Path, read_bytes: int, answer: bytes
) -> None:
    async def test(backend: Backend, ring: Ring, urls: list[str], clock: ManualClock) -> None:
        await _put(backend, ring, clock, "warm", _body(BODY))  # servers known to take trailers
        results = await _put(backend, ring, clock, "flaky", _body(BODY))
        by_url = {f"http://127.0.0.1:{r.node.port}": r.status for r in results if r.node}
        assert by_url == {urls[0]: 201, urls[1]: 201, urls[2]: 503}
        assert (await _stored(urls[:2], "flaky")) == [BODY, BODY]

    flaky = _Stuck(read_bytes, answer)
    asyncio.run(_with_cluster(tmp_path, [_real, _real, flaky], test, node_timeout_s=0.5))


def test_a_body_longer_than_its_content_length_is_a_400_and_commits_nothing(
    tmp_path: Path,
) -> None:
    async def test(backend: Backend, ring: Ring, urls: list[str], clock: ManualClock) -> None:
        with pytest.raises(ClientBodyError) as e:
            await _put(backend, ring, clock, "long", _body(BODY), length=len(BODY) - 1)
        assert e.value.status == 400
        assert await _stored(urls, "long") == [404, 404, 404]

    asyncio.run(_with_cluster(tmp_path, [_real, _real, _real], test))


def test_a_node_that_never_says_continue_is_given_up_and_two_make_the_quorum(
    tmp_path: Path,
) -> None:
    """The mute node never answers the head: after the ready timeout (connect timeout +
    node timeout) its start is cancelled, it counts as a 503, the body goes to the others."""

    async def test(backend: Backend, ring: Ring, urls: list[str], clock: ManualClock) -> None:
        results = await _put(backend, ring, clock, "mute", _body(BODY))
        by_url = {f"http://127.0.0.1:{r.node.port}": r.status for r in results if r.node}
        assert by_url == {urls[0]: 201, urls[1]: 201, urls[2]: 503}
        assert (await _stored(urls[:2], "mute")) == [BODY, BODY]

    mute = _Stuck(mute=True)
    asyncio.run(_with_cluster(tmp_path, [_real, _real, mute], test, node_timeout_s=0.5))


def test_a_start_that_raises_is_logged_and_counts_as_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in one replica's start (here: its head cannot be built) must not leave an
    unretrieved task exception: it is logged, and the other two make the quorum."""
    real_open = leanput._open
    broken_port: list[int] = []

    async def open_or_raise(
        backend: Backend, rep: object, node: object, path: str, headers: object
    ) -> object:
        if getattr(node, "port", None) in broken_port:
            raise RuntimeError("start bug")
        return await real_open(backend, rep, node, path, headers)  # type: ignore[arg-type]

    monkeypatch.setattr(leanput, "_open", open_or_raise)

    async def test(backend: Backend, ring: Ring, urls: list[str], clock: ManualClock) -> None:
        broken_port.append(int(urls[2].rsplit(":", 1)[1]))
        results = await _put(backend, ring, clock, "buggy", _body(BODY))
        assert sorted(r.status for r in results) == [201, 201, 503]
        assert (await _stored(urls[:2], "buggy")) == [BODY, BODY]

    with caplog.at_level("ERROR", logger="cairn"):
        asyncio.run(_with_cluster(tmp_path, [_real, _real, _real], test))
    assert any("replica PUT start failed" in r.getMessage() for r in caplog.records)


def test_a_node_that_is_down_leaves_a_quorum(tmp_path: Path) -> None:
    async def test(backend: Backend, ring: Ring, urls: list[str], clock: ManualClock) -> None:
        results = await _put(backend, ring, clock, "down", _body(BODY))
        assert sorted(r.status for r in results) == [201, 201, 503]
        assert (await _stored(urls[1:], "down")) == [BODY, BODY]

    asyncio.run(_with_cluster(tmp_path, [_real, _real, _real], test, down=0))


# -- PutStream fed bytes by hand (no socket) -------------------------------------------------


def _stream() -> PutStream:
    return PutStream()


def test_stream_continue_then_answer() -> None:
    async def run() -> None:
        s = _stream()
        s.data_received(b"HTTP/1.1 100 Cont")
        assert not s.continued.done()
        s.data_received(b"inue\r\n\r\nHTTP/1.1 201 Created\r\nEtag: x\r\n")
        assert s.continued.result() is True
        assert not s.answer.done()
        s.data_received(b"Content-Length: 0\r\n\r\n")
        resp = s.answer.result()
        assert isinstance(resp, Resp) and resp.status == 201 and resp.headers["Etag"] == "x"

    asyncio.run(run())


def test_stream_answer_without_continue() -> None:
    async def run() -> None:
        s = _stream()
        s.data_received(b"HTTP/1.1 507 Insufficient Storage\r\nContent-Length: 3\r\n\r\nno\n")
        assert s.continued.result() is False
        resp = s.answer.result()
        assert isinstance(resp, Resp) and resp.status == 507 and resp.body == b"no\n"

    asyncio.run(run())


def test_stream_closed_mid_answer_or_garbled() -> None:
    async def run() -> None:
        s = _stream()
        s.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Cre")
        s.connection_lost(None)
        assert isinstance(s.answer.result(), ConnectionClosed)
        g = _stream()
        g.data_received(b"NONSENSE\r\n\r\n")
        assert g.continued.result() is False
        assert not isinstance(g.answer.result(), Resp)
        long = _stream()
        long.data_received(b"H" * 200_000)
        assert long.continued.result() is False

    asyncio.run(run())


def test_stream_drain_waits_while_paused() -> None:
    async def run() -> None:
        s = _stream()
        await s.drain()  # not paused: returns at once
        s.pause_writing()
        waiter = asyncio.ensure_future(s.drain())
        await asyncio.sleep(0)
        assert not waiter.done()
        s.resume_writing()
        await asyncio.wait_for(waiter, 1.0)
        s.pause_writing()
        waiter = asyncio.ensure_future(s.drain())
        await asyncio.sleep(0)
        s.connection_lost(None)  # a lost connection wakes the sender too
        await asyncio.wait_for(waiter, 1.0)

    asyncio.run(run())
