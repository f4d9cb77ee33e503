"""One iSCSI connection from first byte to close, sans-IO (RFC 7143, ErrorRecoveryLevel 0).

Feed received bytes to :meth:`Connection.receive_data`; it returns events for the I/O loop
(:class:`Execute` a SCSI command, :class:`Close` the socket). Bytes to send accumulate and are
taken with :meth:`Connection.data_to_send`. When an executed command finishes, the loop calls
:meth:`Connection.complete`. The connection owns all sequence numbers:

- CmdSN window: ``MaxCmdSN = ExpCmdSN + queue_depth - 1 - outstanding``, so MaxCmdSN never
  decreases and at most ``queue_depth`` non-immediate commands are in the target at once.
- StatSN advances on every status-bearing PDU.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from blockd.iscsi import messages as m
from blockd.iscsi.events import (
    Close,
    ConnectionConfig,
    Event,
    Execute,
    Phase,
    ResetLu,
    sn_lt,
)
from blockd.iscsi.login import LoginMachine, LoginResult, Portal
from blockd.iscsi.negotiation import SessionParams
from blockd.iscsi.pdu import (
    RESERVED_TAG,
    DigestError,
    Op,
    Pdu,
    PduParser,
    ProtocolError,
    RejectReason,
    encode_pdu_parts,
)
from blockd.iscsi.tasks import Task
from blockd.iscsi.textexchange import TextExchange
from blockd.iscsi.tmf import PendingTmf, TaskManagement
from blockd.scsi.sense import ScsiResult, SenseKey, Status, sense_bytes

__all__ = [
    "Close",
    "Connection",
    "ConnectionConfig",
    "Event",
    "Execute",
    "Phase",
    "ResetLu",
    "sn_lt",
]

log = logging.getLogger(__name__)
_U32 = struct.Struct(">I")

LOGIN_DATA_BYTES_MAX = 8192  # MaxRecvDataSegmentLength before negotiation (RFC 7143 13.12)
DATA_PHASE_ERROR = (0x4B, 0x00)


class Connection(TaskManagement):
    """The target side of one TCP connection."""

    def __init__(
        self,
        portal: Portal,
        config: ConnectionConfig | None = None,
        *,
        list_targets: Callable[[], list[str]] = list,
    ) -> None:
        self.config = config or ConnectionConfig()
        self._portal = portal
        self._parser = PduParser(LOGIN_DATA_BYTES_MAX)
        self._login = LoginMachine(
            portal,
            self.config.limits,
            portal_group_tag=self.config.portal_group_tag,
            queue_depth=self.config.queue_depth,
        )
        self.phase = Phase.LOGIN
        self.session: LoginResult | None = None
        self.params = SessionParams()
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._stat_sn = 0
        self._exp_cmd_sn = 0
        self._outstanding = 0
        self._tasks: dict[int, Task] = {}
        self._wanting_r2t: dict[int, Task] = {}  # write tasks with data still to solicit
        self._held: dict[int, Pdu] = {}  # out-of-order commands waiting for the CmdSN gap
        self._next_ttt = 1
        self._tmfs: list[PendingTmf] = []
        self._text = TextExchange(
            list_targets,
            self.config.portal_address,
            self.config.portal_group_tag,
            self._new_ttt,
        )
        self._nexus = ""  # the I_T nexus name, once logged in
        self._target_iqn = ""  # the session's target, once logged in (not for discovery)
        self._digests = False  # header or data digests in full feature phase
        self.ping_tag: int | None = None  # TTT of our unanswered NOP-In ping
        self.close_reason = ""
        self._handlers: dict[int, Callable[[Pdu], None]] = {
            Op.SCSI_COMMAND: self._on_command_pdu,
            Op.NOP_OUT: self._on_command_pdu,
            Op.TASK_MGMT_REQUEST: self._on_command_pdu,
            Op.TEXT_REQUEST: self._on_command_pdu,
            Op.LOGOUT_REQUEST: self._on_command_pdu,
            Op.DATA_OUT: self._on_data_out,
        }

    # --- public API ---------------------------------------------------------------------------

    @property
    def _closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def nexus(self) -> str:
        return self._nexus

    @property
    def max_cmd_sn(self) -> int:
        return (self._exp_cmd_sn + self.config.queue_depth - 1 - self._outstanding) & 0xFFFFFFFF

    def data_to_send(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def buffers_to_send(self) -> list[bytes]:
        """:meth:`data_to_send` as the buffers to write in order (no copy of data segments)."""
        out, self._out = self._out, []
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Handle received bytes; return what the loop must do. Never raises for bad input."""
        if self.phase is Phase.CLOSED:
            return []
        try:
            for pdu in self._parser.feed(data):
                self._dispatch(pdu)
                if self._closed:
                    break
        except DigestError as exc:
            self._close(f"digest error: {exc}")
        except ProtocolError as exc:
            if exc.bhs:
                self._send(
                    m.reject(self._seq(advance=True), reason=exc.reason, rejected_bhs=exc.bhs)
                )
            self._close(f"protocol error: {exc}")
        except Exception:  # a bug must cost this connection, never the server
            log.exception("iSCSI connection failed")
            self._close("internal error")
        events, self._events = self._events, []
        return events

    def complete(self, itt: int, result: ScsiResult) -> None:
        """An Execute finished: send Data-In and/or the SCSI Response (unless aborted)."""
        task = self._tasks.pop(itt, None)
        if task is None:
            return
        self._release(task)
        if self._tmfs:
            self._finish_tmfs(itt)
        if task.aborted or self.phase is not Phase.FULL_FEATURE:
            return
        if result.status or result.sense or self._digests or not self._respond_fast(task, result):
            self._respond(task, result)
        if self._wanting_r2t:
            self._pump_r2ts()

    def ping(self) -> None:
        """Queue a keepalive NOP-In that asks for a NOP-Out reply."""
        if self.phase is not Phase.FULL_FEATURE or self.ping_tag is not None:
            return
        self.ping_tag = self._new_ttt()
        seq = self._seq(advance=False)
        self._send(m.nop_in(seq, itt=RESERVED_TAG, ttt=self.ping_tag, lun_field=bytes(8)))

    def abort_all(self) -> None:
        """The connection is going away: forget every task (their completions are ignored)."""
        for task in self._tasks.values():
            task.aborted = True
        self.phase = Phase.CLOSED

    # --- plumbing -----------------------------------------------------------------------------

    def _send(self, pdu: Pdu) -> None:
        ffp = self.phase is Phase.FULL_FEATURE
        self._out.extend(
            encode_pdu_parts(
                pdu,
                header_digest=ffp and self.params.header_digest,
                data_digest=ffp and self.params.data_digest,
            )
        )

    def _seq(self, *, advance: bool) -> m.Seq:
        seq = m.Seq(self._stat_sn, self._exp_cmd_sn, self.max_cmd_sn)
        if advance:
            self._stat_sn = (self._stat_sn + 1) & 0xFFFFFFFF
        return seq

    def _close(self, reason: str) -> None:
        if self.phase is not Phase.CLOSED:
            self.close_reason = reason
            log.info("closing iSCSI connection", extra={"fields": {"reason": reason}})
            self.abort_all()
            self._events.append(Close(reason))

    def _new_ttt(self) -> int:
        ttt = self._next_ttt
        self._next_ttt = (self._next_ttt + 1) % RESERVED_TAG or 1
        return ttt

    def _dispatch(self, pdu: Pdu) -> None:
        if self.phase is Phase.LOGIN:
            self._on_login(pdu)
            return
        byte0 = pdu.bhs[0]
        handler = self._handlers.get(byte0 & 0x3F)
        if handler is None or byte0 & 0x80:
            reason = RejectReason.COMMAND_NOT_SUPPORTED
            if pdu.opcode in (Op.LOGIN_REQUEST, Op.SNACK_REQUEST):
                reason = RejectReason.PROTOCOL_ERROR
            self._send(m.reject(self._seq(advance=True), reason=reason, rejected_bhs=pdu.bhs))
            return
        handler(pdu)

    # --- login --------------------------------------------------------------------------------

    def _on_login(self, pdu: Pdu) -> None:
        if pdu.opcode != Op.LOGIN_REQUEST:
            self._close("non-login PDU during login")
            return
        for response in self._login.feed(m.decode_login(pdu)):
            self._send(response)
        if not self._login.done:
            return
        if self._login.failed or self._login.result is None:
            self._close(f"login failed: {self._login.failure_reason}")
            return
        result = self._login.result
        self.session = result
        self.params = result.params
        self._stat_sn = result.stat_sn
        self._exp_cmd_sn = result.cmd_sn
        self.phase = Phase.FULL_FEATURE
        self._nexus = f"{result.initiator_name},i,0x{result.isid.hex()}"
        self._target_iqn = result.target.iqn if result.target else ""
        params = result.params
        self._digests = params.header_digest or params.data_digest
        log.info(
            "iSCSI login complete",
            extra={
                "fields": {
                    "initiator": result.initiator_name,
                    "target": result.target.iqn if result.target else "(discovery)",
                    "tsih": result.tsih,
                    "header_digest": params.header_digest,
                    "data_digest": params.data_digest,
                    "max_burst_bytes": params.max_burst_bytes,
                    "first_burst_bytes": params.first_burst_bytes,
                    "initial_r2t": params.initial_r2t,
                    "immediate_data": params.immediate_data,
                    "initiator_recv_data_segment_bytes": params.initiator_recv_data_segment_bytes,
                }
            },
        )
        self._parser.set_digests(params.header_digest, params.data_digest)
        self._parser.set_data_bytes_max(self.config.limits.max_recv_data_segment_bytes)

    # --- command numbering --------------------------------------------------------------------

    def _on_command_pdu(self, pdu: Pdu) -> None:
        """Apply the CmdSN window, then handle the PDU (and any held ones that are now due)."""
        bhs = pdu.bhs
        cmd_sn: int = _U32.unpack_from(bhs, 24)[0]
        if bhs[0] & 0x40:  # immediate
            self._handle_numbered(pdu, counted=False)
            return
        if (
            cmd_sn == self._exp_cmd_sn
            and self._outstanding < self.config.queue_depth
            and not self._held
        ):  # the next command, inside the window (MaxCmdSN >= ExpCmdSN), none held back
            self._exp_cmd_sn = (cmd_sn + 1) & 0xFFFFFFFF
            if bhs[0] & 0x3F == Op.SCSI_COMMAND and self._target_iqn:  # the usual case
                self._on_scsi_command(m.decode_scsi_command(pdu), True)
            else:
                self._handle_numbered(pdu, counted=bhs[0] & 0x3F == Op.SCSI_COMMAND)
            return
        if sn_lt(cmd_sn, self._exp_cmd_sn) or sn_lt(self.max_cmd_sn, cmd_sn):
            log.info(
                "command outside the CmdSN window dropped", extra={"fields": {"cmd_sn": cmd_sn}}
            )
            return
        if cmd_sn != self._exp_cmd_sn:
            if len(self._held) < self.config.queue_depth:
                self._held[cmd_sn] = pdu
            return
        self._advance_and_handle(pdu)
        while self._exp_cmd_sn in self._held and self.phase is Phase.FULL_FEATURE:
            self._advance_and_handle(self._held.pop(self._exp_cmd_sn))

    def _advance_and_handle(self, pdu: Pdu) -> None:
        self._exp_cmd_sn = (self._exp_cmd_sn + 1) & 0xFFFFFFFF
        self._handle_numbered(pdu, counted=pdu.opcode == Op.SCSI_COMMAND)

    def _handle_numbered(self, pdu: Pdu, counted: bool) -> None:
        op = pdu.bhs[0] & 0x3F
        if (
            not self._target_iqn
            and self.session is not None
            and op in (Op.SCSI_COMMAND, Op.TASK_MGMT_REQUEST)
        ):
            raise ProtocolError("SCSI commands are not allowed in a discovery session", bhs=pdu.bhs)
        if op == Op.SCSI_COMMAND:
            self._on_scsi_command(m.decode_scsi_command(pdu), counted)
        elif op == Op.NOP_OUT:
            self._on_nop_out(m.decode_nop_out(pdu))
        elif op == Op.TASK_MGMT_REQUEST:
            self._on_task_mgmt(m.decode_task_mgmt(pdu))
        elif op == Op.TEXT_REQUEST:
            self._on_text(m.decode_text(pdu))
        else:
            self._on_logout(m.decode_logout(pdu))

    # --- SCSI commands and data ---------------------------------------------------------------

    def _on_scsi_command(self, cmd: m.ScsiCommand, counted: bool) -> None:
        if cmd.itt == RESERVED_TAG or cmd.itt in self._tasks:
            raise ProtocolError("Initiator Task Tag reserved or in use", bhs=cmd.bhs)
        task = Task.start(cmd, self.params, counted)
        self._tasks[cmd.itt] = task
        if counted:
            self._outstanding += 1
        if cmd.edtl > self.config.command_bytes_max:
            task.pieces = []
            task.unsolicited = None
            self._early_response(task, sense_bytes(SenseKey.ILLEGAL_REQUEST, (0x24, 0x00)))
            return
        if not cmd.write:
            self._execute(task)
            return
        self._advance_task(task)

    def _early_response(self, task: Task, sense: bytes) -> None:
        self._tasks.pop(task.cmd.itt, None)
        self._release(task)
        self._send(
            m.scsi_response(
                self._seq(advance=True),
                itt=task.cmd.itt,
                status=Status.CHECK_CONDITION,
                sense=sense,
            )
        )

    def _release(self, task: Task) -> None:
        if task.counted:
            task.counted = False
            self._outstanding -= 1
        task.pieces = []

    def _on_data_out(self, pdu: Pdu) -> None:
        data = m.decode_data_out(pdu)
        task = self._tasks.get(data.itt)
        if task is None or task.executing:
            return  # data for a task that was aborted or already answered
        try:
            task.data_out(data)
        except ProtocolError as exc:
            # A bad DataSN or offset: reject the PDU and fail only this task, so one broken
            # sequence costs a command, not the session.
            log.info("bad Data-Out", extra={"fields": {"error": str(exc)}})
            self._send(m.reject(self._seq(advance=True), reason=exc.reason, rejected_bhs=pdu.bhs))
            self._early_response(task, sense_bytes(SenseKey.ABORTED_COMMAND, DATA_PHASE_ERROR))
            return
        self._advance_task(task)

    def _advance_task(self, task: Task) -> None:
        if not task.cmd.write or task.data_complete:
            self._execute(task)
        else:
            self._wanting_r2t[task.cmd.itt] = task
            self._pump_r2ts()

    def _pump_r2ts(self) -> None:
        """Send the R2Ts the windows allow, for tasks waiting for data (oldest first)."""
        if not self._wanting_r2t:
            return
        for itt, task in list(self._wanting_r2t.items()):
            if (
                self._tasks.get(itt) is not task
                or task.executing
                or (task.unsolicited is None and task.next_r2t_offset >= task.cmd.edtl)
            ):
                del self._wanting_r2t[itt]  # answered, aborted, or every R2T already sent
                continue
            while True:
                request = task.next_r2t(self.params, self._new_ttt())
                if request is None:
                    break
                seq = self._seq(advance=False)
                self._send(
                    m.r2t(
                        seq,
                        itt=task.cmd.itt,
                        ttt=request.ttt,
                        lun_field=task.cmd.lun_field,
                        r2t_sn=request.r2t_sn,
                        offset=request.offset,
                        length=request.length,
                    )
                )

    def _execute(self, task: Task) -> None:
        task.executing = True
        cmd = task.cmd
        pieces = task.pieces
        data = pieces[0][1] if len(pieces) == 1 else task.data_out_bytes()
        self._events.append(Execute(cmd.itt, self._target_iqn, cmd.lun, cmd.cdb, data, self._nexus))

    def _respond_fast(self, task: Task, result: ScsiResult) -> bool:
        """GOOD status, no digests: Data-In PDUs (the last with the status) or one SCSI
        Response, packed here rather than through Pdus. False (nothing sent) otherwise."""
        cmd = task.cmd
        data = result.data
        if cmd.read:
            if not data or len(data) > cmd.edtl:
                return False
            segment_bytes = self.params.initiator_recv_data_segment_bytes
            self._out.extend(
                m.data_in_good_parts(self._seq(advance=True), cmd, data, segment_bytes)
            )
            return True
        if data:
            return False
        spdtl = result.data_out_bytes if cmd.write else 0
        self._out.append(m.scsi_response_good(self._seq(advance=True), cmd.itt, cmd.edtl - spdtl))
        return True

    def _respond(self, task: Task, result: ScsiResult) -> None:
        cmd = task.cmd
        data = result.data if cmd.read else b""
        spdtl = len(result.data) if cmd.read else (result.data_out_bytes if cmd.write else 0)
        if not cmd.read and not cmd.write and result.data:
            spdtl = len(result.data)
        residual = cmd.edtl - spdtl
        data = data[: cmd.edtl]
        chunk = self.params.initiator_recv_data_segment_bytes
        good = result.status == Status.GOOD and not result.sense
        pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        for data_sn, piece in enumerate(pieces):
            last = data_sn == len(pieces) - 1
            collapse = last and good
            self._send(
                m.data_in(
                    self._seq(advance=collapse),
                    itt=cmd.itt,
                    data_sn=data_sn,
                    offset=data_sn * chunk,
                    data=piece,
                    final=last,
                    status=result.status if collapse else None,
                    residual=residual,
                    lun_field=cmd.lun_field,
                )
            )
        if pieces and good:
            return
        self._send(
            m.scsi_response(
                self._seq(advance=True),
                itt=cmd.itt,
                status=result.status,
                sense=result.sense,
                residual=residual,
                exp_data_sn=len(pieces),
            )
        )

    # --- NOP, text, logout ----------------------------------------------------------------------

    def _on_nop_out(self, nop: m.NopOut) -> None:
        if nop.itt == RESERVED_TAG:
            if nop.ttt == self.ping_tag:
                self.ping_tag = None
            return
        data = nop.data[: self.params.initiator_recv_data_segment_bytes]
        self._send(
            m.nop_in(
                self._seq(advance=True),
                itt=nop.itt,
                ttt=RESERVED_TAG,
                lun_field=nop.lun_field,
                data=data,
            )
        )
        if nop.ttt == self.ping_tag:
            self.ping_tag = None

    def _on_text(self, req: m.TextRequest) -> None:
        assert self.session is not None
        own = self.session.target.iqn if self.session.target else None
        reply = self._text.respond(
            req.data,
            ttt=req.ttt,
            cont=req.cont,
            own_target=own,
            chunk_bytes=self.params.initiator_recv_data_segment_bytes,
        )
        seq = self._seq(advance=True)
        self._send(
            m.text_response(
                seq,
                itt=req.itt,
                ttt=reply.ttt,
                final=reply.final,
                cont=not reply.final,
                data=reply.data,
            )
        )

    def _on_logout(self, req: m.LogoutRequest) -> None:
        assert self.session is not None
        response = 0
        if req.reason == 2:
            response = 2  # connection recovery is not supported at ErrorRecoveryLevel 0
        elif req.reason == 1 and req.cid != self.session.cid:
            response = 1  # CID not found
        self._send(m.logout_response(self._seq(advance=True), itt=req.itt, response=response))
        if response == 0:
            self._close("logout")
