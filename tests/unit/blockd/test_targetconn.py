"""The target's per-connection Protocol over real loopback sockets: back-pressure both ways and
the drain of running commands on close (a stalling backend is the fault injection)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from blockd.backend import MemoryBackend
from blockd.iscsi.pdu import Op, Pdu, encode_pdu, pad_bytes
from blockd.target import IscsiTarget, TargetOptions
from blockd.targetconn import ConnectionProtocol
from tests.unit.iscsi.initiator import INITIATOR, IQN, login_pdu, nop_out, scsi_command

GUARD_S = 20.0  # an upper bound so a broken server fails the test instead of hanging it


class StallingBackend(MemoryBackend):
    """Fault injection: reads and writes wait until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__(4096, 512, serial="stall0")
        self.release = asyncio.Event()
        self.waiting = 0

    async def read(self, lba: int, count: int) -> bytes:
        self.waiting += 1
        await self.release.wait()
        return await super().read(lba, count)

    async def write(self, lba: int, data: bytes, fua: bool = False) -> None:
        self.waiting += 1
        await self.release.wait()
        await super().write(lba, data, fua)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, *pdus: Pdu) -> None:
        self.writer.write(b"".join(encode_pdu(p) for p in pdus))
        await self.writer.drain()

    async def recv(self) -> Pdu:
        bhs = await self.reader.readexactly(48)
        length = int.from_bytes(bhs[5:8], "big")
        body = await self.reader.readexactly(bhs[4] * 4 + length + pad_bytes(length))
        return Pdu(bhs, b"", body[bhs[4] * 4 : bhs[4] * 4 + length])

    async def login(self) -> None:
        keys = [("InitiatorName", INITIATOR), ("TargetName", IQN), ("AuthMethod", "None")]
        await self.send(login_pdu(keys, csg=0, nsg=3))
        reply = await self.recv()
        assert reply.bhs[36:38] == b"\x00\x00"


@asynccontextmanager
async def connected(
    backend: MemoryBackend, options: TargetOptions
) -> AsyncIterator[tuple[IscsiTarget, Client, ConnectionProtocol]]:
    target = IscsiTarget(options)
    target.add_target(IQN, backend)
    port = await target.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = Client(reader, writer)
        await client.login()
        (protocol,) = target._connections
        yield target, client, protocol
        writer.close()
    finally:
        await target.stop()


def read10(lba: int, blocks: int, itt: int, cmd_sn: int) -> Pdu:
    cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)
    return scsi_command(cdb, itt=itt, cmd_sn=cmd_sn, edtl=blocks * 512, read=True)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (loop iterations, bounded by the test's guard) until ``condition()`` holds."""
    while not condition():
        await asyncio.sleep(0.005)


async def _reading_pauses_while_too_many_commands_run() -> None:
    backend = StallingBackend()
    options = TargetOptions(commands_running_max=2)
    async with asyncio.timeout(GUARD_S), connected(backend, options) as (_, client, protocol):
        await client.send(read10(0, 8, itt=1, cmd_sn=1), read10(8, 8, itt=2, cmd_sn=2))
        await until(lambda: backend.waiting == 2)
        assert protocol.transport is not None and not protocol.transport.is_reading()
        await client.send(nop_out(itt=3, cmd_sn=3))  # arrives while reading is paused
        backend.release.set()
        answered: set[int] = set()
        while len(answered) < 3:
            pdu = await client.recv()
            if (pdu.opcode == Op.DATA_IN and pdu.bhs[1] & 0x01) or pdu.opcode == Op.NOP_IN:
                answered.add(pdu.itt)
        assert answered == {1, 2, 3}
        assert protocol.transport.is_reading()


def test_reading_pauses_while_too_many_commands_run() -> None:
    asyncio.run(_reading_pauses_while_too_many_commands_run())


async def _reading_pauses_while_the_peer_does_not_read() -> None:
    backend = MemoryBackend(65536, 512, serial="mem0")
    commands = [read10(i * 1024, 1024, itt=i + 1, cmd_sn=i + 1) for i in range(48)]
    async with asyncio.timeout(GUARD_S), connected(backend, TargetOptions()) as (_, client, prot):
        await client.send(*commands)  # 24 MiB of Data-In that nobody reads yet
        await until(lambda: prot._paused_for_writes)
        assert prot.transport is not None and not prot.transport.is_reading()
        done: set[int] = set()
        while len(done) < len(commands):
            pdu = await client.recv()
            if pdu.opcode == Op.DATA_IN and pdu.bhs[1] & 0x01:
                assert pdu.bhs[3] == 0  # GOOD
                done.add(pdu.itt)
        assert prot.transport.is_reading()


def test_reading_pauses_while_the_peer_does_not_read() -> None:
    asyncio.run(_reading_pauses_while_the_peer_does_not_read())


async def _close_waits_for_running_commands() -> None:
    backend = StallingBackend()
    payload = bytes([0x5A]) * 4096
    write = struct.pack(">BBIBHB", 0x2A, 0, 16, 0, 8, 0)
    async with asyncio.timeout(GUARD_S), connected(backend, TargetOptions()) as (target, client, p):
        pdu = scsi_command(write, itt=1, cmd_sn=1, edtl=4096, write=True, data=payload)
        await client.send(pdu)
        await until(lambda: backend.waiting == 1)
        client.writer.close()
        await until(p.is_closing)
        assert p in target._connections and p.closed is not None and not p.closed.done()
        backend.release.set()  # the write finishes; only then does the connection go
        await p.closed
        assert p not in target._connections
        assert await MemoryBackend.read(backend, 16, 8) == payload


def test_close_waits_for_running_commands() -> None:
    asyncio.run(_close_waits_for_running_commands())


async def _connections_beyond_the_limit_are_closed() -> None:
    backend = MemoryBackend(4096, 512, serial="mem1")
    options = TargetOptions(connections_max=1)
    async with asyncio.timeout(GUARD_S), connected(backend, options) as (target, client, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", target._port)
        assert await reader.read(1) == b""  # closed at once
        writer.close()
        await client.send(nop_out(itt=1, cmd_sn=1))  # the first connection still works
        assert (await client.recv()).opcode == Op.NOP_IN
        assert len(target._connections) == 1


def test_connections_beyond_the_limit_are_closed() -> None:
    asyncio.run(_connections_beyond_the_limit_are_closed())
