"""SCSI status codes, sense keys and fixed/descriptor format sense data (SPC-4 4.5)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["Asc", "ScsiError", "ScsiResult", "SenseKey", "Status", "sense_bytes"]


class Status(IntEnum):
    GOOD = 0x00
    CHECK_CONDITION = 0x02
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    TASK_ABORTED = 0x40


class SenseKey(IntEnum):
    NO_SENSE = 0x0
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    ABORTED_COMMAND = 0xB
    MISCOMPARE = 0xE


class Asc:
    """(ASC, ASCQ) pairs used by this target."""

    NONE = (0x00, 0x00)
    PARAMETER_LIST_LENGTH_ERROR = (0x1A, 0x00)
    INVALID_OPCODE = (0x20, 0x00)
    LBA_OUT_OF_RANGE = (0x21, 0x00)
    INVALID_FIELD_IN_CDB = (0x24, 0x00)
    LU_NOT_SUPPORTED = (0x25, 0x00)
    INVALID_FIELD_IN_PARAMETER_LIST = (0x26, 0x00)
    INVALID_RELEASE_OF_PR = (0x26, 0x04)
    SAVING_PARAMETERS_NOT_SUPPORTED = (0x39, 0x00)
    MISCOMPARE_DURING_VERIFY = (0x1D, 0x00)
    WRITE_ERROR = (0x0C, 0x00)
    UNRECOVERED_READ_ERROR = (0x11, 0x00)
    INTERNAL_TARGET_FAILURE = (0x44, 0x00)
    RESET_OCCURRED = (0x29, 0x00)
    LUN_RESET_OCCURRED = (0x29, 0x03)


class ScsiError(Exception):
    """A command ends in CHECK CONDITION with this sense (or another status, e.g. a conflict)."""

    def __init__(
        self,
        key: SenseKey,
        asc: tuple[int, int],
        *,
        info: int | None = None,
        field_byte: int | None = None,
        in_cdb: bool = True,
        status: Status = Status.CHECK_CONDITION,
    ) -> None:
        super().__init__(f"sense key {key.name} asc {asc[0]:02x}/{asc[1]:02x}")
        self.key = key
        self.asc = asc
        self.info = info
        self.field_byte = field_byte
        self.in_cdb = in_cdb
        self.status = status

    def sense(self, descriptor: bool = False) -> bytes:
        if self.status != Status.CHECK_CONDITION:
            return b""
        return sense_bytes(
            self.key,
            self.asc,
            info=self.info,
            field_byte=self.field_byte,
            in_cdb=self.in_cdb,
            descriptor=descriptor,
        )


def invalid_cdb(field_byte: int | None = None) -> ScsiError:
    return ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, field_byte=field_byte)


def invalid_param(field_byte: int | None = None) -> ScsiError:
    return ScsiError(
        SenseKey.ILLEGAL_REQUEST,
        Asc.INVALID_FIELD_IN_PARAMETER_LIST,
        field_byte=field_byte,
        in_cdb=False,
    )


def lba_out_of_range() -> ScsiError:
    return ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE)


def param_length_error() -> ScsiError:
    return ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR)


def conflict() -> ScsiError:
    return ScsiError(SenseKey.NO_SENSE, Asc.NONE, status=Status.RESERVATION_CONFLICT)


def sense_bytes(
    key: SenseKey,
    asc: tuple[int, int],
    *,
    info: int | None = None,
    field_byte: int | None = None,
    in_cdb: bool = True,
    descriptor: bool = False,
) -> bytes:
    """Fixed format (70h, 18 bytes) or descriptor format (72h) sense data."""
    sks = b""
    if field_byte is not None:
        sks = bytes([0x80 | (0x40 if in_cdb else 0)]) + struct.pack(">H", field_byte)
    if descriptor:
        body = b""
        if info is not None:
            body += bytes([0x00, 0x0A, 0x80, 0x00]) + struct.pack(">Q", info & (2**64 - 1))
        if sks:
            body += bytes([0x02, 0x06, 0x00, 0x00]) + sks + b"\x00"
        return bytes([0x72, key, asc[0], asc[1], 0, 0, 0, len(body)]) + body
    out = bytearray(18)
    out[0] = 0x70 | (0x80 if info is not None and info < 2**32 else 0)
    out[2] = key
    if info is not None and info < 2**32:
        out[3:7] = struct.pack(">I", info)
    out[7] = 10
    out[12], out[13] = asc
    if sks:
        out[15:18] = sks
    return bytes(out)


# Not frozen: treated as immutable, but frozen dataclass construction costs several times
# more and this is built once or more per SCSI command.
@dataclass(slots=True)
class ScsiResult:
    """The outcome of one command: status, Data-In bytes, sense (CHECK CONDITION only).

    ``data_out_bytes`` is how many Data-Out bytes the CDB called for (for residual counts).
    """

    status: int = Status.GOOD
    data: bytes = b""
    sense: bytes = b""
    data_out_bytes: int = 0
