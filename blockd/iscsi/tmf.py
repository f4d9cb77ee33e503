"""Task management functions of one connection (RFC 7143 11.5, ErrorRecoveryLevel 0), sans-IO.

A mixin of :class:`blockd.iscsi.connection.Connection` (split out to keep that module small):
ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LUN RESET and TARGET WARM/COLD RESET. A function
that hits executing tasks answers once they complete (:meth:`TaskManagement._finish_tmfs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from blockd.iscsi import messages as m
from blockd.iscsi.events import (
    TMF_ABORT_TASK,
    TMF_ABORT_TASK_SET,
    TMF_CLEAR_ACA,
    TMF_CLEAR_TASK_SET,
    TMF_COMPLETE,
    TMF_LUN_RESET,
    TMF_NO_LUN,
    TMF_NO_TASK,
    TMF_NOT_SUPPORTED,
    TMF_REASSIGN_NOT_SUPPORTED,
    TMF_TARGET_COLD_RESET,
    TMF_TARGET_WARM_RESET,
    TMF_TASK_REASSIGN,
    Event,
    Phase,
    ResetLu,
    sn_lt,
)
from blockd.iscsi.login import LoginResult
from blockd.iscsi.pdu import Pdu
from blockd.iscsi.tasks import Task

__all__ = ["PendingTmf", "TaskManagement"]


@dataclass
class PendingTmf:
    itt: int
    waiting_for: set[int]
    response: int
    close_after: bool = False


class TaskManagement:
    """Task management for :class:`blockd.iscsi.connection.Connection` (which provides the
    attributes and methods declared here)."""

    phase: Phase
    session: LoginResult | None
    _tasks: dict[int, Task]
    _events: list[Event]
    _exp_cmd_sn: int
    _tmfs: list[PendingTmf]

    if TYPE_CHECKING:  # provided by Connection

        def _send(self, pdu: Pdu) -> None: ...

        def _seq(self, *, advance: bool) -> m.Seq: ...

        def _release(self, task: Task) -> None: ...

        def _close(self, reason: str) -> None: ...

    def _on_task_mgmt(self, req: m.TaskMgmtRequest) -> None:
        function = req.function
        if function == TMF_TASK_REASSIGN:
            self._tmf_response(req.itt, TMF_REASSIGN_NOT_SUPPORTED)
            return
        if function == TMF_CLEAR_ACA or function > TMF_TASK_REASSIGN or function == 0:
            self._tmf_response(req.itt, TMF_NOT_SUPPORTED)
            return
        lun_functions = (TMF_ABORT_TASK, TMF_ABORT_TASK_SET, TMF_CLEAR_TASK_SET, TMF_LUN_RESET)
        if function in lun_functions and req.lun != 0:
            self._tmf_response(req.itt, TMF_NO_LUN)
            return
        if function == TMF_ABORT_TASK:
            victims = [self._tasks[req.ref_itt]] if req.ref_itt in self._tasks else []
            if not victims:
                self._tmf_response(req.itt, self._missing_task_response(req))
                return
        else:
            victims = list(self._tasks.values())
        resets = (TMF_LUN_RESET, TMF_TARGET_WARM_RESET, TMF_TARGET_COLD_RESET)
        if function in resets and self.session is not None and self.session.target is not None:
            target_reset = function != TMF_LUN_RESET
            self._events.append(ResetLu(self.session.target.iqn, target_reset))
        self._abort(req.itt, victims, close_after=function == TMF_TARGET_COLD_RESET)

    def _missing_task_response(self, req: m.TaskMgmtRequest) -> int:
        # RFC 7143 11.5.1: a task already answered, or CmdSN never seen but in the window,
        # counts as aborted.
        if sn_lt(req.ref_cmd_sn, self._exp_cmd_sn):
            return TMF_COMPLETE
        return TMF_NO_TASK

    def _abort(self, itt: int, victims: list[Task], *, close_after: bool) -> None:
        waiting: set[int] = set()
        for task in victims:
            task.aborted = True
            if task.executing:
                waiting.add(task.cmd.itt)
            else:
                self._tasks.pop(task.cmd.itt, None)
                self._release(task)
        if waiting:
            self._tmfs.append(PendingTmf(itt, waiting, TMF_COMPLETE, close_after))
            return
        self._tmf_response(itt, TMF_COMPLETE)
        if close_after:
            self._close("target cold reset")

    def _finish_tmfs(self, itt: int) -> None:
        for tmf in list(self._tmfs):
            tmf.waiting_for.discard(itt)
            if not tmf.waiting_for:
                self._tmfs.remove(tmf)
                self._tmf_response(tmf.itt, tmf.response)
                if tmf.close_after:
                    self._close("target cold reset")

    def _tmf_response(self, itt: int, response: int) -> None:
        if self.phase is Phase.FULL_FEATURE:
            self._send(m.task_mgmt_response(self._seq(advance=True), itt=itt, response=response))
