"""The asyncio server loop on real sockets (127.0.0.1, ephemeral port), in-process.

Keepalive pings and their timeout, the login timeout, several sessions at once, session
reinstatement and target removal.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from blockd.backend import FileBackend, MemoryBackend
from blockd.iscsi.pdu import Op, Pdu, encode_pdu, pad_bytes
from blockd.target import IscsiTarget, TargetOptions
from tests.unit.iscsi.initiator import INITIATOR, IQN, login_pdu, nop_out, scsi_command

pytestmark = pytest.mark.integration
GUARD_S = 20.0  # an upper bound so a broken server fails the test instead of hanging it


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, pdu: Pdu) -> None:
        self.writer.write(encode_pdu(pdu))
        await self.writer.drain()

    async def recv(self) -> Pdu | None:
        """The next PDU, or None at EOF."""
        try:
            bhs = await self.reader.readexactly(48)
        except asyncio.IncompleteReadError:
            return None
        length = int.from_bytes(bhs[5:8], "big")
        body = await self.reader.readexactly(bhs[4] * 4 + length + pad_bytes(length))
        return Pdu(bhs, b"", body[bhs[4] * 4 : bhs[4] * 4 + length])

    async def login(self, isid: bytes = bytes([0x80, 0, 0, 0, 0, 1])) -> Pdu:
        keys = [("InitiatorName", INITIATOR), ("TargetName", IQN), ("AuthMethod", "None")]
        await self.send(login_pdu(keys, csg=0, nsg=3, isid=isid))
        reply = await self.recv()
        assert reply is not None and reply.bhs[36:38] == b"\x00\x00"
        return reply

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def serving(options: TargetOptions, blocks: int = 4096) -> AsyncIterator[IscsiTarget]:
    target = IscsiTarget(options)
    target.add_target(IQN, MemoryBackend(blocks, 512, serial="srv0"))
    await target.start("127.0.0.1", 0)
    try:
        yield target
    finally:
        await target.stop()


def port_of(target: IscsiTarget) -> int:
    return target._port


async def _test_keepalive_ping_then_drop_when_unanswered() -> None:
    async with asyncio.timeout(GUARD_S), serving(TargetOptions(nop_interval_s=0.2)) as target:
        client = await Client.connect(port_of(target))
        await client.login()
        ping = await client.recv()
        assert ping is not None and ping.opcode == Op.NOP_IN
        assert ping.itt == 0xFFFFFFFF and ping.u32(20) != 0xFFFFFFFF
        await client.send(nop_out(itt=0xFFFFFFFF, ttt=ping.u32(20), cmd_sn=1))
        second = await client.recv()  # answered, so the connection lives on and pings again
        assert second is not None and second.opcode == Op.NOP_IN
        assert await client.recv() is None  # this one is ignored: the target hangs up
        client.close()


async def _test_login_timeout_closes_silent_connection() -> None:
    async with asyncio.timeout(GUARD_S), serving(TargetOptions(login_timeout_s=0.2)) as target:
        client = await Client.connect(port_of(target))
        assert await client.recv() is None
        client.close()


async def session_io(port: int, index: int) -> None:
    client = await Client.connect(port)
    await client.login(isid=bytes([0x80, 0, 0, 0, 1, index]))
    payload = os.urandom(8 * 512)
    write = struct.pack(">BBIBHB", 0x2A, 0, index * 8, 0, 8, 0)
    await client.send(
        scsi_command(write, itt=1, cmd_sn=1, edtl=len(payload), write=True, data=payload)
    )
    response = await client.recv()
    assert response is not None and response.opcode == Op.SCSI_RESPONSE and response.bhs[3] == 0
    read = struct.pack(">BBIBHB", 0x28, 0, index * 8, 0, 8, 0)
    await client.send(scsi_command(read, itt=2, cmd_sn=2, edtl=len(payload), read=True))
    data = b""
    while True:
        pdu = await client.recv()
        assert pdu is not None and pdu.opcode == Op.DATA_IN
        data += pdu.data
        if pdu.bhs[1] & 0x01:
            break
    assert data == payload
    client.close()


async def _test_several_sessions_at_once() -> None:
    async with asyncio.timeout(GUARD_S), serving(TargetOptions()) as target:
        await asyncio.gather(*(session_io(port_of(target), i) for i in range(8)))


async def _test_session_reinstatement_closes_the_old_connection() -> None:
    async with asyncio.timeout(GUARD_S), serving(TargetOptions()) as target:
        first = await Client.connect(port_of(target))
        await first.login()
        second = await Client.connect(port_of(target))
        await second.login()  # same initiator name and ISID: reinstatement
        assert await first.recv() is None
        await second.send(nop_out(itt=5, cmd_sn=1))
        reply = await second.recv()
        assert reply is not None and reply.opcode == Op.NOP_IN
        first.close()
        second.close()


async def _test_remove_target_drops_its_sessions() -> None:
    async with asyncio.timeout(GUARD_S), serving(TargetOptions()) as target:
        client = await Client.connect(port_of(target))
        await client.login()
        target.remove_target(IQN)
        assert await client.recv() is None
        again = await Client.connect(port_of(target))
        keys = [("InitiatorName", INITIATOR), ("TargetName", IQN)]
        await again.send(login_pdu(keys, csg=1, nsg=3))
        reply = await again.recv()
        assert reply is not None and reply.bhs[36:38] == b"\x02\x03"  # not found
        client.close()
        again.close()


async def _test_pipelined_commands_that_suspend_and_that_do_not(path: str) -> None:
    """Commands the server starts eagerly: a FileBackend off tmpfs sends FUA writes, writes and
    SYNCHRONIZE CACHE to its thread pool (they suspend and finish in a task) while TEST UNIT
    READY finishes at once. All arrive in one segment; every one must be answered, once."""
    backend = FileBackend(path, 4096, 512, serial="file0")
    target = IscsiTarget(TargetOptions())
    target.add_target(IQN, backend)
    await target.start("127.0.0.1", 0)
    try:
        async with asyncio.timeout(GUARD_S):
            client = await Client.connect(port_of(target))
            await client.login()
            first, second = os.urandom(8 * 512), os.urandom(8 * 512)
            fua_write = struct.pack(">BBIBHB", 0x2A, 0x08, 0, 0, 8, 0)
            write = struct.pack(">BBIBHB", 0x2A, 0, 8, 0, 8, 0)
            pdus = [
                scsi_command(fua_write, itt=1, cmd_sn=1, edtl=4096, write=True, data=first),
                scsi_command(bytes(6), itt=2, cmd_sn=2),
                scsi_command(write, itt=3, cmd_sn=3, edtl=4096, write=True, data=second),
                scsi_command(bytes([0x35]) + bytes(9), itt=4, cmd_sn=4),
            ]
            client.writer.write(b"".join(encode_pdu(p) for p in pdus))
            answered = {}
            for _ in pdus:
                response = await client.recv()
                assert response is not None and response.opcode == Op.SCSI_RESPONSE
                answered[response.itt] = response.bhs[3]  # SCSI status
            assert answered == {1: 0, 2: 0, 3: 0, 4: 0}
            read = struct.pack(">BBIBHB", 0x28, 0, 0, 0, 16, 0)
            await client.send(scsi_command(read, itt=5, cmd_sn=5, edtl=8192, read=True))
            data = b""
            while True:
                pdu = await client.recv()
                assert pdu is not None and pdu.opcode == Op.DATA_IN
                data += pdu.data
                if pdu.bhs[1] & 0x01:
                    break
            assert data == first + second
            client.close()
    finally:
        await target.stop()
        backend.close()


def test_pipelined_commands_that_suspend_and_that_do_not(tmp_path: Path) -> None:
    path = str(tmp_path / "lun.img")
    asyncio.run(_test_pipelined_commands_that_suspend_and_that_do_not(path))


def test_keepalive_ping_then_drop_when_unanswered() -> None:
    asyncio.run(_test_keepalive_ping_then_drop_when_unanswered())


def test_login_timeout_closes_silent_connection() -> None:
    asyncio.run(_test_login_timeout_closes_silent_connection())


def test_several_sessions_at_once() -> None:
    asyncio.run(_test_several_sessions_at_once())


def test_session_reinstatement_closes_the_old_connection() -> None:
    asyncio.run(_test_session_reinstatement_closes_the_old_connection())


def test_remove_target_drops_its_sessions() -> None:
    asyncio.run(_test_remove_target_drops_its_sessions())
