"""iSCSI PDU framing (RFC 7143 section 11), sans-IO.

A PDU on the wire is a 48-byte Basic Header Segment (BHS), optional Additional Header Segments
(AHS, ``TotalAHSLength`` 4-byte words), an optional 4-byte header digest, a data segment of
``DataSegmentLength`` bytes padded to a multiple of 4, and an optional 4-byte data digest.

:class:`PduParser` is fed arbitrary byte chunks and returns complete :class:`Pdu` objects. Any
malformed input raises :class:`ProtocolError` (never another exception); after that the parser is
dead and the connection must be dropped. :func:`encode_pdu` is the reverse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from blockd.iscsi.crc import digest_bytes

__all__ = [
    "BHS_BYTES",
    "BHS_STRUCT",
    "RESERVED_TAG",
    "DigestError",
    "Op",
    "Pdu",
    "PduParser",
    "ProtocolError",
    "RejectReason",
    "encode_pdu",
    "encode_pdu_parts",
]

BHS_BYTES = 48
DIGEST_BYTES = 4
AHS_BYTES_MAX = 255 * 4  # TotalAHSLength is one byte of 4-byte words
DATA_SEGMENT_BYTES_LIMIT = (1 << 24) - 1  # DataSegmentLength is 24 bits
SMALL_CHUNK_BYTES = 4096  # held-over chunks shorter than this are copied together, not viewed
RESERVED_TAG = 0xFFFFFFFF


class Op(IntEnum):
    """PDU opcodes (the low 6 bits of byte 0)."""

    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


INITIATOR_OPS = frozenset(
    {
        Op.NOP_OUT,
        Op.SCSI_COMMAND,
        Op.TASK_MGMT_REQUEST,
        Op.LOGIN_REQUEST,
        Op.TEXT_REQUEST,
        Op.DATA_OUT,
        Op.LOGOUT_REQUEST,
        Op.SNACK_REQUEST,
    }
)


class RejectReason(IntEnum):
    """Reason codes of the Reject PDU (RFC 7143 11.17.1)."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OP_REJECT = 0x0A
    WAITING_FOR_LOGOUT = 0x0C


class ProtocolError(Exception):
    """The peer broke the protocol. ``reason`` is the Reject reason to report if one can be sent."""

    def __init__(
        self, message: str, reason: RejectReason = RejectReason.PROTOCOL_ERROR, bhs: bytes = b""
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.bhs = bhs


class DigestError(ProtocolError):
    """A header or data digest did not match; at ErrorRecoveryLevel 0 the connection is dropped."""


# Not frozen: treated as immutable, but frozen dataclass construction costs several times
# more and this is built once or more per SCSI command.
@dataclass(slots=True)
class Pdu:
    """One PDU: the 48-byte BHS, the AHS bytes and the (unpadded) data segment."""

    bhs: bytes
    ahs: bytes = b""
    data: bytes = b""

    def __post_init__(self) -> None:
        if len(self.bhs) != BHS_BYTES:
            raise ProtocolError(f"BHS must be {BHS_BYTES} bytes, got {len(self.bhs)}")
        if len(self.ahs) % 4 or len(self.ahs) > AHS_BYTES_MAX:
            raise ProtocolError(f"bad AHS length {len(self.ahs)}")
        if len(self.data) > DATA_SEGMENT_BYTES_LIMIT:
            raise ProtocolError(f"data segment of {len(self.data)} bytes is too long")

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    @property
    def immediate(self) -> bool:
        return bool(self.bhs[0] & 0x40)

    @property
    def flags(self) -> int:
        return self.bhs[1]

    @property
    def final(self) -> bool:
        return bool(self.bhs[1] & 0x80)

    @property
    def lun_field(self) -> bytes:
        return self.bhs[8:16]

    @property
    def itt(self) -> int:
        return self.u32(16)

    def u32(self, offset: int) -> int:
        """The big-endian 32-bit field at byte ``offset`` of the BHS."""
        value: int = struct.unpack_from(">I", self.bhs, offset)[0]
        return value

    def u16(self, offset: int) -> int:
        value: int = struct.unpack_from(">H", self.bhs, offset)[0]
        return value


def build_bhs(
    opcode: int,
    byte1: int,
    *,
    byte2: int = 0,
    byte3: int = 0,
    data_length: int = 0,
    lun: bytes = bytes(8),
    itt: int = RESERVED_TAG,
    words: tuple[int, ...] = (),
) -> bytes:
    """A BHS with the common fields set; ``words`` are the seven u32 fields at bytes 20..47."""
    if len(words) > 7:
        raise ValueError("at most 7 words fit in bytes 20..47")
    if not 0 <= data_length <= 0xFFFFFF:
        raise ValueError(f"data segment length {data_length} does not fit in 24 bits")
    if len(words) < 7:
        words = (*words, *_ZERO_WORDS[len(words) :])
    return _BHS.pack(opcode, byte1, byte2, byte3, data_length, lun, itt, *words)


# TotalAHSLength is 0: the u32 at byte 4 is the data length.
BHS_STRUCT = _BHS = struct.Struct(">BBBBI8sI7I")
_ZERO_WORDS = (0,) * 7


def pad_bytes(length: int) -> int:
    """Padding after a data segment of ``length`` bytes to reach a 4-byte boundary."""
    return -length % 4


def encode_pdu(pdu: Pdu, *, header_digest: bool = False, data_digest: bool = False) -> bytes:
    """The wire bytes of ``pdu``; DataSegmentLength and TotalAHSLength are filled in here."""
    return b"".join(encode_pdu_parts(pdu, header_digest=header_digest, data_digest=data_digest))


def encode_pdu_parts(
    pdu: Pdu, *, header_digest: bool = False, data_digest: bool = False
) -> list[bytes]:
    """:func:`encode_pdu` as a list of buffers to write in order (the data is not copied)."""
    bhs = pdu.bhs
    lengths = (len(pdu.ahs) // 4).to_bytes(1, "big") + len(pdu.data).to_bytes(3, "big")
    if bhs[4:8] != lengths:  # builders fill these in already; parsed or hand-made PDUs may not
        bhs = bhs[:4] + lengths + bhs[8:]
    header = bhs + pdu.ahs if pdu.ahs else bhs
    parts = [header]
    if header_digest:
        parts.append(digest_bytes(header))
    data = pdu.data
    if data:
        pad = pad_bytes(len(data))
        parts.append(data)
        if pad:
            parts.append(bytes(pad))
        if data_digest:
            parts.append(digest_bytes(data + bytes(pad) if pad else data))
    return parts


class PduParser:
    """Incremental PDU parser; feed bytes in any chunking, get complete PDUs back.

    The parser checks framing only (lengths, digests); opcodes and fields are checked by the
    connection, which can answer a well-framed but bad PDU with a Reject and carry on.

    ``data_bytes_max`` is our MaxRecvDataSegmentLength: a longer data segment is a protocol error
    (RFC 7143 13.12). Digests are switched on with :meth:`set_digests` after login.

    Copies: PDUs inside a received chunk are parsed in place (their data segment is copied
    once, out of the chunk). A PDU split over chunks is held as views of those chunks until it
    is complete, then its header and its data segment are each copied once out of them; the
    rest of the last chunk is parsed in place again.
    """

    def __init__(self, data_bytes_max: int, buffer_bytes_max: int = 16 << 20) -> None:
        if not 512 <= data_bytes_max <= DATA_SEGMENT_BYTES_LIMIT:
            raise ValueError(f"data_bytes_max out of range: {data_bytes_max}")
        self._data_bytes_max = data_bytes_max
        self._buffer_bytes_max = max(buffer_bytes_max, data_bytes_max * 2 + 2048)
        # The start of an incomplete PDU: views of the chunks it came in, with runs of small
        # chunks joined into a bytearray (so a trickle of tiny segments costs no view each).
        self._pending: list[memoryview | bytearray] = []
        self._pending_bytes = 0
        self._need_bytes = BHS_BYTES  # pending bytes needed before trying to parse again
        self._header_digest = False
        self._data_digest = False
        self._failed: ProtocolError | None = None

    def set_digests(self, header: bool, data: bool) -> None:
        self._header_digest = header
        self._data_digest = data

    def set_data_bytes_max(self, data_bytes_max: int) -> None:
        if not 512 <= data_bytes_max <= DATA_SEGMENT_BYTES_LIMIT:
            raise ValueError(f"data_bytes_max out of range: {data_bytes_max}")
        self._data_bytes_max = data_bytes_max

    @property
    def buffered_bytes(self) -> int:
        return self._pending_bytes

    def feed(self, chunk: bytes) -> list[Pdu]:
        """Add ``chunk``; return every PDU now complete. Raises ProtocolError on bad input."""
        if self._failed is not None:
            raise self._failed
        if not chunk:
            return []
        if self._pending_bytes + len(chunk) > self._buffer_bytes_max:
            self._fail(ProtocolError("input buffer limit exceeded"))
        out: list[Pdu] = []
        buf: bytes | memoryview = chunk
        pos = 0
        try:
            if self._pending:
                self._hold(chunk)
                if self._pending_bytes < self._need_bytes:
                    return out
                first = self._take_pending()
                if first is None:
                    return out
                pdu, buf = first
                out.append(pdu)
            while True:
                parsed = self._next(buf, pos)
                if parsed is None:
                    break
                pdu, pos = parsed
                out.append(pdu)
            if pos < len(buf):  # an incomplete PDU: hold a view of it (no copy)
                tail = memoryview(buf)[pos:]
                self._pending = [tail]
                self._pending_bytes = len(tail)
                self._need_bytes = self._frame_bytes(tail) or BHS_BYTES
        except ProtocolError as exc:
            self._fail(exc)
        return out

    def _hold(self, chunk: bytes) -> None:
        pending = self._pending
        if len(chunk) >= SMALL_CHUNK_BYTES:
            pending.append(memoryview(chunk))
        elif isinstance(pending[-1], bytearray):
            pending[-1] += chunk  # no view of it exists (views are only taken of the others)
        else:
            pending.append(bytearray(chunk))
        self._pending_bytes += len(chunk)

    def _take_pending(self) -> tuple[Pdu, memoryview] | None:
        """The PDU the pending views now complete and the rest of the last chunk, or None
        (with ``_need_bytes`` raised) while it is still incomplete."""
        pending = self._pending
        if self._need_bytes == BHS_BYTES:  # the header was incomplete: now its length is known
            head = _gather(pending, 0, BHS_BYTES + 4)
            self._need_bytes = self._frame_bytes(head) or BHS_BYTES
            if self._pending_bytes < self._need_bytes:
                return None
        end = self._need_bytes
        head = _gather(pending, 0, min(end, BHS_BYTES + AHS_BYTES_MAX + DIGEST_BYTES))
        frame = self._frame(head, 0)
        data_start, data_length, padded_end = frame[1], frame[2], frame[3]
        data = _gather(pending, data_start, data_start + data_length)
        pdu = self._build(head, 0, frame, data, pending)
        last = pending[-1]
        last_view = last if isinstance(last, memoryview) else memoryview(bytes(last))
        rest = last_view[len(last) - (self._pending_bytes - end) :]
        self._pending = []
        self._pending_bytes = 0
        self._need_bytes = BHS_BYTES
        assert padded_end <= end
        return pdu, rest

    def _fail(self, exc: ProtocolError) -> None:
        self._failed = exc
        self._pending = []
        self._pending_bytes = 0
        raise exc

    def _frame(self, buf: bytes | memoryview, pos: int) -> tuple[int, int, int, int, int]:
        """(header_end, data_start, data_length, padded_end, end) of the PDU at ``pos``, whose
        BHS must be in ``buf``. Raises ProtocolError for a data segment that is too long."""
        lengths: int = _U32.unpack_from(buf, pos + 4)[0]
        data_length = lengths & 0xFFFFFF
        if data_length > self._data_bytes_max:
            raise ProtocolError(
                f"data segment of {data_length} bytes exceeds MaxRecvDataSegmentLength "
                f"{self._data_bytes_max}",
                RejectReason.PROTOCOL_ERROR,
                bytes(buf[pos : pos + BHS_BYTES]),
            )
        header_end = pos + BHS_BYTES + (lengths >> 24) * 4
        data_start = header_end + (DIGEST_BYTES if self._header_digest else 0)
        padded_end = data_start + data_length + (-data_length % 4)
        end = padded_end + (DIGEST_BYTES if (self._data_digest and data_length) else 0)
        return header_end, data_start, data_length, padded_end, end

    def _frame_bytes(self, buf: bytes | memoryview) -> int:
        """The whole length of the PDU starting ``buf``, or 0 if its BHS is not all there."""
        if len(buf) < BHS_BYTES:
            return 0
        return self._frame(buf, 0)[4]

    def _next(self, buf: bytes | memoryview, pos: int) -> tuple[Pdu, int] | None:
        """The PDU starting at ``pos`` of ``buf`` and the offset after it, or None if incomplete."""
        if len(buf) - pos < BHS_BYTES:
            return None
        frame = self._frame(buf, pos)
        end = frame[4]
        if len(buf) < end:
            return None
        header_end, data_start, data_length = frame[0], frame[1], frame[2]
        if not data_length:
            data = b""
        elif isinstance(buf, bytes):
            data = buf[data_start : data_start + data_length]  # one copy
        else:
            data = bytes(buf[data_start : data_start + data_length])
        if data_start != pos + BHS_BYTES or self._data_digest:  # AHS or digests to check
            return self._build(buf, pos, frame, data, None), end
        pdu = _new_pdu(Pdu)  # the common case of _build, inline
        pdu.bhs = bytes(buf[pos:header_end])
        pdu.ahs = b""
        pdu.data = data
        return pdu, end

    def _build(
        self,
        buf: bytes | memoryview,
        pos: int,
        frame: tuple[int, int, int, int, int],
        data: bytes,
        pending: list[memoryview | bytearray] | None,
    ) -> Pdu:
        """Check the digests of the PDU framed at ``pos`` of ``buf`` (whose data segment is
        ``data``; its padding and digest are in ``buf``, or at the same offsets in the
        ``pending`` views) and make the Pdu."""
        header_end, data_start, data_length, padded_end, end = frame
        bhs = bytes(buf[pos : pos + BHS_BYTES])
        ahs = bytes(buf[pos + BHS_BYTES : header_end]) if header_end > pos + BHS_BYTES else b""
        if self._header_digest:
            received = bytes(buf[header_end:data_start])
            if received != digest_bytes(bhs + ahs):
                raise DigestError("header digest mismatch", RejectReason.PROTOCOL_ERROR, bhs)
        if self._data_digest and data_length:
            if pending is None:
                padded = buf[data_start:padded_end]
                received = bytes(buf[padded_end:end])
            else:
                padded = _gather(pending, data_start, padded_end)
                received = _gather(pending, padded_end, end)
            if received != digest_bytes(padded):
                raise DigestError("data digest mismatch", RejectReason.DATA_DIGEST_ERROR, bhs)
        # The lengths were checked when framing: skip Pdu.__init__'s checks (a PDU a command).
        pdu = _new_pdu(Pdu)
        pdu.bhs = bhs
        pdu.ahs = ahs
        pdu.data = data
        return pdu


def _gather(views: list[memoryview | bytearray], start: int, stop: int) -> bytes:
    """Bytes [start, stop) of the concatenation of ``views``, copied once."""
    parts: list[memoryview] = []
    offset = 0
    for view in views:
        size = len(view)
        if offset + size > start and offset < stop:
            mv = view if isinstance(view, memoryview) else memoryview(view)
            parts.append(mv[max(start - offset, 0) : stop - offset])
        offset += size
        if offset >= stop:
            break
    if len(parts) == 1:
        return bytes(parts[0])
    return b"".join(parts)


_U32 = struct.Struct(">I")
_new_pdu = object.__new__
