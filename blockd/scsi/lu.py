"""One direct-access logical unit: ``handle(cdb, data_out)`` -> :class:`ScsiResult`, sans-IO.

The transport (iSCSI) hands over a complete CDB and all Data-Out bytes and gets back status,
Data-In and sense. It knows nothing about sockets; only the backend is awaited.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable

from blockd.backend import BlockBackend
from blockd.scsi import modes
from blockd.scsi.block import BlockCommands, Command
from blockd.scsi.inquiry import LuLimits, inquiry
from blockd.scsi.opcodes import SERVICE_ACTION_OPS, lookup, report_supported_opcodes
from blockd.scsi.pr import PrState, pr_in, pr_out
from blockd.scsi.sense import (
    Asc,
    ScsiError,
    ScsiResult,
    SenseKey,
    Status,
    conflict,
    invalid_cdb,
    sense_bytes,
)

__all__ = ["LogicalUnit", "LuLimits", "ScsiResult"]

log = logging.getLogger(__name__)

Handler = Callable[[Command], Awaitable[bytes | None]]


def _u16(cdb: bytes, offset: int) -> int:
    value: int = struct.unpack_from(">H", cdb, offset)[0]
    return value


def _u32(cdb: bytes, offset: int) -> int:
    value: int = struct.unpack_from(">I", cdb, offset)[0]
    return value


# Commands another I_T nexus may run while an SPC-2 (RESERVE(6)) reservation is held.
_SPC2_ALLOWED = frozenset({0x03, 0x12, 0x17, 0x5E, 0xA0, 0xA3})
# Commands that do not report (or clear) a pending unit attention: INQUIRY, REPORT LUNS, and
# REQUEST SENSE, which returns it as its data (SAM-5 5.14).
_UA_EXEMPT = frozenset({0x03, 0x12, 0xA0})
NEXUSES_TRACKED_MAX = 1024
_FAST_OPS = frozenset({0x28, 0x2A, 0x88, 0x8A})  # READ/WRITE (10) and (16)
_RW10 = struct.Struct(">IxH")  # LBA, (group), transfer length at byte 2
_RW16 = struct.Struct(">QI")

# Where each data-in command keeps its allocation length.
_ALLOCATION_LENGTH: dict[int, Callable[[bytes], int]] = {
    0x03: lambda c: c[4],
    0x12: lambda c: _u16(c, 3),
    0x1A: lambda c: c[4],
    0x5A: lambda c: _u16(c, 7),
    0x5E: lambda c: _u16(c, 7),
    0x9E: lambda c: _u32(c, 10),
    0xA0: lambda c: _u32(c, 6),
    0xA3: lambda c: _u32(c, 6),
}


class LogicalUnit:
    """LUN 0 of a target: SCSI block commands over a :class:`BlockBackend`."""

    def __init__(self, backend: BlockBackend, limits: LuLimits | None = None) -> None:
        self.backend = backend
        self.limits = limits or LuLimits()
        self.block = BlockCommands(backend, self.limits)
        self.modes = modes.ModeState()
        self.pr = PrState()
        self.spc2_holder: str | None = None  # RESERVE(6) holder (SPC-2 reservation)
        self._nexuses: dict[str, None] = {}  # I_T nexuses seen, oldest first (bounded)
        self._unit_attention: dict[str, tuple[int, int]] = {}
        self._handlers: dict[int, Handler] = self._build_handlers()
        self._block_bytes = backend.block_size
        self._transfer_blocks_max = self.limits.transfer_blocks_max(backend.block_size)

    def _build_handlers(self) -> dict[int, Handler]:
        b = self.block
        table: dict[int, Handler] = {
            0x00: self._nothing,
            0x03: self._request_sense,
            0x12: self._inquiry,
            0x15: self._mode_select,
            0x1A: self._mode_sense,
            0x1B: self._nothing,
            0x1E: self._nothing,
            0x16: self._reserve6,
            0x17: self._release6,
            0x34: _none(b.prefetch),
            0x8B: _none(b.or_write),
            0x90: _none(b.prefetch),
            0x25: self._read_capacity10,
            0x35: _none(b.sync_cache),
            0x41: _none(b.write_same),
            0x42: _none(b.unmap),
            0x55: self._mode_select,
            0x5A: self._mode_sense,
            0x5E: self._pr_in,
            0x5F: self._pr_out,
            0x89: _none(b.compare_and_write),
            0x91: _none(b.sync_cache),
            0x93: _none(b.write_same),
            0x9E: self._service_action_in,
            0xA0: self._report_luns,
            0xA3: self._maintenance_in,
        }
        for op in (0x08, 0x28, 0xA8, 0x88):
            table[op] = b.read
        for op in (0x0A, 0x2A, 0xAA, 0x8A, 0x2E, 0xAE, 0x8E):
            table[op] = _none(b.write)
        for op in (0x2F, 0xAF, 0x8F):
            table[op] = _none(b.verify)
        return table

    async def handle(
        self, cdb: bytes, data_out: bytes | None = None, nexus: str = "", lun: int = 0
    ) -> ScsiResult:
        """Run one command; never raises for bad input (that becomes CHECK CONDITION)."""
        if cdb and cdb[0] in _FAST_OPS and lun == 0:
            fast = await self._read_write_fast(cdb, data_out, nexus)
            if fast is not None:
                return fast
        cmd = Command(cdb=bytes(cdb), data_out=data_out or b"", nexus=nexus)
        try:
            data = await self._dispatch(cmd, lun)
        except ScsiError as exc:
            return ScsiResult(exc.status, b"", exc.sense(), cmd.data_out_bytes)
        except Exception:  # a backend failure must not kill the connection
            return _backend_failure(cdb[0] if cdb else -1, cmd.data_out_bytes)
        alloc = _ALLOCATION_LENGTH.get(cmd.cdb[0])
        if data and alloc is not None:
            data = data[: alloc(cmd.cdb)]
        return ScsiResult(Status.GOOD, data or b"", b"", cmd.data_out_bytes)

    async def _read_write_fast(
        self, cdb: bytes, data_out: bytes | None, nexus: str
    ) -> ScsiResult | None:
        """READ/WRITE (10) and (16) in the common case, without the general dispatch: a known
        nexus, no unit attention, reservation or PR holder, valid fields, an in-range nonzero
        transfer, all the write data, a free LBA range. None (nothing done) otherwise: the
        general path then handles the command, errors included."""
        op = cdb[0]
        if op < 0x80:  # READ(10) or WRITE(10)
            if len(cdb) < 10 or cdb[9] & 0x04:  # short, or NACA
                return None
            lba, count = _RW10.unpack_from(cdb, 2)
        else:
            if len(cdb) < 16 or cdb[15] & 0x04:
                return None
            lba, count = _RW16.unpack_from(cdb, 2)
        backend = self.backend
        if (
            cdb[1] & 0xE0  # RD/WRPROTECT
            or not count
            or lba + count > backend.num_blocks
            or count > self._transfer_blocks_max
            or self._unit_attention
            or self.spc2_holder is not None
            or self.pr.holder is not None
            or nexus not in self._nexuses
        ):
            return None
        if not op & 0x02:  # READ(10) or READ(16)
            try:
                data = await backend.read(lba, count)
            except ScsiError as exc:
                return ScsiResult(exc.status, b"", exc.sense(), 0)
            except Exception:
                return _backend_failure(op, 0)
            return ScsiResult(Status.GOOD, data, b"", 0)
        length = count * self._block_bytes
        if data_out is None or len(data_out) != length:
            return None
        span = self.block.locks.try_acquire(lba, count)
        if span is None:
            return None
        fua = bool(cdb[1] & 0x08) or not self.block.write_cache
        try:
            await backend.write(lba, data_out, fua=fua)
        except ScsiError as exc:
            return ScsiResult(exc.status, b"", exc.sense(), length)
        except Exception:
            return _backend_failure(op, length)
        finally:
            self.block.locks.release(span)
        return ScsiResult(Status.GOOD, b"", b"", length)

    async def _dispatch(self, cmd: Command, lun: int) -> bytes | None:
        cdb = cmd.cdb
        if len(cdb) < 6:
            raise invalid_cdb(0)
        info = lookup(cdb)
        if info is None:
            if cdb[0] in SERVICE_ACTION_OPS:
                raise invalid_cdb(1)
            raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_OPCODE)
        if len(cdb) < info.cdb_bytes:
            raise invalid_cdb(0)
        if lun != 0:
            return self._other_lun(cmd)
        if cdb[info.cdb_bytes - 1] & 0x04:  # NACA is not supported
            raise invalid_cdb(info.cdb_bytes - 1)
        self._note_nexus(cmd.nexus)
        ua = self._unit_attention.get(cmd.nexus)
        if ua is not None and cdb[0] not in _UA_EXEMPT:
            del self._unit_attention[cmd.nexus]
            raise ScsiError(SenseKey.UNIT_ATTENTION, ua)
        holder = self.spc2_holder
        if holder is not None and holder != cmd.nexus and cdb[0] not in _SPC2_ALLOWED:
            raise conflict()
        self.pr.check_access(cmd.nexus, info.access)
        return await self._handlers[cdb[0]](cmd)

    def _other_lun(self, cmd: Command) -> bytes | None:
        op = cmd.cdb[0]
        if op == 0x12:
            return inquiry(cmd.cdb, self.backend.serial, self.limits, lun_present=False)
        if op == 0xA0:
            return self._report_luns_data(cmd.cdb)
        if op == 0x03:
            return sense_bytes(SenseKey.ILLEGAL_REQUEST, Asc.LU_NOT_SUPPORTED)
        raise ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LU_NOT_SUPPORTED)

    async def _nothing(self, cmd: Command) -> None:
        return None

    def reset(self, *, target_reset: bool = False) -> None:
        """LUN RESET / target reset: SPC-2 reservations end (persistent ones stay) and every
        live I_T nexus gets a unit attention (29h/03h for a LUN reset, 29h/00h otherwise)."""
        self.spc2_holder = None
        asc = Asc.RESET_OCCURRED if target_reset else Asc.LUN_RESET_OCCURRED
        for nexus in self._nexuses:
            self._unit_attention[nexus] = asc

    def nexus_lost(self, nexus: str) -> None:
        """The I_T nexus ended (logout or connection loss): its SPC-2 reservation and unit
        attention end with it."""
        if self.spc2_holder == nexus:
            self.spc2_holder = None
        self._nexuses.pop(nexus, None)
        self._unit_attention.pop(nexus, None)

    def _note_nexus(self, nexus: str) -> None:
        if nexus in self._nexuses:
            return
        if len(self._nexuses) >= NEXUSES_TRACKED_MAX:
            oldest = next(iter(self._nexuses))
            self.nexus_lost(oldest)
        self._nexuses[nexus] = None

    async def _reserve6(self, cmd: Command) -> None:
        if cmd.cdb[1] & 0x1F:  # 3rdPty / extents (obsolete) are not supported
            raise invalid_cdb(1)
        if self.pr.keys or self.pr.holder is not None:
            raise conflict()  # SPC-4 5.12.3: RESERVE(6) conflicts with persistent reservations
        self.spc2_holder = cmd.nexus

    async def _release6(self, cmd: Command) -> None:
        if self.spc2_holder == cmd.nexus:
            self.spc2_holder = None

    async def _request_sense(self, cmd: Command) -> bytes:
        if cmd.cdb[1] & 0xFE:
            raise invalid_cdb(1)
        descriptor = bool(cmd.cdb[1] & 0x01)
        ua = self._unit_attention.pop(cmd.nexus, None)
        if ua is not None:
            return sense_bytes(SenseKey.UNIT_ATTENTION, ua, descriptor=descriptor)
        return sense_bytes(SenseKey.NO_SENSE, Asc.NONE, descriptor=descriptor)

    async def _inquiry(self, cmd: Command) -> bytes:
        return inquiry(
            cmd.cdb,
            self.backend.serial,
            self.limits,
            lun_present=True,
            block_size=self.backend.block_size,
        )

    async def _mode_sense(self, cmd: Command) -> bytes:
        self.modes.write_cache = self.block.write_cache
        return modes.mode_sense(
            self.modes,
            cmd.cdb,
            num_blocks=self.backend.num_blocks,
            block_size=self.backend.block_size,
            ten=cmd.cdb[0] == 0x5A,
        )

    async def _mode_select(self, cmd: Command) -> None:
        ten = cmd.cdb[0] == 0x55
        length = _u16(cmd.cdb, 7) if ten else cmd.cdb[4]
        data = cmd.need_data_out(length)
        modes.mode_select(self.modes, cmd.cdb, data, ten=ten)
        self.block.write_cache = self.modes.write_cache

    async def _read_capacity10(self, cmd: Command) -> bytes:
        if not cmd.cdb[8] & 0x01 and _u32(cmd.cdb, 2):
            raise invalid_cdb(2)
        last = min(self.backend.num_blocks - 1, 0xFFFFFFFF)
        return struct.pack(">II", last, self.backend.block_size)

    def _read_capacity16(self) -> bytes:
        data = bytearray(32)
        struct.pack_into(">QI", data, 0, self.backend.num_blocks - 1, self.backend.block_size)
        data[14] = 0x80 | 0x40  # LBPME (thin provisioning), LBPRZ (unmapped reads zeros)
        return bytes(data)

    async def _service_action_in(self, cmd: Command) -> bytes:
        if cmd.cdb[1] & 0x1F == 0x10:
            return self._read_capacity16()
        return await self.block.get_lba_status(cmd)

    async def _maintenance_in(self, cmd: Command) -> bytes:
        return report_supported_opcodes(cmd.cdb)

    async def _report_luns(self, cmd: Command) -> bytes:
        return self._report_luns_data(cmd.cdb)

    @staticmethod
    def _report_luns_data(cdb: bytes) -> bytes:
        if cdb[2] not in (0x00, 0x01, 0x02, 0x10, 0x11, 0x12) or _u32(cdb, 6) < 16:
            raise invalid_cdb(2 if cdb[2] > 2 else 6)
        return struct.pack(">I4x", 8) + bytes(8)

    async def _pr_in(self, cmd: Command) -> bytes:
        return pr_in(self.pr, cmd.cdb)

    async def _pr_out(self, cmd: Command) -> None:
        data = cmd.need_data_out(_u32(cmd.cdb, 5))
        pr_out(self.pr, cmd.nexus, cmd.cdb, data)


def _backend_failure(opcode: int, data_out_bytes: int) -> ScsiResult:
    """Log the exception being handled; CHECK CONDITION, HARDWARE ERROR."""
    log.exception("backend failure", extra={"fields": {"opcode": opcode}})
    sense = sense_bytes(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)
    return ScsiResult(Status.CHECK_CONDITION, b"", sense, data_out_bytes)


def _none(func: Callable[[Command], Awaitable[None]]) -> Handler:
    async def run(cmd: Command) -> bytes | None:
        await func(cmd)
        return None

    return run
