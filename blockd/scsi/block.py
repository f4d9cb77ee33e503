"""SBC-3 data commands: READ/WRITE/VERIFY/WRITE AND VERIFY (6/10/12/16), WRITE SAME, UNMAP,
COMPARE AND WRITE, SYNCHRONIZE CACHE and GET LBA STATUS, over a BlockBackend."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from blockd.backend import BlockBackend
from blockd.scsi.inquiry import LuLimits
from blockd.scsi.sense import (
    Asc,
    ScsiError,
    SenseKey,
    invalid_cdb,
    invalid_param,
    lba_out_of_range,
    param_length_error,
)

__all__ = ["Command", "RangeLocks", "parse_lba_count"]

WRITE_CHUNK_BYTES = 1 << 20
LBA_STATUS_DESCRIPTORS_MAX = 64
INVALID_FIELD_IN_IU = (0x0E, 0x03)

_SIX = {0x08, 0x0A}
_TEN = {0x28, 0x2A, 0x2E, 0x2F, 0x34, 0x35, 0x41}
_TWELVE = {0xA8, 0xAA, 0xAE, 0xAF}
_SIXTEEN = {0x88, 0x8A, 0x8B, 0x8E, 0x8F, 0x90, 0x91, 0x93}


def parse_lba_count(cdb: bytes) -> tuple[int, int]:
    """(LBA, number of blocks) of a READ/WRITE-family CDB."""
    op = cdb[0]
    if op in _SIX:
        lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
        return lba, cdb[4] or 256
    if op in _TEN:
        return struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">H", cdb, 7)[0]
    if op in _TWELVE:
        lba, count = struct.unpack_from(">II", cdb, 2)
        return lba, count
    if op in _SIXTEEN:
        lba, count = struct.unpack_from(">QI", cdb, 2)
        return lba, count
    raise AssertionError(f"opcode {op:#04x} has no LBA/length fields")


@dataclass
class Command:
    """One command as the block layer sees it; ``data_out_bytes`` is set to what the CDB needs."""

    cdb: bytes
    data_out: bytes
    nexus: str
    data_out_bytes: int = 0

    def data_out_upto(self, length: int, block_size: int) -> bytes:
        """For WRITE-family commands: up to ``length`` bytes, cut to whole blocks.

        When the initiator sent fewer bytes than the CDB asks for (iSCSI overflow), only what
        arrived is written and the residual reports the rest (FCP-4 9.4.2, option a).
        """
        self.data_out_bytes = length
        usable = min(len(self.data_out), length)
        usable -= usable % block_size
        return self.data_out if usable == len(self.data_out) else self.data_out[:usable]

    def need_data_out(self, length: int) -> bytes:
        """The Data-Out bytes the CDB calls for; fewer than that is an overflow (FCP-4 9.4.2)."""
        self.data_out_bytes = length
        if len(self.data_out) < length:
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_IU)
        return self.data_out[:length]


class RangeLocks:
    """Exclusive locks on LBA ranges so COMPARE AND WRITE is atomic against other writes.

    Taking a free range does not wait (no lock object, no await); only an overlap waits, for
    the next release, and then checks again.
    """

    def __init__(self) -> None:
        self._held: list[tuple[int, int]] = []
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self, lba: int, count: int) -> tuple[int, int]:
        while (span := self.try_acquire(lba, count)) is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return span

    def try_acquire(self, lba: int, count: int) -> tuple[int, int] | None:
        """:meth:`acquire` without waiting: the span if the range is free now, else None."""
        span = (lba, lba + max(count, 1))
        if self._held and any(_overlap(span, held) for held in self._held):
            return None
        self._held.append(span)
        return span

    def release(self, span: tuple[int, int]) -> None:
        self._held.remove(span)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


class BlockCommands:
    """The data-path commands of one LU."""

    def __init__(self, backend: BlockBackend, limits: LuLimits) -> None:
        self.backend = backend
        self.limits = limits
        self.locks = RangeLocks()
        self.write_cache = True

    def _check_range(self, lba: int, count: int) -> None:
        if lba + count > self.backend.num_blocks or lba > self.backend.num_blocks:
            raise lba_out_of_range()

    def _check_transfer(self, count: int, field_byte: int) -> None:
        if count > self.limits.transfer_blocks_max(self.backend.block_size):
            raise invalid_cdb(field_byte)

    @staticmethod
    def _check_protect(cdb: bytes) -> None:
        if cdb[0] not in _SIX and cdb[1] & 0xE0:  # RD/WR/VRPROTECT without protection info
            raise invalid_cdb(1)

    async def read(self, cmd: Command) -> bytes:
        cdb = cmd.cdb
        lba, count = parse_lba_count(cdb)
        self._check_protect(cdb)
        self._check_range(lba, count)
        self._check_transfer(count, 4)
        if count == 0:
            return b""
        return await self.backend.read(lba, count)

    async def write(self, cmd: Command) -> None:
        cdb = cmd.cdb
        lba, count = parse_lba_count(cdb)
        self._check_protect(cdb)
        data = cmd.data_out_upto(count * self.backend.block_size, self.backend.block_size)
        self._check_range(lba, count)
        self._check_transfer(count, 4)
        if not data:
            return
        fua = (cdb[0] not in _SIX and bool(cdb[1] & 0x08)) or not self.write_cache
        if cdb[0] in (0x2E, 0xAE, 0x8E):  # WRITE AND VERIFY: the data must reach the medium
            fua = True
        await self._locked_write(lba, data, fua)

    async def _locked_write(self, lba: int, data: bytes, fua: bool) -> None:
        span = await self.locks.acquire(lba, len(data) // self.backend.block_size)
        try:
            await self.backend.write(lba, data, fua=fua)
        finally:
            self.locks.release(span)

    async def verify(self, cmd: Command) -> None:
        cdb = cmd.cdb
        lba, count = parse_lba_count(cdb)
        self._check_protect(cdb)
        bytchk = (cdb[1] >> 1) & 0x03
        if bytchk == 2:
            raise invalid_cdb(1)
        bs = self.backend.block_size
        expected = b""
        if bytchk == 1:
            expected = cmd.need_data_out(count * bs)
        elif bytchk == 3:
            expected = cmd.need_data_out(bs if count else 0) * count
        self._check_range(lba, count)
        self._check_transfer(count, 4)
        if not bytchk or count == 0:
            return
        actual = await self.backend.read(lba, count)
        _compare(expected, actual)

    async def sync_cache(self, cmd: Command) -> None:
        cdb = cmd.cdb
        lba, count = parse_lba_count(cdb)
        self._check_range(lba, count)
        await self.backend.flush()

    async def write_same(self, cmd: Command) -> None:
        cdb = cmd.cdb
        lba, count = parse_lba_count(cdb)
        flags = cdb[1]
        self._check_protect(cdb)
        if flags & 0x10 or (cdb[0] == 0x41 and flags & 0x01):  # ANCHOR, or NDOB in (10)
            raise invalid_cdb(1)
        ndob = cdb[0] == 0x93 and bool(flags & 0x01)
        bs = self.backend.block_size
        block = bytes(bs) if ndob else cmd.need_data_out(bs)
        self._check_range(lba, count)
        if count == 0 or count > self.limits.write_same_blocks_max:
            raise invalid_cdb(10 if cdb[0] == 0x93 else 7)
        if flags & 0x08 and not any(block):
            await self._locked_unmap(lba, count)
            return
        await self._write_repeated(lba, count, block)

    async def _write_repeated(self, lba: int, count: int, block: bytes) -> None:
        per_chunk = max(1, WRITE_CHUNK_BYTES // len(block))
        done = 0
        while done < count:
            step = min(per_chunk, count - done)
            await self._locked_write(lba + done, block * step, not self.write_cache)
            done += step

    async def _locked_unmap(self, lba: int, count: int) -> None:
        span = await self.locks.acquire(lba, count)
        try:
            await self.backend.unmap(lba, count)
        finally:
            self.locks.release(span)

    async def unmap(self, cmd: Command) -> None:
        cdb = cmd.cdb
        if cdb[1] & 0x01:  # ANCHOR
            raise invalid_cdb(1)
        length = struct.unpack_from(">H", cdb, 7)[0]
        data = cmd.need_data_out(length)
        if length == 0:
            return
        if length < 8:
            raise param_length_error()
        block_bytes = struct.unpack_from(">H", data, 2)[0]
        if block_bytes % 16 or 8 + block_bytes > length:
            raise param_length_error()
        if block_bytes // 16 > self.limits.unmap_descriptors_max:
            raise invalid_param(2)
        ranges = [struct.unpack_from(">QI", data, 8 + 16 * i) for i in range(block_bytes // 16)]
        for lba, count in ranges:
            self._check_range(lba, count)
            if count > self.limits.unmap_blocks_max:
                raise invalid_param()
        for lba, count in ranges:
            if count:
                await self._locked_unmap(lba, count)

    async def prefetch(self, cmd: Command) -> None:
        """PRE-FETCH: nothing to stage in memory ahead of time; check the range only."""
        lba, count = parse_lba_count(cmd.cdb)
        self._check_range(lba, count)

    async def or_write(self, cmd: Command) -> None:
        """ORWRITE (16): OR the Data-Out into the blocks, atomically per range."""
        cdb = cmd.cdb
        lba, count = parse_lba_count(cdb)
        self._check_protect(cdb)
        bs = self.backend.block_size
        data = cmd.need_data_out(count * bs)
        self._check_range(lba, count)
        self._check_transfer(count, 10)
        if count == 0:
            return
        span = await self.locks.acquire(lba, count)
        try:
            current = await self.backend.read(lba, count)
            merged = (int.from_bytes(current, "big") | int.from_bytes(data, "big")).to_bytes(
                len(data), "big"
            )
            fua = bool(cdb[1] & 0x08) or not self.write_cache
            await self.backend.write(lba, merged, fua=fua)
        finally:
            self.locks.release(span)

    async def compare_and_write(self, cmd: Command) -> None:
        cdb = cmd.cdb
        self._check_protect(cdb)
        lba = struct.unpack_from(">Q", cdb, 2)[0]
        count = cdb[13]
        bs = self.backend.block_size
        if count == 0 and cmd.data_out:
            raise invalid_cdb(13)  # Data-Out for zero blocks: the NLB field is wrong
        data = cmd.need_data_out(2 * count * bs)
        self._check_range(lba, count)
        if count > self.limits.compare_write_blocks_max:
            raise invalid_cdb(13)
        if count == 0:
            return
        span = await self.locks.acquire(lba, count)
        try:
            current = await self.backend.read(lba, count)
            _compare(data[: count * bs], current)
            fua = bool(cdb[1] & 0x08) or not self.write_cache
            await self.backend.write(lba, data[count * bs :], fua=fua)
        finally:
            self.locks.release(span)

    async def get_lba_status(self, cmd: Command) -> bytes:
        cdb = cmd.cdb
        lba = struct.unpack_from(">Q", cdb, 2)[0]
        alloc = struct.unpack_from(">I", cdb, 10)[0]
        if lba >= self.backend.num_blocks:
            raise lba_out_of_range()
        room = min(LBA_STATUS_DESCRIPTORS_MAX, max(1, (alloc - 8) // 16))
        descriptors: list[bytes] = []
        while len(descriptors) < room and lba < self.backend.num_blocks:
            mapped, run = await self.backend.is_mapped(lba)
            run = max(1, min(run, self.backend.num_blocks - lba, 0xFFFFFFFF))
            descriptors.append(struct.pack(">QIB3x", lba, run, 0 if mapped else 1))
            lba += run
        body = b"".join(descriptors)
        return struct.pack(">I4x", len(body) + 4) + body


def _compare(expected: bytes, actual: bytes) -> None:
    if expected == actual:
        return
    offset = next(i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b)
    raise ScsiError(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, info=offset)
