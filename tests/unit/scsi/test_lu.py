"""SCSI block commands against a real LogicalUnit on a MemoryBackend: data, sense, pages."""

from __future__ import annotations

import asyncio
import struct

import pytest

from blockd.backend import MemoryBackend
from blockd.scsi.lu import LogicalUnit
from blockd.scsi.sense import ScsiResult

BLOCKS = 1024
A = "iqn.2026-01.org.cairn:a,i,0x800000000001"
B = "iqn.2026-01.org.cairn:b,i,0x800000000002"


@pytest.fixture
def lu() -> LogicalUnit:
    return LogicalUnit(MemoryBackend(BLOCKS, 512, serial="unit-serial-1"))


def run(lu: LogicalUnit, cdb: bytes, data: bytes = b"", nexus: str = A, lun: int = 0) -> ScsiResult:
    return asyncio.run(lu.handle(cdb.ljust(6, b"\x00"), data, nexus, lun))


def sense_of(result: ScsiResult) -> tuple[int, int, int]:
    assert result.status == 0x02, result
    return result.sense[2] & 0x0F, result.sense[12], result.sense[13]


def rw10(op: int, lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", op, flags, lba, 0, blocks, 0)


def rw16(op: int, lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, flags, lba, blocks, 0, 0)


def test_write_read_all_sizes(lu: LogicalUnit) -> None:
    block = bytes(range(256)) * 2
    assert run(lu, bytes([0x0A, 0, 0, 5, 1, 0]), block).status == 0  # WRITE(6)
    assert run(lu, bytes([0x08, 0, 0, 5, 1, 0])).data == block  # READ(6)
    assert run(lu, rw10(0x2A, 6, 2), block * 2).status == 0
    assert run(lu, rw10(0x28, 5, 3)).data == block * 3
    twelve = struct.pack(">BBIIBB", 0xAA, 0, 9, 1, 0, 0)
    assert run(lu, twelve, block).status == 0
    assert run(lu, struct.pack(">BBIIBB", 0xA8, 0, 9, 1, 0, 0)).data == block
    assert run(lu, rw16(0x8A, BLOCKS - 1, 1, flags=0x08), block).status == 0  # FUA
    assert run(lu, rw16(0x88, BLOCKS - 1, 1)).data == block
    assert run(lu, rw10(0x2E, 20, 1), block).status == 0  # WRITE AND VERIFY
    assert run(lu, rw10(0x2F, 20, 1, flags=0x02), block).status == 0  # VERIFY BYTCHK=1


def test_read6_zero_length_means_256_blocks(lu: LogicalUnit) -> None:
    assert len(run(lu, bytes([0x08, 0, 0, 0, 0, 0])).data) == 256 * 512


def test_out_of_range_and_invalid_fields(lu: LogicalUnit) -> None:
    assert sense_of(run(lu, rw10(0x28, BLOCKS - 1, 2))) == (0x05, 0x21, 0x00)
    assert sense_of(run(lu, rw16(0x8A, BLOCKS, 1), bytes(512))) == (0x05, 0x21, 0x00)
    assert sense_of(run(lu, rw10(0x28, 0, 1, flags=0x20))) == (0x05, 0x24, 0x00)  # RDPROTECT
    assert sense_of(run(lu, bytes([0xC0, 0, 0, 0, 0, 0]))) == (0x05, 0x20, 0x00)
    assert sense_of(run(lu, bytes([0x9E, 0x1F]) + bytes(14))) == (0x05, 0x24, 0x00)
    result = run(lu, rw10(0x28, BLOCKS - 1, 2))
    assert result.sense[0] == 0x70 and result.sense[7] == 10  # fixed format, 18 bytes
    assert sense_of(run(lu, bytes([0, 0, 0, 0, 0, 0x04]))) == (0x05, 0x24, 0x00)  # NACA


def test_write_overflow_writes_only_what_arrived(lu: LogicalUnit) -> None:
    result = run(lu, rw10(0x2A, 0, 2), b"b" * 512)
    assert result.status == 0 and result.data_out_bytes == 1024
    assert run(lu, rw10(0x28, 0, 2)).data == b"b" * 512 + bytes(512)


def test_verify_miscompare(lu: LogicalUnit) -> None:
    run(lu, rw10(0x2A, 3, 1), b"a" * 512)
    result = run(lu, rw10(0x2F, 3, 1, flags=0x02), b"a" * 100 + b"x" + b"a" * 411)
    assert sense_of(result) == (0x0E, 0x1D, 0x00)
    assert struct.unpack_from(">I", result.sense, 3)[0] == 100


def test_compare_and_write(lu: LogicalUnit) -> None:
    run(lu, rw10(0x2A, 7, 1), b"o" * 512)
    cdb = struct.pack(">BBQ3xBBB", 0x89, 0, 7, 1, 0, 0)
    assert run(lu, cdb, b"o" * 512 + b"n" * 512).status == 0
    assert run(lu, rw10(0x28, 7, 1)).data == b"n" * 512
    assert sense_of(run(lu, cdb, b"o" * 512 + b"z" * 512))[0] == 0x0E
    assert run(lu, rw10(0x28, 7, 1)).data == b"n" * 512


def test_unmap_write_same_and_lba_status(lu: LogicalUnit) -> None:
    run(lu, rw10(0x2A, 0, 4), b"d" * 2048)
    descriptor = struct.pack(">QI4x", 1, 2)
    params = struct.pack(">HH4x", 6 + 16, 16) + descriptor
    assert run(lu, struct.pack(">BB5xHB", 0x42, 0, len(params), 0), params).status == 0
    assert run(lu, rw10(0x28, 0, 4)).data == b"d" * 512 + bytes(1024) + b"d" * 512
    status = run(lu, struct.pack(">BBQIBB", 0x9E, 0x12, 0, 64, 0, 0)).data
    (length,) = struct.unpack_from(">I", status)
    entries = [struct.unpack_from(">QIB", status, 8 + 16 * i) for i in range((length - 4) // 16)]
    assert entries[:3] == [(0, 1, 0), (1, 2, 1), (3, 1, 0)]
    ws = struct.pack(">BBIBHB", 0x41, 0, 100, 0, 8, 0)
    assert run(lu, ws, b"w" * 512).status == 0
    assert run(lu, rw10(0x28, 100, 8)).data == b"w" * 4096
    ws_unmap = struct.pack(">BBQIBB", 0x93, 0x08, 100, 8, 0, 0)
    assert run(lu, ws_unmap, bytes(512)).status == 0
    assert run(lu, rw10(0x28, 100, 8)).data == bytes(4096)
    assert sense_of(run(lu, struct.pack(">BBIBHB", 0x41, 0, 0, 0, 0, 0), bytes(512)))[1] == 0x24
    bad = struct.pack(">HH4x", 6 + 16, 16) + struct.pack(">QI4x", BLOCKS, 1)
    assert sense_of(run(lu, struct.pack(">BB5xHB", 0x42, 0, len(bad), 0), bad))[1] == 0x21


def test_inquiry_and_vpd_pages(lu: LogicalUnit) -> None:
    std = run(lu, bytes([0x12, 0, 0, 0, 96, 0])).data
    assert std[0] == 0 and std[2] == 6 and std[8:16] == b"CAIRN   "
    assert len(run(lu, bytes([0x12, 0, 0, 0, 5, 0])).data) == 5  # allocation length
    pages = run(lu, bytes([0x12, 1, 0, 0, 255, 0])).data
    assert list(pages[4:]) == [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
    assert run(lu, bytes([0x12, 1, 0x80, 0, 255, 0])).data[4:] == b"unit-serial-1"
    ids = run(lu, bytes([0x12, 1, 0x83, 0, 255, 0])).data
    assert ids[5] & 0x0F == 3 and ids[8] >> 4 == 6  # first designator: NAA 6
    limits = run(lu, bytes([0x12, 1, 0xB0, 0, 255, 0])).data
    assert struct.unpack_from(">I", limits, 20)[0] > 0  # MAXIMUM UNMAP LBA COUNT
    lbp = run(lu, bytes([0x12, 1, 0xB2, 0, 255, 0])).data
    assert lbp[5] & 0xC0 == 0xC0  # LBPU, LBPWS
    assert sense_of(run(lu, bytes([0x12, 1, 0x99, 0, 255, 0])))[1] == 0x24
    assert sense_of(run(lu, bytes([0x12, 0, 0x80, 0, 255, 0])))[1] == 0x24
    other = run(lu, bytes([0x12, 0, 0, 0, 96, 0]), lun=3).data
    assert other[0] == 0x7F
    assert sense_of(run(lu, bytes(6), lun=3))[1] == 0x25


def test_capacity_and_report_luns(lu: LogicalUnit) -> None:
    assert run(lu, bytes(10).replace(b"\x00", b"\x25", 1)).data == struct.pack(
        ">II", BLOCKS - 1, 512
    )
    rc16 = run(lu, struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)).data
    assert struct.unpack_from(">QI", rc16) == (BLOCKS - 1, 512) and rc16[14] & 0x80
    luns = run(lu, struct.pack(">BxxxxxIxx", 0xA0, 64)).data
    assert luns == struct.pack(">I4x", 8) + bytes(8)


def test_mode_sense_and_select(lu: LogicalUnit) -> None:
    all6 = run(lu, bytes([0x1A, 0, 0x3F, 0, 255, 0])).data
    assert all6[0] == len(all6) - 1 and all6[3] == 8  # one block descriptor
    caching = run(lu, bytes([0x1A, 0x08, 0x08, 0, 255, 0])).data
    assert caching[4] == 0x08 and caching[6] & 0x04  # WCE on
    page = bytearray(caching[4:])
    page[2] &= ~0x04
    params = bytes(4) + bytes(page)
    assert run(lu, bytes([0x15, 0x10, 0, 0, len(params), 0]), params).status == 0
    assert not run(lu, bytes([0x1A, 0x08, 0x08, 0, 255, 0])).data[6] & 0x04
    ten = run(lu, struct.pack(">BBBB3xHB", 0x5A, 0x10, 0x0A, 0, 255, 0)).data
    assert ten[4] & 0x01 and struct.unpack_from(">H", ten, 6)[0] == 16  # long LBA descriptor
    assert sense_of(run(lu, bytes([0x1A, 0, 0x3F | 0xC0, 0, 255, 0])))[1] == 0x39
    assert sense_of(run(lu, bytes([0x1A, 0, 0x19, 0, 255, 0])))[1] == 0x24


def test_report_supported_opcodes(lu: LogicalUnit) -> None:
    all_ops = run(lu, struct.pack(">BBBBHIBB", 0xA3, 0x0C, 0, 0, 0, 4096, 0, 0)).data
    (length,) = struct.unpack_from(">I", all_ops)
    ops = {all_ops[4 + 8 * i] for i in range(length // 8)}
    assert {0x28, 0x2A, 0x89, 0x42, 0x9E} <= ops
    one = run(lu, struct.pack(">BBBBHIBB", 0xA3, 0x0C, 1, 0x28, 0, 64, 0, 0)).data
    assert one[1] & 0x07 == 3 and one[4] == 0x28
    missing = run(lu, struct.pack(">BBBBHIBB", 0xA3, 0x0C, 1, 0xC0, 0, 64, 0, 0)).data
    assert missing[1] & 0x07 == 1


def pr_out(lu: LogicalUnit, nexus: str, action: int, key: int, sa_key: int, rtype: int = 0):
    params = struct.pack(">QQ8x", key, sa_key)
    cdb = struct.pack(">BBB2xIB", 0x5F, action, rtype, 24, 0)
    return run(lu, cdb, params, nexus=nexus)


def pr_in(lu: LogicalUnit, action: int) -> bytes:
    return run(lu, struct.pack(">BB5xHB", 0x5E, action, 512, 0)).data


def test_persistent_reservations(lu: LogicalUnit) -> None:
    assert pr_out(lu, A, 0, 0, 0xAA).status == 0  # register
    assert pr_out(lu, B, 0, 0, 0xBB).status == 0
    keys = pr_in(lu, 0)
    assert struct.unpack_from(">IIQQ", keys) == (2, 16, 0xAA, 0xBB)
    assert pr_out(lu, A, 1, 0xAA, 0, rtype=1).status == 0  # reserve WRITE EXCLUSIVE
    assert pr_in(lu, 1)[8:16] == struct.pack(">Q", 0xAA)
    assert run(lu, rw10(0x2A, 0, 1), bytes(512), nexus=B).status == 0x18  # conflict
    assert run(lu, rw10(0x28, 0, 1), nexus=B).status == 0  # reads are allowed
    assert run(lu, rw10(0x2A, 0, 1), bytes(512), nexus=A).status == 0
    assert pr_out(lu, B, 1, 0xBB, 0, rtype=1).status == 0x18  # someone else holds it
    assert pr_out(lu, B, 0, 0x99, 0xCC).status == 0x18  # wrong key
    assert sense_of(pr_out(lu, A, 2, 0xAA, 0, rtype=3))[1:] == (0x26, 0x04)  # wrong type
    assert pr_out(lu, B, 4, 0xBB, 0xAA, rtype=3).status == 0  # B preempts A
    assert run(lu, rw10(0x28, 0, 1), nexus=A).status == 0x18  # EXCLUSIVE ACCESS now
    assert struct.unpack_from(">IIQ", pr_in(lu, 0))[1:] == (8, 0xBB)
    assert pr_out(lu, B, 3, 0xBB, 0).status == 0  # clear
    assert pr_in(lu, 1)[4:8] == bytes(4)
    assert run(lu, rw10(0x28, 0, 1), nexus=A).status == 0
    caps = pr_in(lu, 2)
    assert caps[1] == 8
    assert sense_of(run(lu, struct.pack(">BB5xHB", 0x5E, 9, 512, 0)))[1] == 0x24


def test_spc2_reserve_release_and_resets(lu: LogicalUnit) -> None:
    assert run(lu, bytes([0x16, 0, 0, 0, 0, 0]), nexus=A).status == 0
    assert run(lu, bytes([0x16, 0, 0, 0, 0, 0]), nexus=A).status == 0  # again: fine
    assert run(lu, bytes([0x16, 0, 0, 0, 0, 0]), nexus=B).status == 0x18
    assert run(lu, rw10(0x28, 0, 1), nexus=B).status == 0x18
    assert run(lu, bytes([0x12, 0, 0, 0, 36, 0]), nexus=B).status == 0  # INQUIRY allowed
    assert run(lu, bytes([0x17, 0, 0, 0, 0, 0]), nexus=B).status == 0  # not the holder: no-op
    assert run(lu, rw10(0x28, 0, 1), nexus=B).status == 0x18
    lu.nexus_lost(A)
    assert run(lu, rw10(0x28, 0, 1), nexus=B).status == 0
    assert run(lu, bytes([0x16, 0, 0, 0, 0, 0]), nexus=B).status == 0
    lu.reset()
    assert sense_of(run(lu, bytes(6), nexus=B))[0] == 0x06  # B was live: unit attention
    assert run(lu, bytes([0x16, 0, 0, 0, 0, 0]), nexus=A).status == 0  # reset released B's
    assert pr_out(lu, B, 0, 0, 0xBB).status == 0x18  # PR OUT conflicts with the holder


def test_unit_attention_after_reset(lu: LogicalUnit) -> None:
    assert run(lu, bytes(6), nexus=A).status == 0
    assert run(lu, bytes(6), nexus=B).status == 0
    lu.reset()
    assert run(lu, bytes([0x12, 0, 0, 0, 36, 0]), nexus=A).status == 0  # INQUIRY: exempt
    assert sense_of(run(lu, bytes(6), nexus=A)) == (0x06, 0x29, 0x03)
    assert run(lu, bytes(6), nexus=A).status == 0  # reported once
    sense = run(lu, bytes([0x03, 0, 0, 0, 18, 0]), nexus=B).data  # REQUEST SENSE takes it
    assert (sense[2], sense[12], sense[13]) == (0x06, 0x29, 0x03)
    assert run(lu, bytes(6), nexus=B).status == 0


def test_prefetch_and_orwrite(lu: LogicalUnit) -> None:
    assert run(lu, rw10(0x34, 0, 8)).status == 0
    assert sense_of(run(lu, rw16(0x90, BLOCKS, 1)))[1] == 0x21
    run(lu, rw10(0x2A, 4, 1), b"\x0f" * 512)
    assert run(lu, rw16(0x8B, 4, 1), b"\xf0" * 512).status == 0
    assert run(lu, rw10(0x28, 4, 1)).data == b"\xff" * 512


def test_range_locks_serialise_overlaps_only() -> None:
    from blockd.scsi.block import RangeLocks

    async def scenario() -> list[str]:
        locks = RangeLocks()
        order: list[str] = []
        first = await locks.acquire(0, 8)
        other = await locks.acquire(8, 8)  # disjoint: no wait

        async def overlapping() -> None:
            span = await locks.acquire(4, 2)
            order.append("overlap acquired")
            locks.release(span)

        waiter = asyncio.create_task(overlapping())
        await asyncio.sleep(0)
        order.append("first released")
        locks.release(first)
        await waiter
        locks.release(other)
        return order

    assert asyncio.run(scenario()) == ["first released", "overlap acquired"]
