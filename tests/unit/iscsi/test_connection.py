"""The connection state machine driven by PDUs, with a real LU on a MemoryBackend (no sockets)."""

from __future__ import annotations

import asyncio
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.iscsi.connection import ConnectionConfig, Phase
from blockd.iscsi.pdu import Op, Pdu, build_bhs
from blockd.iscsi.text import decode_text

from .initiator import (
    IQN,
    Harness,
    data_out,
    keys_of,
    logout,
    nop_out,
    scsi_command,
    split_pdus,
    task_mgmt,
    text_request,
)


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def status_of(pdu: Pdu) -> int:
    return pdu.bhs[3]


def u32(pdu: Pdu, offset: int) -> int:
    value: int = struct.unpack_from(">I", pdu.bhs, offset)[0]
    return value


def test_login_then_full_feature() -> None:
    h = Harness.make()
    replies = h.login()
    assert len(replies) == 1
    reply = replies[0]
    assert reply.opcode == Op.LOGIN_RESPONSE
    assert reply.bhs[1] & 0x80 and reply.bhs[1] & 0x03 == 3  # T bit, NSG = full feature
    assert reply.bhs[36:38] == b"\x00\x00"
    assert struct.unpack_from(">H", reply.bhs, 14)[0] != 0  # TSIH assigned
    keys = keys_of(reply)
    assert keys["MaxBurstLength"] == "16384"
    assert keys["FirstBurstLength"] == "4096"
    assert keys["InitialR2T"] == "Yes"
    assert keys["ErrorRecoveryLevel"] == "0"
    assert "MaxRecvDataSegmentLength" in keys
    assert h.conn.phase is Phase.FULL_FEATURE


def test_write_with_immediate_data_and_r2t_then_read_back() -> None:
    h = Harness.make()
    h.login()
    payload = bytes(range(256)) * 2 * 48  # 48 blocks = 24 KiB: FirstBurst 4 KiB + 16 KiB + 4 KiB
    first = payload[:4096]
    replies = h.send(
        scsi_command(write10(8, 48), itt=10, cmd_sn=1, edtl=len(payload), write=True, data=first)
    )
    assert [p.opcode for p in replies] == [Op.R2T]  # MaxOutstandingR2T = 1
    r2t = replies[0]
    offset, length = u32(r2t, 40), u32(r2t, 44)
    assert (offset, length) == (4096, 16384)
    ttt = u32(r2t, 20)
    pdus = [
        data_out(
            itt=10,
            ttt=ttt,
            data_sn=i,
            offset=offset + i * 4096,
            data=payload[offset + i * 4096 : offset + (i + 1) * 4096],
            final=i == 3,
        )
        for i in range(4)
    ]
    replies = h.send(*pdus)
    assert [p.opcode for p in replies] == [Op.R2T]
    second = replies[0]
    assert u32(second, 40) == 20480 and u32(second, 44) == len(payload) - 20480
    assert u32(second, 36) == 1  # R2TSN
    replies = h.send(
        data_out(
            itt=10, ttt=u32(second, 20), data_sn=0, offset=20480, data=payload[20480:], final=True
        )
    )
    assert [p.opcode for p in replies] == [Op.SCSI_RESPONSE]
    assert status_of(replies[0]) == 0
    assert asyncio.run(h.backend.read(8, 48)) == payload

    replies = h.send(scsi_command(read10(8, 48), itt=11, cmd_sn=2, edtl=len(payload), read=True))
    assert all(p.opcode == Op.DATA_IN for p in replies)
    assert len(replies) == 6  # 24 KiB in 4 KiB pieces (the initiator's MaxRecvDataSegmentLength)
    assert b"".join(p.data for p in replies) == payload
    last = replies[-1]
    assert last.bhs[1] & 0x81 == 0x81  # F and S: phase-collapsed status
    assert [u32(p, 36) for p in replies] == list(range(6))  # DataSN


def test_check_condition_carries_sense_and_statsn_advances() -> None:
    h = Harness.make(blocks=64)
    h.login()
    replies = h.send(scsi_command(read10(64, 1), itt=5, cmd_sn=1, edtl=512, read=True))
    assert [p.opcode for p in replies] == [Op.SCSI_RESPONSE]
    resp = replies[0]
    assert status_of(resp) == 0x02
    sense_len = struct.unpack_from(">H", resp.data)[0]
    sense = resp.data[2 : 2 + sense_len]
    assert sense[0] & 0x7F == 0x70 and sense[2] == 0x05 and sense[12:14] == b"\x21\x00"
    assert resp.bhs[1] & 0x02  # underflow: nothing was transferred
    stat_sn = u32(resp, 24)
    again = h.send(scsi_command(bytes(6), itt=6, cmd_sn=2))
    assert u32(again[0], 24) == stat_sn + 1


def test_unknown_opcode_is_rejected_and_connection_survives() -> None:
    h = Harness.make()
    h.login()
    odd = Pdu(build_bhs(0x1C, 0x80, itt=9))
    replies = h.send(odd)
    assert [p.opcode for p in replies] == [Op.REJECT]
    assert replies[0].bhs[2] == 0x05  # command not supported
    assert replies[0].data[:1] == bytes([0x1C])
    assert h.send(nop_out(itt=3, cmd_sn=1))[0].opcode == Op.NOP_IN


def test_cmdsn_window_drops_out_of_window_commands() -> None:
    config = ConnectionConfig(queue_depth=4)
    h = Harness.make(config=config)
    h.login()
    reply = h.send(scsi_command(bytes(6), itt=1, cmd_sn=1))[0]
    exp, max_sn = u32(reply, 28), u32(reply, 32)
    assert (exp, max_sn) == (2, 5)
    assert h.send(scsi_command(bytes(6), itt=2, cmd_sn=9)) == []  # beyond MaxCmdSN
    assert h.send(scsi_command(bytes(6), itt=3, cmd_sn=1)) == []  # already seen
    reply = h.send(scsi_command(bytes(6), itt=4, cmd_sn=2))[0]
    assert u32(reply, 28) == 3


def test_window_counts_commands_waiting_for_data() -> None:
    h = Harness.make(config=ConnectionConfig(queue_depth=4))
    h.login()
    r2t = h.send(scsi_command(write10(0, 8), itt=1, cmd_sn=1, edtl=4096, write=True))[0]
    assert r2t.opcode == Op.R2T
    assert u32(r2t, 32) == 4  # MaxCmdSN = ExpCmdSN(2) + 4 - 1 - 1 outstanding
    done = h.send(
        data_out(itt=1, ttt=u32(r2t, 20), data_sn=0, offset=0, data=bytes(4096), final=True)
    )[0]
    assert done.opcode == Op.SCSI_RESPONSE and u32(done, 32) == 5


def test_bad_datasn_fails_only_that_task() -> None:
    h = Harness.make()
    h.login()
    r2t = h.send(scsi_command(write10(0, 1), itt=1, cmd_sn=1, edtl=512, write=True))[0]
    replies = h.send(
        data_out(itt=1, ttt=u32(r2t, 20), data_sn=5, offset=0, data=bytes(512), final=True)
    )
    assert [p.opcode for p in replies] == [Op.REJECT, Op.SCSI_RESPONSE]
    assert status_of(replies[1]) == 0x02
    assert not h.closed
    assert h.send(nop_out(itt=2, cmd_sn=2))[0].opcode == Op.NOP_IN


def test_nop_ping_both_ways() -> None:
    h = Harness.make()
    h.login()
    echo = h.send(nop_out(itt=7, cmd_sn=1, data=b"hello"))[0]
    assert echo.opcode == Op.NOP_IN and echo.data == b"hello" and u32(echo, 16) == 7
    h.conn.ping()
    tag = h.conn.ping_tag
    assert tag is not None
    ping = split_pdus(h.conn.data_to_send())[0]
    assert ping.opcode == Op.NOP_IN and u32(ping, 16) == 0xFFFFFFFF and u32(ping, 20) == tag
    h.send(nop_out(itt=0xFFFFFFFF, ttt=tag, cmd_sn=1))
    assert h.conn.ping_tag is None


def test_abort_task_of_a_command_waiting_for_data() -> None:
    h = Harness.make()
    h.login()
    h.send(scsi_command(write10(0, 8), itt=1, cmd_sn=1, edtl=4096, write=True))
    replies = h.send(task_mgmt(function=1, itt=2, ref_itt=1, cmd_sn=2, ref_cmd_sn=1))
    assert [p.opcode for p in replies] == [Op.TASK_MGMT_RESPONSE]
    assert replies[0].bhs[2] == 0  # function complete
    missing = h.send(task_mgmt(function=1, itt=3, ref_itt=99, cmd_sn=2, ref_cmd_sn=7))
    assert missing[0].bhs[2] == 1  # task does not exist
    for function in (2, 5, 6):
        assert h.send(task_mgmt(function=function, itt=4, ref_itt=0, cmd_sn=2))[0].bhs[2] == 0
    assert h.send(task_mgmt(function=8, itt=5, ref_itt=0, cmd_sn=2))[0].bhs[2] == 4


def test_send_targets_in_discovery_session() -> None:
    h = Harness.make()
    from .initiator import INITIATOR, login_pdu

    keys = [("InitiatorName", INITIATOR), ("SessionType", "Discovery"), ("AuthMethod", "None")]
    assert h.send(login_pdu(keys, csg=0, nsg=3))[0].bhs[36] == 0
    reply = h.send(text_request([("SendTargets", "All")], itt=3, cmd_sn=1))[0]
    assert reply.opcode == Op.TEXT_RESPONSE
    pairs = decode_text(reply.data)
    assert ("TargetName", IQN) in pairs
    assert any(k == "TargetAddress" and v.endswith(",1") for k, v in pairs)
    # SCSI commands are not allowed in a discovery session
    h.send(scsi_command(bytes(6), itt=4, cmd_sn=1))
    assert h.closed


def test_logout_closes() -> None:
    h = Harness.make()
    h.login()
    reply = h.send(logout(itt=9, cmd_sn=1))[0]
    assert reply.opcode == Op.LOGOUT_RESPONSE and reply.bhs[2] == 0
    assert h.closed


def test_data_before_login_closes_the_connection() -> None:
    h = Harness.make()
    h.send(nop_out(itt=1, cmd_sn=1))
    assert h.closed


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_connection_never_raises(garbage: bytes) -> None:
    """Garbage before or after login ends in a Reject or a Close, never an exception."""
    h = Harness.make()
    h.feed(garbage)
    h2 = Harness.make()
    h2.login()
    h2.feed(garbage)
    for conn in (h.conn, h2.conn):
        assert conn.close_reason != "internal error"


@st.composite
def framed_pdus(draw: st.DrawFn) -> bytes:
    """Well-framed PDUs with random header fields: reaches the field decoders, not just framing."""
    opcode = draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x1C]))
    bhs = bytearray(draw(st.binary(min_size=48, max_size=48)))
    bhs[0] = opcode | (bhs[0] & 0x40)
    data = draw(st.binary(max_size=64))
    bhs[4] = 0
    bhs[5:8] = len(data).to_bytes(3, "big")
    return bytes(bhs) + data + bytes(-len(data) % 4)


@settings(max_examples=120, deadline=None)
@given(st.lists(framed_pdus(), max_size=6))
def test_fuzz_framed_pdus_after_login(pdus: list[bytes]) -> None:
    h = Harness.make()
    h.login()
    h.feed(b"".join(pdus))
    assert h.conn.close_reason != "internal error"


def test_long_send_targets_answer_uses_continuation() -> None:
    from blockd.backend import MemoryBackend
    from blockd.iscsi.pdu import build_bhs as bhs_of

    from .initiator import INITIATOR, login_pdu

    h = Harness.make()
    names = [f"iqn.2026-01.org.cairn:extra-volume-{i:03d}" for i in range(40)]
    for name in names:
        h.target.add_target(name, MemoryBackend(8, 512, serial="x"))
    keys = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Discovery"),
        ("MaxRecvDataSegmentLength", "512"),
    ]
    assert h.send(login_pdu(keys, csg=1, nsg=3))[0].bhs[36] == 0
    reply = h.send(text_request([("SendTargets", "All")], itt=3, cmd_sn=1))[0]
    text = b""
    pieces = 0
    while True:
        pieces += 1
        assert len(reply.data) <= 512
        text += reply.data
        if reply.bhs[1] & 0x80:
            assert u32(reply, 20) == 0xFFFFFFFF
            break
        assert reply.bhs[1] & 0x40 and u32(reply, 20) != 0xFFFFFFFF  # C bit, a TTT to answer
        more = Pdu(bhs_of(Op.TEXT_REQUEST | 0x40, 0x80, itt=3, words=(u32(reply, 20), 1, 0)))
        reply = h.send(more)[0]
    assert pieces > 1
    items = [item.decode().split("=", 1) for item in text.split(b"\x00") if item]
    listed = [v for k, v in items if k == "TargetName"]
    assert sorted(listed) == sorted([IQN, *names])


def test_unsolicited_data_out_then_r2t() -> None:
    h = Harness.make()
    h.login(extra=[("InitialR2T", "No")])  # FirstBurstLength 4096, MaxBurstLength 16384
    payload = os.urandom(16 * 512)
    command = scsi_command(
        write10(0, 16), itt=1, cmd_sn=1, edtl=len(payload), write=True, final=False
    )
    assert h.send(command) == []  # waiting for the unsolicited burst
    replies = h.send(
        data_out(itt=1, ttt=0xFFFFFFFF, data_sn=0, offset=0, data=payload[:2048], final=False),
        data_out(
            itt=1, ttt=0xFFFFFFFF, data_sn=1, offset=2048, data=payload[2048:4096], final=True
        ),
    )
    assert [p.opcode for p in replies] == [Op.R2T]
    assert (u32(replies[0], 40), u32(replies[0], 44)) == (4096, len(payload) - 4096)
    done = h.send(
        data_out(
            itt=1, ttt=u32(replies[0], 20), data_sn=0, offset=4096, data=payload[4096:], final=True
        )
    )
    assert [p.opcode for p in done] == [Op.SCSI_RESPONSE] and status_of(done[0]) == 0
    assert asyncio.run(h.backend.read(0, 16)) == payload


def test_unsolicited_data_refused_when_initial_r2t_is_yes() -> None:
    h = Harness.make()
    h.login()  # InitialR2T=Yes
    replies = h.send(
        scsi_command(write10(0, 1), itt=1, cmd_sn=1, edtl=512, write=True, final=False)
    )
    assert [p.opcode for p in replies] == [Op.REJECT]
    assert h.closed


def test_abort_of_a_running_task_waits_for_it_and_drops_its_response() -> None:
    from blockd.iscsi.connection import Execute
    from blockd.iscsi.pdu import encode_pdu
    from blockd.scsi.sense import ScsiResult

    h = Harness.make()
    h.login()
    events = h.conn.receive_data(
        encode_pdu(scsi_command(read10(0, 1), itt=1, cmd_sn=1, edtl=512, read=True))
    )
    assert [type(e) for e in events] == [Execute]  # running: the loop has not completed it
    events = h.conn.receive_data(
        encode_pdu(task_mgmt(function=1, itt=2, ref_itt=1, cmd_sn=2, ref_cmd_sn=1))
    )
    assert events == [] and h.conn.data_to_send() == b""  # TMF response waits for the task
    h.conn.complete(1, ScsiResult(data=bytes(512)))
    replies = split_pdus(h.conn.data_to_send())
    assert [p.opcode for p in replies] == [Op.TASK_MGMT_RESPONSE]  # no Data-In for task 1
    assert replies[0].bhs[2] == 0
