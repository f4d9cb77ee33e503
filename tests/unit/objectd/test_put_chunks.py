"""A PUT body sent in odd pieces reaches the disk whole (objectd/putbody.py's chunk lists).

A real object server on 127.0.0.1; the client writes the request in pieces with a pause
after each, so the server's parser sees them as separate chunks: pieces that end inside a
64 KiB block and inside a write batch, a trailer split over two pieces, and a chunked body.
The stored file is checked block by block (verify_file) and read back.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import xxhash

from common.clock import ManualClock
from common.puttrailer import PutTrailer, encode_trailer
from common.server import running_app
from common.timestamps import Timestamp
from objectd.diskfile import verify_file
from objectd.fileformat import BLOCK_BYTES
from objectd.server import ObjectServerConf, make_object_app

OBJ = "/sda/7/AUTH_a/c/o"
BODY = os.urandom(3 * BLOCK_BYTES + 12_345)
MD5 = hashlib.md5(BODY).hexdigest()
TIMEOUT_S = 20.0


@asynccontextmanager
async def _server(devices: Path) -> AsyncIterator[tuple[str, int]]:
    (devices / "sda").mkdir(parents=True, exist_ok=True)
    conf = ObjectServerConf(
        devices_dir=devices,
        hash_path_prefix="pre",
        hash_path_suffix="suf",
        mount_check=False,
        threads_per_device=2,
        node_timeout_s=5.0,
        write_chunk_bytes=4096 * 5,  # small batches: chunks straddle batch boundaries
    )
    app = await make_object_app(conf, ManualClock(start=1_700_000_000.0))
    async with running_app(app) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


async def _send(host: str, port: int, head: str, pieces: list[bytes]) -> bytes:
    """Send the request head and then each piece on its own; return the status line."""
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(head.encode())
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.005)  # let the server read this piece by itself
    line = await reader.readline()
    writer.close()
    return line


def _head(extra: str) -> str:
    ts = Timestamp(1_700_000_000).internal
    return f"PUT {OBJ} HTTP/1.1\r\nHost: x\r\nX-Timestamp: {ts}\r\nContent-Type: x/y\r\n{extra}\r\n"


def _cut(data: bytes, at: list[int]) -> list[bytes]:
    edges = [0, *at, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def _stored(devices: Path) -> Path:
    [data] = sorted((devices / "sda").rglob("*.data"))
    return data


def _put(devices: Path, head: str, pieces: list[bytes]) -> bytes:
    """Start a server on `devices`, send the request in `pieces`; the status line."""

    async def go() -> bytes:
        async with _server(devices) as (host, port):
            return await _send(host, port, head, pieces)

    return asyncio.run(asyncio.wait_for(go(), TIMEOUT_S))


def _trailed_head(wire: bytes) -> str:
    return _head(
        f"Content-Length: {len(wire)}\r\nX-Backend-Body-Length: {len(BODY)}\r\n"
        "X-Backend-Etag-Trailer: 1\r\n"
    )


# Cuts: 1 byte, a block edge minus one, a block edge plus one, odd places between.
CUTS = [1, BLOCK_BYTES - 1, BLOCK_BYTES + 1, 2 * BLOCK_BYTES + 4099, 3 * BLOCK_BYTES + 7]


def test_a_trailed_body_in_odd_pieces_with_the_trailer_split(tmp_path: Path) -> None:
    trailer = encode_trailer(PutTrailer("commit", len(BODY), MD5, xxhash.xxh3_128_hexdigest(BODY)))
    wire = BODY + trailer
    # The last cut falls inside the trailer: its first 10 bytes come with the body's tail.
    pieces = _cut(wire, [*CUTS, len(BODY) + 10])
    head = _trailed_head(wire)
    devices = tmp_path / "devices"
    line = _put(devices, head, pieces)
    assert line.startswith(b"HTTP/1.1 201"), line
    data = _stored(devices)
    assert list(verify_file(data))[-1] == len(BODY)  # every block digest and the MD5
    assert data.read_bytes()[: len(BODY)] == BODY


def test_a_trailer_split_one_byte_into_the_body_piece(tmp_path: Path) -> None:
    """The piece that ends the body carries one trailer byte; the rest comes alone."""
    trailer = encode_trailer(PutTrailer("commit", len(BODY), MD5, xxhash.xxh3_128_hexdigest(BODY)))
    wire = BODY + trailer
    pieces = _cut(wire, [len(BODY) - 3, len(BODY) + 1])
    head = _trailed_head(wire)
    devices = tmp_path / "devices"
    line = _put(devices, head, pieces)
    assert line.startswith(b"HTTP/1.1 201"), line
    assert list(verify_file(_stored(devices)))[-1] == len(BODY)


def test_a_flipped_byte_in_a_piece_is_refused(tmp_path: Path) -> None:
    """The end-to-end check still sees every byte when the body comes in pieces."""
    trailer = encode_trailer(PutTrailer("commit", len(BODY), MD5, xxhash.xxh3_128_hexdigest(BODY)))
    bad = bytearray(BODY)
    bad[BLOCK_BYTES] ^= 1  # the first byte of the second block, right after a cut
    wire = bytes(bad) + trailer
    head = _trailed_head(wire)
    devices = tmp_path / "devices"
    line = _put(devices, head, _cut(wire, CUTS))
    assert line.split()[1] == b"422", line
    assert not list((devices / "sda").rglob("*.data"))


def test_a_chunked_body_in_odd_chunks(tmp_path: Path) -> None:
    parts = _cut(BODY, CUTS)
    wire = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts] + [b"0\r\n\r\n"]
    head = _head(f"Transfer-Encoding: chunked\r\nETag: {MD5}\r\n")
    devices = tmp_path / "devices"
    line = _put(devices, head, wire)
    assert line.startswith(b"HTTP/1.1 201"), line
    data = _stored(devices)
    assert list(verify_file(data))[-1] == len(BODY)
    assert data.read_bytes()[: len(BODY)] == BODY


def test_a_body_shorter_than_its_length_commits_nothing(tmp_path: Path) -> None:
    head = _head(f"Content-Length: {len(BODY) + 1}\r\n")
    devices = tmp_path / "devices"

    async def go() -> None:
        async with _server(devices) as (host, port):
            _reader, writer = await asyncio.open_connection(host, port)
            writer.write(head.encode() + BODY)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()  # hang up one byte short
            await writer.wait_closed()
            for _ in range(300):  # the server aborts the temp file (bounded wait)
                await asyncio.sleep(0.01)
                if not [p for p in (devices / "sda").rglob("*") if p.is_file()]:
                    break

    asyncio.run(asyncio.wait_for(go(), TIMEOUT_S))
    assert not [
        p for p in (devices / "sda").rglob("*") if p.is_file() and p.suffix in (".data", ".tmp")
    ]
