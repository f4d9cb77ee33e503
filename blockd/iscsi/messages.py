"""Typed initiator requests decoded from PDUs, and builders for the target's PDUs.

Each ``decode_*`` validates the fields it reads and raises :class:`ProtocolError` with the Reject
reason INVALID_PDU_FIELD on bad values. Builders take the sequence numbers explicitly; the
connection state machine owns them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from blockd.iscsi.pdu import (
    BHS_STRUCT,
    RESERVED_TAG,
    Op,
    Pdu,
    ProtocolError,
    RejectReason,
    build_bhs,
)

__all__ = [
    "DataOut",
    "LoginRequest",
    "LogoutRequest",
    "NopOut",
    "ScsiCommand",
    "Seq",
    "TaskMgmtRequest",
    "TextRequest",
    "decode_lun",
    "encode_lun",
]

AHS_EXTENDED_CDB = 1
AHS_BIDI_READ_LENGTH = 2
CDB_BYTES_MAX = 260
NO_SUCH_LUN = 0xFFFF
GOOD = 0x00
# byte 0, flags, LUN, ITT, EDTL, CmdSN, ExpStatSN, CDB: the whole BHS of a SCSI Command
_SCSI_COMMAND = struct.Struct(">BB6x8sIIII16s")
_LUN_ZERO = bytes(8)


def _bad(message: str, pdu: Pdu) -> ProtocolError:
    return ProtocolError(message, RejectReason.INVALID_PDU_FIELD, pdu.bhs)


def decode_lun(field: bytes) -> int:
    """The LUN number of an 8-byte SAM LUN field (peripheral or flat addressing, one level)."""
    method = field[0] >> 6
    if method in (0, 1) and not any(field[2:]):
        return ((field[0] & 0x3F) << 8) | field[1]
    return NO_SUCH_LUN


def encode_lun(lun: int) -> bytes:
    """The 8-byte LUN field for ``lun`` (peripheral addressing below 256, flat above)."""
    if lun < 256:
        return bytes([0, lun]) + bytes(6)
    return bytes([0x40 | (lun >> 8), lun & 0xFF]) + bytes(6)


# Not frozen: treated as immutable, but frozen dataclass construction costs several times
# more and this is built once or more per SCSI command.
@dataclass(slots=True)
class Seq:
    """The sequence numbers a target PDU carries."""

    stat_sn: int
    exp_cmd_sn: int
    max_cmd_sn: int


# Not frozen: treated as immutable, but frozen dataclass construction costs several times
# more and this is built once or more per SCSI command.
@dataclass(slots=True)
class ScsiCommand:
    immediate: bool
    final: bool
    read: bool
    write: bool
    attr: int
    lun: int
    lun_field: bytes
    itt: int
    edtl: int
    cmd_sn: int
    exp_stat_sn: int
    cdb: bytes
    data: bytes
    bhs: bytes


def decode_scsi_command(pdu: Pdu) -> ScsiCommand:
    bhs = pdu.bhs
    byte0, flags, lun_field, itt, edtl, cmd_sn, exp_stat_sn, cdb = _SCSI_COMMAND.unpack(bhs)
    if flags & 0x18:
        raise _bad("reserved flag bits set in SCSI Command", pdu)
    if pdu.ahs:
        cdb = _extended_cdb(pdu, cdb)
    read, write = bool(flags & 0x40), bool(flags & 0x20)
    if not read and not write and edtl:
        raise _bad("ExpectedDataTransferLength without R or W bit", pdu)
    if pdu.data and not write:
        raise _bad("immediate data on a command without the W bit", pdu)
    lun = 0 if lun_field == _LUN_ZERO else decode_lun(lun_field)
    return ScsiCommand(
        bool(byte0 & 0x40), bool(flags & 0x80), read, write, flags & 0x07, lun, lun_field,
        itt, edtl, cmd_sn, exp_stat_sn, cdb, pdu.data, bhs,
    )  # fmt: skip


def _extended_cdb(pdu: Pdu, cdb: bytes) -> bytes:
    """The CDB with its Extended CDB AHS appended (other AHS than bidirectional read length
    are a protocol error)."""
    ahs = pdu.ahs
    while ahs:
        if len(ahs) < 4:
            raise _bad("truncated AHS", pdu)
        length = struct.unpack_from(">H", ahs)[0]
        kind = ahs[2]
        body_end = 3 + length
        if body_end > len(ahs):
            raise _bad("AHS length runs past the header", pdu)
        if kind == AHS_EXTENDED_CDB:
            cdb = cdb + ahs[4:body_end]
        elif kind != AHS_BIDI_READ_LENGTH:
            raise _bad(f"unknown AHS type {kind}", pdu)
        ahs = ahs[body_end + (-body_end % 4) :]
    if len(cdb) > CDB_BYTES_MAX:
        raise _bad("CDB too long", pdu)
    return bytes(cdb)


# Not frozen: treated as immutable, but frozen dataclass construction costs several times
# more and this is built once or more per SCSI command.
@dataclass(slots=True)
class DataOut:
    final: bool
    lun_field: bytes
    itt: int
    ttt: int
    exp_stat_sn: int
    data_sn: int
    offset: int
    data: bytes
    bhs: bytes


def decode_data_out(pdu: Pdu) -> DataOut:
    if pdu.ahs:
        raise _bad("Data-Out carries no AHS", pdu)
    return DataOut(
        final=pdu.final,
        lun_field=pdu.lun_field,
        itt=pdu.itt,
        ttt=pdu.u32(20),
        exp_stat_sn=pdu.u32(28),
        data_sn=pdu.u32(36),
        offset=pdu.u32(40),
        data=pdu.data,
        bhs=pdu.bhs,
    )


# Not frozen: treated as immutable, but frozen dataclass construction costs several times
# more and this is built once or more per SCSI command.
@dataclass(slots=True)
class NopOut:
    immediate: bool
    lun_field: bytes
    itt: int
    ttt: int
    cmd_sn: int
    exp_stat_sn: int
    data: bytes


def decode_nop_out(pdu: Pdu) -> NopOut:
    if not pdu.final:
        raise _bad("NOP-Out without the F bit", pdu)
    nop = NopOut(
        immediate=pdu.immediate,
        lun_field=pdu.lun_field,
        itt=pdu.itt,
        ttt=pdu.u32(20),
        cmd_sn=pdu.u32(24),
        exp_stat_sn=pdu.u32(28),
        data=pdu.data,
    )
    if nop.itt == RESERVED_TAG and nop.ttt == RESERVED_TAG:
        raise _bad("NOP-Out with both ITT and TTT reserved", pdu)
    if nop.itt == RESERVED_TAG and not nop.immediate:
        raise _bad("NOP-Out answering a ping must be immediate", pdu)
    return nop


@dataclass(frozen=True, slots=True)
class TaskMgmtRequest:
    immediate: bool
    function: int
    lun: int
    itt: int
    ref_itt: int
    cmd_sn: int
    exp_stat_sn: int
    ref_cmd_sn: int


def decode_task_mgmt(pdu: Pdu) -> TaskMgmtRequest:
    if not pdu.final:
        raise _bad("Task Management request without the F bit", pdu)
    return TaskMgmtRequest(
        immediate=pdu.immediate,
        function=pdu.flags & 0x7F,
        lun=decode_lun(pdu.lun_field),
        itt=pdu.itt,
        ref_itt=pdu.u32(20),
        cmd_sn=pdu.u32(24),
        exp_stat_sn=pdu.u32(28),
        ref_cmd_sn=pdu.u32(32),
    )


@dataclass(frozen=True, slots=True)
class LoginRequest:
    transit: bool
    cont: bool
    csg: int
    nsg: int
    version_max: int
    version_min: int
    isid: bytes
    tsih: int
    itt: int
    cid: int
    cmd_sn: int
    exp_stat_sn: int
    data: bytes


def decode_login(pdu: Pdu) -> LoginRequest:
    flags = pdu.flags
    transit, cont = bool(flags & 0x80), bool(flags & 0x40)
    if transit and cont:
        raise _bad("Login request with both T and C bits", pdu)
    if pdu.ahs:
        raise _bad("Login request carries no AHS", pdu)
    return LoginRequest(
        transit=transit,
        cont=cont,
        csg=(flags >> 2) & 3,
        nsg=flags & 3,
        version_max=pdu.bhs[2],
        version_min=pdu.bhs[3],
        isid=pdu.bhs[8:14],
        tsih=pdu.u16(14),
        itt=pdu.itt,
        cid=pdu.u16(20),
        cmd_sn=pdu.u32(24),
        exp_stat_sn=pdu.u32(28),
        data=pdu.data,
    )


@dataclass(frozen=True, slots=True)
class TextRequest:
    immediate: bool
    final: bool
    cont: bool
    itt: int
    ttt: int
    cmd_sn: int
    exp_stat_sn: int
    data: bytes


def decode_text(pdu: Pdu) -> TextRequest:
    final, cont = pdu.final, bool(pdu.flags & 0x40)
    if final and cont:
        raise _bad("Text request with both F and C bits", pdu)
    return TextRequest(
        immediate=pdu.immediate,
        final=final,
        cont=cont,
        itt=pdu.itt,
        ttt=pdu.u32(20),
        cmd_sn=pdu.u32(24),
        exp_stat_sn=pdu.u32(28),
        data=pdu.data,
    )


@dataclass(frozen=True, slots=True)
class LogoutRequest:
    immediate: bool
    reason: int
    itt: int
    cid: int
    cmd_sn: int
    exp_stat_sn: int


def decode_logout(pdu: Pdu) -> LogoutRequest:
    if not pdu.final:
        raise _bad("Logout request without the F bit", pdu)
    reason = pdu.flags & 0x7F
    if reason > 2:
        raise _bad(f"unknown logout reason {reason}", pdu)
    return LogoutRequest(
        immediate=pdu.immediate,
        reason=reason,
        itt=pdu.itt,
        cid=pdu.u16(20),
        cmd_sn=pdu.u32(24),
        exp_stat_sn=pdu.u32(28),
    )


# --- target PDUs -----------------------------------------------------------------------------


def _seq_words(seq: Seq) -> tuple[int, int, int]:
    return (seq.stat_sn, seq.exp_cmd_sn, seq.max_cmd_sn)


def nop_in(seq: Seq, *, itt: int, ttt: int, lun_field: bytes, data: bytes = b"") -> Pdu:
    words = (ttt, *_seq_words(seq))
    bhs = build_bhs(Op.NOP_IN, 0x80, data_length=len(data), lun=lun_field, itt=itt, words=words)
    return Pdu(bhs, b"", data)


def scsi_response(
    seq: Seq,
    *,
    itt: int,
    status: int,
    sense: bytes = b"",
    residual: int = 0,
    exp_data_sn: int = 0,
    response: int = 0,
) -> Pdu:
    """SCSI Response; ``residual`` > 0 means underflow, < 0 overflow."""
    flags = 0x80 | (0x02 if residual > 0 else 0) | (0x04 if residual < 0 else 0)
    data = struct.pack(">H", len(sense)) + sense if sense else b""
    words = (0, *_seq_words(seq), exp_data_sn, 0, abs(residual))
    bhs = build_bhs(
        Op.SCSI_RESPONSE,
        flags,
        byte2=response,
        byte3=status,
        data_length=len(data),
        itt=itt,
        words=words,
    )
    return Pdu(bhs, b"", data)


_PADS = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # by data length % 4


def scsi_response_good(seq: Seq, itt: int, residual: int) -> bytes:
    """The wire bytes of a GOOD SCSI Response without sense (no digests): :func:`scsi_response`
    without the intermediate Pdu."""
    flags = 0x82 if residual > 0 else (0x84 if residual < 0 else 0x80)
    return BHS_STRUCT.pack(
        Op.SCSI_RESPONSE, flags, 0, GOOD, 0, _LUN_ZERO, itt,
        0, seq.stat_sn, seq.exp_cmd_sn, seq.max_cmd_sn, 0, 0, abs(residual),
    )  # fmt: skip


def data_in_good_parts(seq: Seq, cmd: ScsiCommand, data: bytes, segment_bytes: int) -> list[bytes]:
    """The wire buffers (headers, data, padding; no digests) of the Data-In PDUs carrying a
    read's ``data`` in segments of at most ``segment_bytes``, the last with the GOOD status:
    :func:`data_in` for each piece without the intermediate Pdus. The pieces of a multi-PDU
    read are views of ``data`` (not copies)."""
    length = len(data)
    lun, itt = cmd.lun_field, cmd.itt
    out: list[bytes] = []
    offset = 0
    data_sn = 0
    last = data
    if length > segment_bytes:
        view = memoryview(data)
        pad = _PADS[segment_bytes & 3]
        while length - offset > segment_bytes:
            header = BHS_STRUCT.pack(
                Op.DATA_IN, 0, 0, 0, segment_bytes, lun, itt,
                RESERVED_TAG, 0, seq.exp_cmd_sn, seq.max_cmd_sn, data_sn, offset, 0,
            )  # fmt: skip
            out.append(header)
            out.append(view[offset : offset + segment_bytes])  # type: ignore[arg-type]
            if pad:
                out.append(pad)
            offset += segment_bytes
            data_sn += 1
        last = view[offset:]  # type: ignore[assignment]
    residual = cmd.edtl - length
    flags = 0x83 if residual > 0 else (0x85 if residual < 0 else 0x81)
    header = BHS_STRUCT.pack(
        Op.DATA_IN, flags, 0, GOOD, length - offset, lun, itt,
        RESERVED_TAG, seq.stat_sn, seq.exp_cmd_sn, seq.max_cmd_sn, data_sn, offset, abs(residual),
    )  # fmt: skip
    out.append(header)
    out.append(last)
    pad = _PADS[(length - offset) & 3]
    if pad:
        out.append(pad)
    return out


def data_in(
    seq: Seq,
    *,
    itt: int,
    data_sn: int,
    offset: int,
    data: bytes,
    final: bool,
    status: int | None,
    residual: int = 0,
    lun_field: bytes = bytes(8),
) -> Pdu:
    """Data-In; ``status`` not None sets the S bit (phase-collapsed status, final PDU only)."""
    flags = 0x80 if final else 0
    if status is not None:
        assert final
        flags |= 0x01 | (0x02 if residual > 0 else 0) | (0x04 if residual < 0 else 0)
    stat_sn = seq.stat_sn if status is not None else 0
    words = (
        RESERVED_TAG,
        stat_sn,
        seq.exp_cmd_sn,
        seq.max_cmd_sn,
        data_sn,
        offset,
        abs(residual) if status is not None else 0,
    )
    bhs = build_bhs(
        Op.DATA_IN,
        flags,
        byte3=status or 0,
        data_length=len(data),
        lun=lun_field,
        itt=itt,
        words=words,
    )
    return Pdu(bhs, b"", data)


def r2t(
    seq: Seq, *, itt: int, ttt: int, lun_field: bytes, r2t_sn: int, offset: int, length: int
) -> Pdu:
    words = (ttt, *_seq_words(seq), r2t_sn, offset, length)
    return Pdu(build_bhs(Op.R2T, 0x80, lun=lun_field, itt=itt, words=words))


def task_mgmt_response(seq: Seq, *, itt: int, response: int) -> Pdu:
    words = (0, *_seq_words(seq))
    return Pdu(build_bhs(Op.TASK_MGMT_RESPONSE, 0x80, byte2=response, itt=itt, words=words))


def login_response(
    seq: Seq,
    *,
    transit: bool,
    csg: int,
    nsg: int,
    isid: bytes,
    tsih: int,
    itt: int,
    status_class: int,
    status_detail: int,
    data: bytes = b"",
    cont: bool = False,
) -> Pdu:
    flags = (0x80 if transit else 0) | (0x40 if cont else 0) | (csg << 2) | (nsg if transit else 0)
    lun = isid + struct.pack(">H", tsih)
    words = (0, *_seq_words(seq), (status_class << 24) | (status_detail << 16))
    bhs = build_bhs(Op.LOGIN_RESPONSE, flags, data_length=len(data), lun=lun, itt=itt, words=words)
    return Pdu(bhs, b"", data)


def text_response(seq: Seq, *, itt: int, ttt: int, final: bool, cont: bool, data: bytes) -> Pdu:
    flags = (0x80 if final else 0) | (0x40 if cont else 0)
    words = (ttt, *_seq_words(seq))
    bhs = build_bhs(Op.TEXT_RESPONSE, flags, data_length=len(data), itt=itt, words=words)
    return Pdu(bhs, b"", data)


def logout_response(seq: Seq, *, itt: int, response: int, time2wait_s: int = 0) -> Pdu:
    words = (0, *_seq_words(seq), 0, 0, (time2wait_s << 16) | 0)
    return Pdu(build_bhs(Op.LOGOUT_RESPONSE, 0x80, byte2=response, itt=itt, words=words))


def reject(seq: Seq, *, reason: int, rejected_bhs: bytes) -> Pdu:
    words = (0, *_seq_words(seq))
    bhs = build_bhs(Op.REJECT, 0x80, byte2=reason, data_length=len(rejected_bhs), words=words)
    return Pdu(bhs, b"", rejected_bhs)
