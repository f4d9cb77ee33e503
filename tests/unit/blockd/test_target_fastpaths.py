"""The target's fast paths give the same answers as the general ones (sans-IO, no sockets).

- GOOD responses packed straight to bytes equal the Pdu builders' encoding.
- LogicalUnit's READ/WRITE (10/16) shortcut: for random CDBs, data lengths, LUNs and LU states
  (unit attention, SPC-2 or persistent reservation, unknown nexus, a held LBA range) its
  result and the backend's blocks equal those of the general dispatch (the shortcut disabled).
"""

from __future__ import annotations

import asyncio
import functools
import struct
from collections.abc import Awaitable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.backend import MemoryBackend
from blockd.iscsi import messages as m
from blockd.iscsi.pdu import encode_pdu
from blockd.scsi.lu import LogicalUnit
from blockd.scsi.sense import Asc, ScsiResult

BLOCKS = 256
A = "iqn.2026-01.org.cairn:a,i,0x800000000001"
B = "iqn.2026-01.org.cairn:b,i,0x800000000002"
u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)


@settings(max_examples=200, deadline=None)
@given(u32, u32, u32, u32, st.integers(min_value=-(1 << 20), max_value=1 << 20))
def test_packed_scsi_response_equals_the_builder(
    stat_sn: int, exp: int, max_sn: int, itt: int, residual: int
) -> None:
    seq = m.Seq(stat_sn, exp, max_sn)
    built = m.scsi_response(seq, itt=itt, status=0, residual=residual)
    assert m.scsi_response_good(seq, itt, residual) == encode_pdu(built)


@settings(max_examples=300, deadline=None)
@given(
    u32,
    u32,
    u32,
    u32,
    st.integers(min_value=1, max_value=9000),
    st.integers(min_value=0, max_value=20000),
    st.binary(min_size=8, max_size=8),
    st.sampled_from([512, 1001, 1002, 4096, 8192]),
)
def test_packed_data_in_equals_the_builder(
    stat_sn: int, exp: int, max_sn: int, itt: int, length: int, edtl: int, lun: bytes, seg: int
) -> None:
    """One or several Data-In PDUs (segments of ``seg`` bytes, any padding), the last with
    the status: the same bytes as the builder's PDUs."""
    seq = m.Seq(stat_sn, exp, max_sn)
    data = bytes(range(256)) * (length // 256) + bytes(length % 256)
    cmd = m.ScsiCommand(
        False, True, True, False, 0, 0, lun, itt, edtl, 1, 0, bytes(16), b"", bytes(48)
    )
    offsets = range(0, length, seg)
    built = [
        m.data_in(
            seq,
            itt=itt,
            data_sn=n,
            offset=offset,
            data=data[offset : offset + seg],
            final=offset + seg >= length,
            status=0 if offset + seg >= length else None,
            residual=edtl - length,
            lun_field=lun,
        )
        for n, offset in enumerate(offsets)
    ]
    packed = m.data_in_good_parts(seq, cmd, data, seg)
    assert b"".join(packed) == b"".join(encode_pdu(p) for p in built)
    assert all(len(part) <= max(seg, 48) for part in packed)


def _cdb(op: int, byte1: int, lba: int, count: int, control: int) -> bytes:
    if op < 0x80:
        return struct.pack(">BBIBHB", op, byte1, lba & 0xFFFFFFFF, 0, count & 0xFFFF, control)
    return struct.pack(">BBQIBB", op, byte1, lba, count, 0, control)


def _prepare(lu: LogicalUnit, state: str) -> None:
    """Put ``lu`` (seen by nexus A) into one of the states the shortcut must step aside for."""
    asyncio.run(lu.handle(bytes(6), b"", A))  # TEST UNIT READY: A is a known nexus
    if state == "unit_attention":
        lu.reset()
    elif state == "spc2_reserved_by_b":
        lu.spc2_holder = B
    elif state == "pr_reserved_by_b":
        key = bytes(8) + struct.pack(">Q", 7) + bytes(8)  # register key 7
        register = bytes([0x5F, 0x00]) + bytes(5) + struct.pack(">H", 24) + b"\x00"
        asyncio.run(lu.handle(register, key, B))
        reserve = bytes([0x5F, 0x01, 0x03]) + bytes(4) + struct.pack(">H", 24) + b"\x00"
        asyncio.run(lu.handle(reserve, struct.pack(">Q", 7) + bytes(16), B))
        assert lu.pr.holder is not None
    elif state == "range_held":
        lu.block.locks.try_acquire(0, BLOCKS)


async def _general(lu: LogicalUnit, cdb: bytes, data: bytes, nexus: str, lun: int) -> ScsiResult:
    async def no_shortcut(cdb: bytes, data_out: bytes | None, nexus: str) -> None:
        return None

    lu._read_write_fast = no_shortcut  # type: ignore[method-assign]
    return await lu.handle(cdb, data, nexus, lun)


def _run_both(
    cdb: bytes, data: bytes, nexus: str, lun: int, state: str, *, must_shortcut: bool = False
) -> None:
    """Run the command with and without the shortcut on equal LUs; compare the outcomes."""
    results = []
    blocks = []
    for shortcut in (True, False):
        backend = MemoryBackend(BLOCKS, 512, serial="fast0")
        lu = LogicalUnit(backend)
        asyncio.run(backend.write(0, bytes(range(256)) * 2 * 8))
        _prepare(lu, state)
        if shortcut and must_shortcut:

            async def no_general(cmd: object, lun: int) -> None:
                raise AssertionError("the general dispatch ran")

            lu._dispatch = no_general  # type: ignore[method-assign]
        run = lu.handle if shortcut else functools.partial(_general, lu)
        if state == "range_held":
            result = asyncio.run(_with_release(lu, run(cdb, data, nexus, lun)))
        else:
            result = asyncio.run(run(cdb, data, nexus, lun))
        results.append(result)
        blocks.append(asyncio.run(backend.read(0, BLOCKS)))
    assert results[0] == results[1]
    assert blocks[0] == blocks[1]


async def _with_release(lu: LogicalUnit, command: Awaitable[ScsiResult]) -> ScsiResult:
    """Run ``command`` while the whole LBA range is held; release it one iteration later (a
    write must wait for it, not fail)."""

    async def release_later() -> None:
        await asyncio.sleep(0)
        lu.block.locks.release((0, BLOCKS))

    releaser = asyncio.ensure_future(release_later())
    result = await command
    await releaser
    return result


@pytest.mark.parametrize("op", [0x28, 0x2A, 0x88, 0x8A])
@pytest.mark.parametrize("byte1", [0, 0x08])
@pytest.mark.parametrize("lba", [0, 1, BLOCKS - 8])
@pytest.mark.parametrize("count", [1, 8])
def test_plain_reads_and_writes_take_the_shortcut_with_the_same_result(
    op: int, byte1: int, lba: int, count: int
) -> None:
    data = bytes([0xA5]) * count * 512 if op & 0x02 else b""
    _run_both(_cdb(op, byte1, lba, count, 0), data, A, 0, "plain", must_shortcut=True)


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from([0x28, 0x2A, 0x88, 0x8A]),
    byte1=st.sampled_from([0, 0x08, 0x10, 0x20, 0xE0]),
    lba=st.sampled_from([0, 1, BLOCKS - 8, BLOCKS - 1, BLOCKS, 1 << 33]),
    count=st.sampled_from([0, 1, 8, 9, 1 << 20]),
    control=st.sampled_from([0, 0x04]),
    extra=st.sampled_from([0, -512, 512, -1]),
    lun=st.sampled_from([0, 1]),
    nexus=st.sampled_from([A, B]),
    state=st.sampled_from(
        ["plain", "unit_attention", "spc2_reserved_by_b", "pr_reserved_by_b", "range_held"]
    ),
)
def test_read_write_shortcut_matches_the_general_path(
    op: int,
    byte1: int,
    lba: int,
    count: int,
    control: int,
    extra: int,
    lun: int,
    nexus: str,
    state: str,
) -> None:
    """Any field, length or LU state: the same result and blocks as the general dispatch."""
    length = max(0, min(count, 64) * 512 + extra) if op & 0x02 else 0
    _run_both(_cdb(op, byte1, lba, count, control), bytes([0xA5]) * length, nexus, lun, state)


def test_shortcut_reports_a_backend_failure_like_the_general_path() -> None:
    class FailingBackend(MemoryBackend):
        """Fault injection: every read and write raises."""

        async def read(self, lba: int, count: int) -> bytes:
            raise OSError("injected read failure")

        async def write(self, lba: int, data: bytes, fua: bool = False) -> None:
            raise OSError("injected write failure")

    lu = LogicalUnit(FailingBackend(BLOCKS, 512, serial="fail0"))
    asyncio.run(lu.handle(bytes(6), b"", A))
    for cdb, data in ((_cdb(0x28, 0, 0, 8, 0), b""), (_cdb(0x8A, 0, 0, 8, 0), bytes(4096))):
        result = asyncio.run(lu.handle(cdb, data, A))
        assert result.status == 0x02
        assert (result.sense[2] & 0x0F, result.sense[12:14]) == (
            0x04,
            bytes(Asc.INTERNAL_TARGET_FAILURE),
        )
        assert result.data_out_bytes == len(data)


def test_try_acquire_refuses_an_overlap_only() -> None:
    lu = LogicalUnit(MemoryBackend(BLOCKS, 512, serial="lock0"))
    locks = lu.block.locks
    span = locks.try_acquire(10, 5)
    assert span == (10, 15)
    assert locks.try_acquire(14, 1) is None
    assert locks.try_acquire(15, 1) == (15, 16)
    locks.release(span)
    assert locks.try_acquire(14, 1) == (14, 15)
