"""Write-data collection for one SCSI task: immediate data, unsolicited Data-Out, R2T sequences.

All offsets are checked: with DataPDUInOrder=Yes and DataSequenceInOrder=Yes every Data-Out must
start where the previous one of its sequence ended, and DataSN counts up from 0 per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blockd.iscsi.messages import DataOut, ScsiCommand
from blockd.iscsi.negotiation import SessionParams
from blockd.iscsi.pdu import RESERVED_TAG, ProtocolError, RejectReason

__all__ = ["R2tRequest", "Sequence", "Task"]


@dataclass(slots=True)
class Sequence:
    """One data-out sequence: the unsolicited one (TTT reserved) or one R2T's."""

    offset: int
    end: int
    next_offset: int
    next_data_sn: int = 0
    may_end_early: bool = False  # the unsolicited sequence may stop short of FirstBurstLength

    def accept(self, pdu: DataOut) -> bool:
        """Check and account one Data-Out; return True when the sequence is complete."""
        if pdu.data_sn != self.next_data_sn:
            raise ProtocolError(
                f"DataSN {pdu.data_sn} != expected {self.next_data_sn}",
                RejectReason.PROTOCOL_ERROR,
                pdu.bhs,
            )
        if pdu.offset != self.next_offset or pdu.offset + len(pdu.data) > self.end:
            raise ProtocolError(
                f"Data-Out [{pdu.offset}, +{len(pdu.data)}) outside the expected range",
                RejectReason.PROTOCOL_ERROR,
                pdu.bhs,
            )
        self.next_data_sn += 1
        self.next_offset += len(pdu.data)
        if pdu.final and self.next_offset != self.end and not self.may_end_early:
            raise ProtocolError("Data-Out sequence ended early", bhs=pdu.bhs)
        return self.next_offset == self.end


@dataclass(frozen=True, slots=True)
class R2tRequest:
    ttt: int
    r2t_sn: int
    offset: int
    length: int


@dataclass(slots=True)
class Task:
    """A SCSI command from arrival to response."""

    cmd: ScsiCommand
    counted: bool  # occupies a slot in the CmdSN window
    # (offset, payload) of the write data received; the sequences' checks make the pieces
    # tile [0, EDTL) exactly once complete, so one join builds the data (one copy in all).
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    unsolicited: Sequence | None = None
    r2t_sequences: dict[int, Sequence] = field(default_factory=dict)
    next_r2t_offset: int = 0
    r2t_sn: int = 0
    executing: bool = False
    aborted: bool = False

    @classmethod
    def start(cls, cmd: ScsiCommand, params: SessionParams, counted: bool) -> Task:
        """Account the command's immediate data and open its unsolicited sequence."""
        task = cls(cmd=cmd, counted=counted)
        if not cmd.write:
            return task
        immediate = len(cmd.data)
        if immediate and not params.immediate_data:
            raise ProtocolError("immediate data sent but ImmediateData=No", bhs=cmd.bhs)
        first_burst = min(cmd.edtl, params.first_burst_bytes)
        if immediate > first_burst:
            raise ProtocolError("immediate data beyond FirstBurstLength", bhs=cmd.bhs)
        task.next_r2t_offset = immediate
        if immediate:
            task.pieces.append((0, cmd.data))
        if not cmd.final:
            if params.initial_r2t:
                raise ProtocolError("unsolicited Data-Out while InitialR2T=Yes", bhs=cmd.bhs)
            task.unsolicited = Sequence(immediate, first_burst, immediate, may_end_early=True)
        return task

    @property
    def data_complete(self) -> bool:
        if not self.cmd.write:
            return True
        return (
            self.unsolicited is None
            and not self.r2t_sequences
            and self.next_r2t_offset >= self.cmd.edtl
        )

    def data_out_bytes(self) -> bytes:
        """The write data gathered, in offset order (no copy when it came in one piece)."""
        pieces = self.pieces
        if len(pieces) == 1:
            return pieces[0][1]
        if any(pieces[i][0] > pieces[i + 1][0] for i in range(len(pieces) - 1)):
            pieces = sorted(pieces, key=lambda piece: piece[0])
        return b"".join(data for _, data in pieces)

    def data_out(self, pdu: DataOut) -> None:
        """Place one Data-Out PDU's payload."""
        if pdu.ttt == RESERVED_TAG:
            seq = self.unsolicited
            if seq is None:
                raise ProtocolError("unexpected unsolicited Data-Out", bhs=pdu.bhs)
            if seq.accept(pdu) or pdu.final:
                self.unsolicited = None
                self.next_r2t_offset = seq.next_offset
        else:
            seq = self.r2t_sequences.get(pdu.ttt)
            if seq is None:
                raise ProtocolError("Data-Out with an unknown Target Transfer Tag", bhs=pdu.bhs)
            if seq.accept(pdu):
                del self.r2t_sequences[pdu.ttt]
        if pdu.data:
            self.pieces.append((pdu.offset, pdu.data))

    def next_r2t(self, params: SessionParams, ttt: int) -> R2tRequest | None:
        """The next R2T to send, if the window of outstanding R2Ts allows one."""
        if self.unsolicited is not None or self.next_r2t_offset >= self.cmd.edtl:
            return None
        if len(self.r2t_sequences) >= params.max_outstanding_r2t:
            return None
        offset = self.next_r2t_offset
        length = min(params.max_burst_bytes, self.cmd.edtl - offset)
        self.r2t_sequences[ttt] = Sequence(offset, offset + length, offset)
        self.next_r2t_offset += length
        request = R2tRequest(ttt, self.r2t_sn, offset, length)
        self.r2t_sn += 1
        return request
