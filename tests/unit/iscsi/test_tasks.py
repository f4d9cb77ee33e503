"""Write-data collection in Task (sans-IO): the pieces received, joined in offset order."""

from __future__ import annotations

import os
import struct

from blockd.iscsi.messages import decode_data_out, decode_scsi_command
from blockd.iscsi.negotiation import SessionParams
from blockd.iscsi.tasks import Task
from blockd.targetconn import COPY_BYTES_MAX, _coalesce

from .initiator import data_out, scsi_command


def _write_task(edtl: int, immediate: bytes, *, final: bool) -> tuple[Task, SessionParams]:
    cdb = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, edtl // 512, 0)
    pdu = scsi_command(cdb, itt=7, cmd_sn=1, edtl=edtl, write=True, data=immediate, final=final)
    params = SessionParams(
        initial_r2t=False, max_burst_bytes=4096, first_burst_bytes=4096, max_outstanding_r2t=2
    )
    return Task.start(decode_scsi_command(pdu), params, counted=True), params


def test_fully_immediate_write_is_passed_on_without_a_copy() -> None:
    payload = os.urandom(4096)
    task, _ = _write_task(4096, payload, final=True)
    assert task.data_complete
    assert task.data_out_bytes() is task.cmd.data


def test_r2t_data_arriving_out_of_order_is_joined_in_offset_order() -> None:
    payload = os.urandom(3 * 4096)
    task, params = _write_task(len(payload), payload[:4096], final=True)
    first = task.next_r2t(params, 100)
    second = task.next_r2t(params, 101)
    assert first is not None and second is not None
    assert (first.offset, second.offset) == (4096, 8192)
    for req in (second, first):  # the later sequence's data first
        chunk = payload[req.offset : req.offset + req.length]
        pdu = data_out(itt=7, ttt=req.ttt, data_sn=0, offset=req.offset, data=chunk, final=True)
        task.data_out(decode_data_out(pdu))
    assert task.data_complete
    assert task.data_out_bytes() == payload


def test_coalesce_joins_small_buffers_and_keeps_large_ones() -> None:
    big = bytes(COPY_BYTES_MAX)
    out = _coalesce([b"h1", b"h2", big, b"h3", b"p", big])
    assert out == [b"h1h2", big, b"h3p", big]
    assert out[1] is big and out[3] is big
    assert _coalesce([b"a", b"b"]) == [b"ab"]
