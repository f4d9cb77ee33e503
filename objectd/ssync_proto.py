"""The SSYNC wire protocol, sans-IO: feed bytes, get typed events; encode events to bytes.

One SSYNC exchange syncs one partition over one HTTP request: the request body is the
sender's stream, the response body the receiver's, both flowing at the same time. Each
stream starts with an 8-byte preamble (``b"CSSYNC"`` + big-endian u16 version) followed by
frames ``>BI`` (type, payload length) + payload. Control payloads are msgpack; ``DATA``
payloads are raw object bytes. See docs/object-replication.md for the conversation.

Nothing here does I/O. Any violation (bad magic, unknown or out-of-order frame, oversized
frame, bad msgpack, bad field) raises `ProtocolError` and the parser stays broken.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from common.timestamps import Timestamp, TimestampError
from objectd.fileformat import ETAG_ALGS, FileFormatError, ObjectMetadata

__all__ = [
    "CONTROL_BYTES_MAX",
    "DATA_BYTES_MAX",
    "ENTRIES_PER_FRAME_MAX",
    "ETAG_ALGS_HEADER",
    "ETAG_ALGS_TEXT",
    "PREAMBLE",
    "VERSION",
    "Data",
    "End",
    "Event",
    "FileEnd",
    "FileStart",
    "FrameType",
    "Offer",
    "OfferEnd",
    "OfferEntry",
    "ProtocolError",
    "ReceiverParser",
    "RemoteError",
    "Result",
    "SenderParser",
    "Want",
    "WantEnd",
    "WantEntry",
    "encode",
]

VERSION = 1
PREAMBLE = b"CSSYNC" + struct.pack(">H", VERSION)
HEADER = struct.Struct(">BI")
# The receiver's 200 answer lists the ETag algorithms of the files it takes (FILE records with
# `etag_alg`, object format version 2: docs/object-format.md). A receiver without the header
# takes MD5 files only, and a sender does not send it any other (docs/object-replication.md).
ETAG_ALGS_HEADER = "X-Backend-Ssync-Etag-Algs"
ETAG_ALGS_TEXT = " ".join(ETAG_ALGS)
CONTROL_BYTES_MAX = 8 << 20  # a FILE frame carries object metadata (up to 4 MiB)
DATA_BYTES_MAX = 1 << 20
ENTRIES_PER_FRAME_MAX = 4096
ERRORS_MAX = 32
MESSAGE_CHARS_MAX = 1024
_HEX = frozenset("0123456789abcdef")
_KINDS = frozenset({"data", "ts", "meta"})


class ProtocolError(Exception):
    """The peer broke the protocol; the exchange is over."""


class FrameType(IntEnum):
    # sender -> receiver
    OFFER = 1
    OFFER_END = 2
    FILE = 3
    DATA = 4
    FILE_END = 5
    END = 6
    # receiver -> sender
    WANT = 16
    WANT_END = 17
    RESULT = 18
    ERROR = 19


def _check_hash(value: object) -> str:
    if not (isinstance(value, str) and len(value) == 32 and set(value) <= _HEX):
        raise ProtocolError("object hash must be 32 lowercase hex digits")
    return value


def _check_ts(value: object) -> Timestamp | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("timestamp must be a string")
    try:
        return Timestamp.parse(value)
    except TimestampError:
        raise ProtocolError(f"bad timestamp {value[:40]!r}") from None


@dataclass(frozen=True)
class OfferEntry:
    """What the sender holds for one object: its base file (.data or .ts) and newer .meta."""

    hash_hex: str
    base: tuple[Timestamp, str] | None
    meta: Timestamp | None

    def __post_init__(self) -> None:
        _check_hash(self.hash_hex)
        if self.base is not None and self.base[1] not in ("data", "ts"):
            raise ProtocolError("base kind must be data or ts")
        if self.base is None and self.meta is None:
            raise ProtocolError("an offer entry names at least one file")

    def to_wire(self) -> list[Any]:
        b = self.base
        return [
            self.hash_hex,
            b[0].internal if b else None,
            b[1] if b else None,
            self.meta.internal if self.meta else None,
        ]

    @classmethod
    def from_wire(cls, item: object) -> OfferEntry:
        if not (isinstance(item, list) and len(item) == 4):
            raise ProtocolError("offer entry must be [hash, base_ts, base_kind, meta_ts]")
        ts = _check_ts(item[1])
        if (ts is None) != (item[2] is None):
            raise ProtocolError("base timestamp and kind go together")
        base = None if ts is None else (ts, item[2])
        if base is not None and base[1] not in ("data", "ts"):
            raise ProtocolError("base kind must be data or ts")
        return cls(_check_hash(item[0]), base, _check_ts(item[3]))


@dataclass(frozen=True)
class WantEntry:
    hash_hex: str
    kinds: tuple[str, ...]  # subset of data/ts/meta

    def __post_init__(self) -> None:
        _check_hash(self.hash_hex)
        if (
            not self.kinds
            or not set(self.kinds) <= _KINDS
            or len(set(self.kinds)) != len(self.kinds)
        ):
            raise ProtocolError("want kinds must be distinct, from data/ts/meta")

    def to_wire(self) -> list[Any]:
        return [self.hash_hex, list(self.kinds)]

    @classmethod
    def from_wire(cls, item: object) -> WantEntry:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], list)):
            raise ProtocolError("want entry must be [hash, [kinds]]")
        if not all(isinstance(k, str) for k in item[1]):
            raise ProtocolError("want kinds must be strings")
        return cls(_check_hash(item[0]), tuple(item[1]))


@dataclass(frozen=True)
class Offer:
    entries: tuple[OfferEntry, ...]


@dataclass(frozen=True)
class OfferEnd:
    pass


@dataclass(frozen=True)
class FileStart:
    hash_hex: str
    metadata: ObjectMetadata


@dataclass(frozen=True)
class Data:
    data: bytes


@dataclass(frozen=True)
class FileEnd:
    pass


@dataclass(frozen=True)
class End:
    pass


@dataclass(frozen=True)
class Want:
    entries: tuple[WantEntry, ...]


@dataclass(frozen=True)
class WantEnd:
    pass


@dataclass(frozen=True)
class Result:
    written: int
    skipped: int
    failed: int
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoteError:
    message: str


Event = Offer | OfferEnd | FileStart | Data | FileEnd | End | Want | WantEnd | Result | RemoteError


def _frame(ftype: FrameType, payload: bytes) -> bytes:
    limit = DATA_BYTES_MAX if ftype == FrameType.DATA else CONTROL_BYTES_MAX
    assert len(payload) <= limit, f"{ftype.name} frame of {len(payload)} bytes"
    return HEADER.pack(ftype, len(payload)) + payload


def _pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def encode(event: Event) -> bytes:
    """The frame bytes of one event (a DATA payload must be at most DATA_BYTES_MAX)."""
    if isinstance(event, Offer | Want):
        assert len(event.entries) <= ENTRIES_PER_FRAME_MAX
        ftype = FrameType.OFFER if isinstance(event, Offer) else FrameType.WANT
        return _frame(ftype, _pack([e.to_wire() for e in event.entries]))
    if isinstance(event, FileStart):
        file_rec = {"hash": event.hash_hex, "record": event.metadata.to_record()}
        return _frame(FrameType.FILE, _pack(file_rec))
    if isinstance(event, Data):
        return _frame(FrameType.DATA, event.data)
    if isinstance(event, Result):
        rec: dict[str, object] = {
            "written": event.written,
            "skipped": event.skipped,
            "failed": event.failed,
            "errors": [e[:MESSAGE_CHARS_MAX] for e in event.errors[:ERRORS_MAX]],
        }
        return _frame(FrameType.RESULT, _pack(rec))
    if isinstance(event, RemoteError):
        return _frame(FrameType.ERROR, _pack({"message": event.message[:MESSAGE_CHARS_MAX]}))
    empty = {
        OfferEnd: FrameType.OFFER_END,
        FileEnd: FrameType.FILE_END,
        End: FrameType.END,
        WantEnd: FrameType.WANT_END,
    }
    return _frame(empty[type(event)], b"")


def _unpack(payload: bytes) -> object:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as e:
        raise ProtocolError(f"bad msgpack payload: {e}") from None


def _entries(payload: bytes, what: str) -> list[object]:
    items = _unpack(payload)
    if not isinstance(items, list) or len(items) > ENTRIES_PER_FRAME_MAX:
        raise ProtocolError(f"{what} must be a list of at most {ENTRIES_PER_FRAME_MAX} entries")
    return items


def _decode_file(payload: bytes) -> FileStart:
    rec = _unpack(payload)
    if not (isinstance(rec, dict) and set(rec) == {"hash", "record"}):
        raise ProtocolError("FILE must be {hash, record}")
    try:
        md = ObjectMetadata.from_record(rec["record"])
    except FileFormatError as e:
        raise ProtocolError(f"bad object metadata: {e}") from None
    return FileStart(_check_hash(rec["hash"]), md)


def _nonneg(rec: dict[Any, Any], key: str) -> int:
    v = rec.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ProtocolError(f"RESULT {key} must be a non-negative integer")
    return v


def _decode_result(payload: bytes) -> Result:
    rec = _unpack(payload)
    if not isinstance(rec, dict):
        raise ProtocolError("RESULT must be a map")
    errors = rec.get("errors")
    if not (isinstance(errors, list) and len(errors) <= ERRORS_MAX):
        raise ProtocolError("RESULT errors must be a short list")
    if not all(isinstance(e, str) for e in errors):
        raise ProtocolError("RESULT errors must be strings")
    return Result(
        _nonneg(rec, "written"),
        _nonneg(rec, "skipped"),
        _nonneg(rec, "failed"),
        tuple(e[:MESSAGE_CHARS_MAX] for e in errors),
    )


def _decode_error(payload: bytes) -> RemoteError:
    rec = _unpack(payload)
    if not (isinstance(rec, dict) and isinstance(rec.get("message"), str)):
        raise ProtocolError("ERROR must be {message}")
    return RemoteError(rec["message"][:MESSAGE_CHARS_MAX])


def _decode(ftype: FrameType, payload: bytes) -> Event:
    if ftype == FrameType.OFFER:
        return Offer(tuple(OfferEntry.from_wire(i) for i in _entries(payload, "OFFER")))
    if ftype == FrameType.WANT:
        return Want(tuple(WantEntry.from_wire(i) for i in _entries(payload, "WANT")))
    if ftype == FrameType.FILE:
        return _decode_file(payload)
    if ftype == FrameType.DATA:
        return Data(payload)
    if ftype == FrameType.RESULT:
        return _decode_result(payload)
    if ftype == FrameType.ERROR:
        return _decode_error(payload)
    if payload:
        raise ProtocolError(f"{ftype.name} frame must be empty")
    empty: dict[FrameType, Event] = {
        FrameType.OFFER_END: OfferEnd(),
        FrameType.FILE_END: FileEnd(),
        FrameType.END: End(),
        FrameType.WANT_END: WantEnd(),
    }
    return empty[ftype]


# Legal transitions: (state, frame type) -> next state. Anything else is a protocol error.
# The receiver parses the sender's stream; the sender parses the receiver's.
RECEIVER_TABLE: dict[tuple[str, FrameType], str] = {
    ("offers", FrameType.OFFER): "offers",
    ("offers", FrameType.OFFER_END): "files",
    ("files", FrameType.FILE): "file",
    ("file", FrameType.DATA): "file",
    ("file", FrameType.FILE_END): "files",
    ("files", FrameType.END): "done",
}
SENDER_TABLE: dict[tuple[str, FrameType], str] = {
    ("wants", FrameType.WANT): "wants",
    ("wants", FrameType.WANT_END): "result",
    ("result", FrameType.RESULT): "done",
    ("wants", FrameType.ERROR): "done",
    ("result", FrameType.ERROR): "done",
}


class _StreamParser:
    """Preamble, then frames checked against a transition table."""

    def __init__(self, table: dict[tuple[str, FrameType], str], start: str) -> None:
        self._table = table
        self._buf = bytearray()
        self._preamble_seen = False
        self.state = start
        self.broken: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Event]:
        """Events completed by `data`; ProtocolError on any violation (then always)."""
        if self.broken is not None:
            raise self.broken
        try:
            self._buf += data
            return self._drain()
        except ProtocolError as e:
            self.broken = e
            raise

    def _drain(self) -> list[Event]:
        events: list[Event] = []
        if not self._preamble_seen:
            n = min(len(self._buf), len(PREAMBLE))
            if self._buf[:n] != PREAMBLE[:n]:
                raise ProtocolError("bad preamble (not an SSYNC version 1 stream)")
            if n < len(PREAMBLE):
                return events
            del self._buf[: len(PREAMBLE)]
            self._preamble_seen = True
        while len(self._buf) >= HEADER.size:
            event = self._next_frame()
            if event is None:
                break
            events.append(event)
        return events

    def _next_frame(self) -> Event | None:
        raw_type, length = HEADER.unpack_from(self._buf)
        try:
            ftype = FrameType(raw_type)
        except ValueError:
            raise ProtocolError(f"unknown frame type {raw_type}") from None
        nxt = self._table.get((self.state, ftype))
        if nxt is None:
            raise ProtocolError(f"frame {ftype.name} not allowed in state {self.state}")
        limit = DATA_BYTES_MAX if ftype == FrameType.DATA else CONTROL_BYTES_MAX
        if length > limit:
            raise ProtocolError(f"{ftype.name} frame of {length} bytes exceeds {limit}")
        if len(self._buf) < HEADER.size + length:
            return None
        payload = bytes(self._buf[HEADER.size : HEADER.size + length])
        del self._buf[: HEADER.size + length]
        event = _decode(ftype, payload)
        self.state = nxt
        return event

    def end_of_stream(self) -> None:
        """The peer closed its stream: fine only after its last frame."""
        if self.broken is not None:
            raise self.broken
        if self.state != "done" or self._buf:
            self.broken = ProtocolError(f"stream ended early (state {self.state})")
            raise self.broken

    @property
    def done(self) -> bool:
        return self.state == "done"


class ReceiverParser(_StreamParser):
    """Parses the sender's stream: OFFER* OFFER_END (FILE DATA* FILE_END)* END."""

    def __init__(self) -> None:
        super().__init__(RECEIVER_TABLE, "offers")


class SenderParser(_StreamParser):
    """Parses the receiver's stream: WANT* WANT_END RESULT, or ERROR at any point."""

    def __init__(self) -> None:
        super().__init__(SENDER_TABLE, "wants")


def wanted_kinds(
    local_base: tuple[Timestamp, str] | None, local_meta: Timestamp | None, offer: OfferEntry
) -> tuple[str, ...]:
    """Which of the offered files the receiver should take (the timestamp rules).

    The newest .data or .ts wins (so a tombstone beats older data and newer data beats an
    older tombstone); a .meta counts only above a .data older than it, and only if newer than
    the .meta already held.
    """
    kinds: list[str] = []
    base = local_base
    if offer.base is not None and (base is None or offer.base[0] > base[0]):
        kinds.append(offer.base[1])
        base = offer.base
    if offer.meta is not None:
        over_data = base is None or (base[1] == "data" and offer.meta > base[0])
        newer = local_meta is None or offer.meta > local_meta
        if over_data and newer:
            kinds.append("meta")
    return tuple(kinds)
