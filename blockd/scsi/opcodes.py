"""The supported command table: CDB lengths, reservation access classes, and
REPORT SUPPORTED OPERATION CODES (SPC-4 6.35)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from blockd.scsi.pr import AccessKind
from blockd.scsi.sense import invalid_cdb

__all__ = ["OPCODES", "OpInfo", "report_supported_opcodes"]

NOMINAL_TIMEOUT_S = 30
RECOMMENDED_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class OpInfo:
    name: str
    cdb_bytes: int
    access: str
    service_action: int | None = None


# (opcode, service action) -> info
OPCODES: dict[tuple[int, int | None], OpInfo] = {
    (0x00, None): OpInfo("TEST UNIT READY", 6, AccessKind.ALWAYS),
    (0x03, None): OpInfo("REQUEST SENSE", 6, AccessKind.ALWAYS),
    (0x08, None): OpInfo("READ(6)", 6, AccessKind.READ),
    (0x0A, None): OpInfo("WRITE(6)", 6, AccessKind.WRITE),
    (0x12, None): OpInfo("INQUIRY", 6, AccessKind.ALWAYS),
    (0x15, None): OpInfo("MODE SELECT(6)", 6, AccessKind.WRITE),
    (0x1A, None): OpInfo("MODE SENSE(6)", 6, AccessKind.READ),
    (0x1B, None): OpInfo("START STOP UNIT", 6, AccessKind.WRITE),
    (0x1E, None): OpInfo("PREVENT ALLOW MEDIUM REMOVAL", 6, AccessKind.WRITE),
    (0x25, None): OpInfo("READ CAPACITY(10)", 10, AccessKind.ALWAYS),
    (0x28, None): OpInfo("READ(10)", 10, AccessKind.READ),
    (0x2A, None): OpInfo("WRITE(10)", 10, AccessKind.WRITE),
    (0x2E, None): OpInfo("WRITE AND VERIFY(10)", 10, AccessKind.WRITE),
    (0x2F, None): OpInfo("VERIFY(10)", 10, AccessKind.READ),
    (0x16, None): OpInfo("RESERVE(6)", 6, AccessKind.WRITE),
    (0x17, None): OpInfo("RELEASE(6)", 6, AccessKind.WRITE),
    (0x34, None): OpInfo("PRE-FETCH(10)", 10, AccessKind.READ),
    (0x35, None): OpInfo("SYNCHRONIZE CACHE(10)", 10, AccessKind.WRITE),
    (0x41, None): OpInfo("WRITE SAME(10)", 10, AccessKind.WRITE),
    (0x42, None): OpInfo("UNMAP", 10, AccessKind.WRITE),
    (0x55, None): OpInfo("MODE SELECT(10)", 10, AccessKind.WRITE),
    (0x5A, None): OpInfo("MODE SENSE(10)", 10, AccessKind.READ),
    (0x5E, 0x00): OpInfo("PERSISTENT RESERVE IN", 10, AccessKind.ALWAYS, 0x00),
    (0x5E, 0x01): OpInfo("PERSISTENT RESERVE IN", 10, AccessKind.ALWAYS, 0x01),
    (0x5E, 0x02): OpInfo("PERSISTENT RESERVE IN", 10, AccessKind.ALWAYS, 0x02),
    (0x5E, 0x03): OpInfo("PERSISTENT RESERVE IN", 10, AccessKind.ALWAYS, 0x03),
    (0x5F, 0x00): OpInfo("PERSISTENT RESERVE OUT", 10, AccessKind.ALWAYS, 0x00),
    (0x5F, 0x01): OpInfo("PERSISTENT RESERVE OUT", 10, AccessKind.ALWAYS, 0x01),
    (0x5F, 0x02): OpInfo("PERSISTENT RESERVE OUT", 10, AccessKind.ALWAYS, 0x02),
    (0x5F, 0x03): OpInfo("PERSISTENT RESERVE OUT", 10, AccessKind.ALWAYS, 0x03),
    (0x5F, 0x04): OpInfo("PERSISTENT RESERVE OUT", 10, AccessKind.ALWAYS, 0x04),
    (0x5F, 0x05): OpInfo("PERSISTENT RESERVE OUT", 10, AccessKind.ALWAYS, 0x05),
    (0x5F, 0x06): OpInfo("PERSISTENT RESERVE OUT", 10, AccessKind.ALWAYS, 0x06),
    (0x88, None): OpInfo("READ(16)", 16, AccessKind.READ),
    (0x89, None): OpInfo("COMPARE AND WRITE", 16, AccessKind.WRITE),
    (0x8A, None): OpInfo("WRITE(16)", 16, AccessKind.WRITE),
    (0x8B, None): OpInfo("ORWRITE(16)", 16, AccessKind.WRITE),
    (0x8E, None): OpInfo("WRITE AND VERIFY(16)", 16, AccessKind.WRITE),
    (0x8F, None): OpInfo("VERIFY(16)", 16, AccessKind.READ),
    (0x90, None): OpInfo("PRE-FETCH(16)", 16, AccessKind.READ),
    (0x91, None): OpInfo("SYNCHRONIZE CACHE(16)", 16, AccessKind.WRITE),
    (0x93, None): OpInfo("WRITE SAME(16)", 16, AccessKind.WRITE),
    (0x9E, 0x10): OpInfo("READ CAPACITY(16)", 16, AccessKind.ALWAYS, 0x10),
    (0x9E, 0x12): OpInfo("GET LBA STATUS", 16, AccessKind.READ, 0x12),
    (0xA0, None): OpInfo("REPORT LUNS", 12, AccessKind.ALWAYS),
    (0xA3, 0x0C): OpInfo("REPORT SUPPORTED OPERATION CODES", 12, AccessKind.ALWAYS, 0x0C),
    (0xA8, None): OpInfo("READ(12)", 12, AccessKind.READ),
    (0xAA, None): OpInfo("WRITE(12)", 12, AccessKind.WRITE),
    (0xAE, None): OpInfo("WRITE AND VERIFY(12)", 12, AccessKind.WRITE),
    (0xAF, None): OpInfo("VERIFY(12)", 12, AccessKind.READ),
}
SERVICE_ACTION_OPS = frozenset(op for op, sa in OPCODES if sa is not None)


def lookup(cdb: bytes) -> OpInfo | None:
    op = cdb[0]
    if op in SERVICE_ACTION_OPS:
        return OPCODES.get((op, cdb[1] & 0x1F))
    return OPCODES.get((op, None))


def _usage(op: int, info: OpInfo) -> bytes:
    """CDB usage data: which bits of each CDB byte the device server looks at."""
    usage = bytearray(b"\xff" * info.cdb_bytes)
    usage[0] = op
    if info.service_action is not None:
        usage[1] = info.service_action
    usage[-1] = 0x00  # control byte: NACA/LINK not supported
    return bytes(usage)


def _timeouts() -> bytes:
    return struct.pack(">HBBII", 0x0A, 0, 0, NOMINAL_TIMEOUT_S, RECOMMENDED_TIMEOUT_S)


def report_supported_opcodes(cdb: bytes) -> bytes:
    """REPORT SUPPORTED OPERATION CODES data (before allocation-length truncation)."""
    options, rctd = cdb[2] & 0x07, bool(cdb[2] & 0x80)
    if options == 0:
        out = []
        for (op, sa), info in OPCODES.items():
            flags = (0x01 if sa is not None else 0) | (0x02 if rctd else 0)
            out.append(struct.pack(">BxHxBH", op, sa or 0, flags, info.cdb_bytes))
            if rctd:
                out.append(_timeouts())
        body = b"".join(out)
        return struct.pack(">I", len(body)) + body
    if options not in (1, 2, 3):
        raise invalid_cdb(2)
    op, sa = cdb[3], struct.unpack_from(">H", cdb, 4)[0]
    has_sa = op in SERVICE_ACTION_OPS
    if (options == 1 and has_sa) or (options == 2 and not has_sa):
        raise invalid_cdb(2)
    found = OPCODES.get((op, sa if has_sa else None))
    if found is None:
        return bytes([0, 0x01, 0, 0])  # SUPPORT = 001b: not supported
    support = 0x03 | (0x80 if rctd else 0)
    usage = _usage(op, found)
    body = bytes([0, support]) + struct.pack(">H", len(usage)) + usage
    return body + (_timeouts() if rctd else b"")
