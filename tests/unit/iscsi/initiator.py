"""A minimal test initiator: builds initiator PDUs and parses target PDUs (no sockets).

It drives a real :class:`Connection` with a real :class:`IscsiTarget` portal and real
:class:`LogicalUnit`s on :class:`MemoryBackend`, running Execute events to completion.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from blockd.backend import MemoryBackend
from blockd.iscsi.connection import Close, Connection, ConnectionConfig, Event, Execute
from blockd.iscsi.pdu import BHS_BYTES, Op, Pdu, build_bhs, encode_pdu, pad_bytes
from blockd.iscsi.text import decode_text, encode_text
from blockd.target import IscsiTarget

IQN = "iqn.2026-01.org.cairn:unit"
INITIATOR = "iqn.2026-01.org.cairn:initiator"
ISID = bytes([0x80, 0, 0, 0, 0, 1])


def login_pdu(
    keys: list[tuple[str, str]],
    *,
    csg: int,
    nsg: int,
    transit: bool = True,
    cmd_sn: int = 1,
    itt: int = 1,
    isid: bytes = ISID,
    tsih: int = 0,
    version: tuple[int, int] = (0, 0),
) -> Pdu:
    flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
    bhs = build_bhs(
        Op.LOGIN_REQUEST | 0x40,
        flags,
        byte2=version[0],
        byte3=version[1],
        lun=isid + struct.pack(">H", tsih),
        itt=itt,
        words=(0, cmd_sn, 0),
    )
    return Pdu(bhs, b"", encode_text(keys))


def scsi_command(
    cdb: bytes,
    *,
    itt: int,
    cmd_sn: int,
    edtl: int = 0,
    read: bool = False,
    write: bool = False,
    data: bytes = b"",
    final: bool = True,
    immediate: bool = False,
    lun: int = 0,
) -> Pdu:
    flags = (0x80 if final else 0) | (0x40 if read else 0) | (0x20 if write else 0) | 0x01
    cdb16 = cdb.ljust(16, b"\x00")
    bhs = bytearray(
        build_bhs(
            Op.SCSI_COMMAND | (0x40 if immediate else 0),
            flags,
            lun=bytes([0, lun]) + bytes(6),
            itt=itt,
            words=(edtl, cmd_sn, 0),
        )
    )
    bhs[32:48] = cdb16
    return Pdu(bytes(bhs), b"", data)


def data_out(*, itt: int, ttt: int, data_sn: int, offset: int, data: bytes, final: bool) -> Pdu:
    bhs = build_bhs(
        Op.DATA_OUT,
        0x80 if final else 0,
        itt=itt,
        words=(ttt, 0, 0, 0, data_sn, offset, 0),
    )
    return Pdu(bhs, b"", data)


def nop_out(*, itt: int, ttt: int = 0xFFFFFFFF, cmd_sn: int, data: bytes = b"") -> Pdu:
    bhs = build_bhs(Op.NOP_OUT | 0x40, 0x80, itt=itt, words=(ttt, cmd_sn, 0))
    return Pdu(bhs, b"", data)


def task_mgmt(*, function: int, itt: int, ref_itt: int, cmd_sn: int, ref_cmd_sn: int = 0) -> Pdu:
    bhs = build_bhs(
        Op.TASK_MGMT_REQUEST | 0x40,
        0x80 | function,
        itt=itt,
        words=(ref_itt, cmd_sn, 0, ref_cmd_sn),
    )
    return Pdu(bhs)


def text_request(keys: list[tuple[str, str]], *, itt: int, cmd_sn: int) -> Pdu:
    bhs = build_bhs(Op.TEXT_REQUEST | 0x40, 0x80, itt=itt, words=(0xFFFFFFFF, cmd_sn, 0))
    return Pdu(bhs, b"", encode_text(keys))


def logout(*, itt: int, cmd_sn: int, reason: int = 0) -> Pdu:
    bhs = build_bhs(Op.LOGOUT_REQUEST | 0x40, 0x80 | reason, itt=itt, words=(0, cmd_sn, 0))
    return Pdu(bhs)


def split_pdus(data: bytes, *, header_digest: bool = False, data_digest: bool = False) -> list[Pdu]:
    """Parse the target's output (a stricter twin of PduParser for target opcodes)."""
    out = []
    pos = 0
    while pos < len(data):
        bhs = data[pos : pos + BHS_BYTES]
        assert len(bhs) == BHS_BYTES, "truncated target PDU"
        ahs_bytes = bhs[4] * 4
        length = int.from_bytes(bhs[5:8], "big")
        start = pos + BHS_BYTES + ahs_bytes + (4 if header_digest else 0)
        end = start + length + pad_bytes(length)
        out.append(Pdu(bhs, b"", data[start : start + length]))
        pos = end + (4 if data_digest and length else 0)
    return out


@dataclass
class Harness:
    """A target with one target IQN on a MemoryBackend and one connection to it."""

    target: IscsiTarget
    backend: MemoryBackend
    conn: Connection
    closed: bool = False

    @classmethod
    def make(
        cls, blocks: int = 2048, config: ConnectionConfig | None = None, **kw: object
    ) -> Harness:
        target = IscsiTarget()
        backend = MemoryBackend(blocks, 512, serial="unit0")
        target.add_target(IQN, backend, **kw)  # type: ignore[arg-type]
        conn = Connection(target, config, list_targets=target.target_names)
        return cls(target, backend, conn)

    def send(self, *pdus: Pdu, digests: bool = False) -> list[Pdu]:
        """Feed PDUs, run every Execute to completion, return the target's PDUs."""
        wire = b"".join(encode_pdu(p, header_digest=digests, data_digest=digests) for p in pdus)
        return self.feed(wire, digests=digests)

    def feed(self, wire: bytes, digests: bool = False) -> list[Pdu]:
        events = self.conn.receive_data(wire)
        self._run(events)
        return split_pdus(self.conn.data_to_send(), header_digest=digests, data_digest=digests)

    def _run(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Close):
                self.closed = True
                continue
            if not isinstance(event, Execute):
                continue
            lu = self.target._lu(event.target)
            assert lu is not None
            result = asyncio.run(lu.handle(event.cdb, event.data_out, event.nexus, event.lun))
            self.conn.complete(event.itt, result)

    def login(self, extra: list[tuple[str, str]] | None = None) -> list[Pdu]:
        keys = [
            ("InitiatorName", INITIATOR),
            ("TargetName", IQN),
            ("SessionType", "Normal"),
            ("AuthMethod", "None"),
        ]
        replies = self.send(login_pdu(keys, csg=0, nsg=1))
        assert replies[0].bhs[36] == 0, replies[0].bhs[36:38].hex()
        op_keys = [
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "16384"),
            ("FirstBurstLength", "4096"),
            ("MaxRecvDataSegmentLength", "4096"),
            ("MaxOutstandingR2T", "1"),
            ("ErrorRecoveryLevel", "0"),
        ]
        overrides = dict(extra or [])
        op_keys = [(k, overrides.pop(k, v)) for k, v in op_keys] + list(overrides.items())
        replies = self.send(login_pdu(op_keys, csg=1, nsg=3, itt=2))
        assert replies[0].bhs[36:38] == b"\x00\x00", replies[0].bhs[36:38].hex()
        return replies


def keys_of(pdu: Pdu) -> dict[str, str]:
    return dict(decode_text(pdu.data))
