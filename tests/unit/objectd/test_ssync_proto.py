"""The SSYNC framing and state machines, sans-IO: whole, byte by byte, and with garbage."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.timestamps import Timestamp
from objectd.fileformat import ObjectMetadata
from objectd.ssync_proto import (
    CONTROL_BYTES_MAX,
    DATA_BYTES_MAX,
    PREAMBLE,
    Data,
    End,
    FileEnd,
    FileStart,
    FrameType,
    Offer,
    OfferEnd,
    OfferEntry,
    ProtocolError,
    ReceiverParser,
    RemoteError,
    Result,
    SenderParser,
    Want,
    WantEnd,
    WantEntry,
    encode,
    wanted_kinds,
)

H1, H2 = "0" * 29 + "abc", "1" * 29 + "def"
T1, T2, T3 = (Timestamp.from_float(1_700_000_000 + i) for i in (1, 2, 3))
MD = ObjectMetadata(
    kind="data",
    name="/a/c/o",
    timestamp=T1,
    content_type="text/plain",
    content_length=5,
    etag="5d41402abc4b2a76b9719d911017c592",
    headers={"X-Object-Meta-Color": "blue"},
    block_xxh3=b"\x01" * 8,
)

SENDER_EVENTS = [
    Offer((OfferEntry(H1, (T1, "data"), T2), OfferEntry(H2, (T3, "ts"), None))),
    Offer((OfferEntry(H2, None, T3),)),
    OfferEnd(),
    FileStart(H1, MD),
    Data(b"hel"),
    Data(b"lo"),
    FileEnd(),
    End(),
]
RECEIVER_EVENTS = [
    Want((WantEntry(H1, ("data", "meta")),)),
    WantEnd(),
    Result(written=2, skipped=0, failed=1, errors=("disk full",)),
]


def _stream(events) -> bytes:
    return PREAMBLE + b"".join(encode(e) for e in events)


def test_sender_stream_round_trips_whole_and_byte_by_byte():
    raw = _stream(SENDER_EVENTS)
    p = ReceiverParser()
    assert p.feed(raw) == SENDER_EVENTS
    p.end_of_stream()
    q = ReceiverParser()
    got = []
    for i in range(len(raw)):
        got += q.feed(raw[i : i + 1])
    assert got == SENDER_EVENTS and q.done


def test_receiver_stream_round_trips_byte_by_byte():
    raw = _stream(RECEIVER_EVENTS)
    p = SenderParser()
    got = [ev for i in range(len(raw)) for ev in p.feed(raw[i : i + 1])]
    assert got == RECEIVER_EVENTS
    p.end_of_stream()


def test_an_error_frame_ends_the_receiver_stream():
    p = SenderParser()
    assert p.feed(_stream([RemoteError("device: gone")])) == [RemoteError("device: gone")]
    assert p.done


def test_golden_bytes_of_small_frames():
    assert PREAMBLE == b"CSSYNC\x00\x01"
    assert encode(OfferEnd()) == b"\x02\x00\x00\x00\x00"
    assert encode(Data(b"ab")) == b"\x04\x00\x00\x00\x02ab"
    assert encode(Offer((OfferEntry(H1, None, T1),))) == (
        b"\x01\x00\x00\x00\x37\x91\x94\xd9\x20" + H1.encode() + b"\xc0\xc0\xb01700000001.00000"
    )


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"CSSYNC\x00\x02", "preamble"),
        (b"HTTP/1.1", "preamble"),
        (PREAMBLE + b"\x63\x00\x00\x00\x00", "unknown frame type"),
        (PREAMBLE + encode(End()), "not allowed in state offers"),
        (PREAMBLE + encode(OfferEnd()) + encode(Data(b"x")), "not allowed in state files"),
        (PREAMBLE + encode(OfferEnd()) + encode(End()) + encode(End()), "state done"),
        (PREAMBLE + struct.pack(">BI", 1, CONTROL_BYTES_MAX + 1), "exceeds"),
        (
            PREAMBLE
            + encode(OfferEnd())
            + encode(FileStart(H1, MD))
            + struct.pack(">BI", 4, DATA_BYTES_MAX + 1),
            "exceeds",
        ),
        (PREAMBLE + struct.pack(">BI", 1, 1) + b"\xc1", "msgpack"),
        (PREAMBLE + struct.pack(">BI", 1, 1) + b"\x01", "list"),
        (PREAMBLE + struct.pack(">BI", 2, 1) + b"\x00", "must be empty"),
    ],
)
def test_bad_input_is_a_protocol_error_and_the_parser_stays_broken(raw, why):
    p = ReceiverParser()
    with pytest.raises(ProtocolError, match=why):
        p.feed(raw)
    with pytest.raises(ProtocolError):
        p.feed(b"")


def _payload_frame(ftype: int, obj: bytes) -> bytes:
    return struct.pack(">BI", ftype, len(obj)) + obj


@pytest.mark.parametrize(
    "payload",
    [
        b"\x91\x94\xa3abc\xc0\xc0\xc0",  # hash too short
        b"\x91\x94\xd9\x20" + H1.upper().encode() + b"\xc0\xc0\xc0",  # not lowercase
        b"\x91\x94\xd9\x20" + H1.encode() + b"\xa3bad\xa4data\xc0",  # bad timestamp
        b"\x91\x94\xd9\x20" + H1.encode() + b"\xb01700000001.00000\xa4meta\xc0",  # base kind
        b"\x91\x94\xd9\x20" + H1.encode() + b"\xc0\xc0\xc0",  # names no file
        b"\x91\x93\xd9\x20" + H1.encode() + b"\xc0\xc0",  # 3 fields
    ],
)
def test_bad_offer_entries_are_refused(payload):
    with pytest.raises(ProtocolError):
        ReceiverParser().feed(PREAMBLE + _payload_frame(1, payload))


def test_bad_file_metadata_is_refused():
    rec = MD.to_record()
    rec["content_length"] = -1
    import msgpack

    bad = msgpack.packb({"hash": H1, "record": rec}, use_bin_type=True)
    p = ReceiverParser()
    p.feed(PREAMBLE + encode(OfferEnd()))
    with pytest.raises(ProtocolError, match="metadata"):
        p.feed(_payload_frame(FrameType.FILE, bad))


def test_a_stream_that_stops_early_is_an_error():
    p = ReceiverParser()
    p.feed(_stream(SENDER_EVENTS[:4]))
    with pytest.raises(ProtocolError, match="ended early"):
        p.end_of_stream()


def test_a_bad_want_is_refused():
    import msgpack

    payload = msgpack.packb([[H1, ["data", "data"]]])
    with pytest.raises(ProtocolError, match="distinct"):
        SenderParser().feed(PREAMBLE + _payload_frame(FrameType.WANT, payload))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=len(_stream(SENDER_EVENTS))))
def test_garbage_parses_or_raises_protocol_error_nothing_else(junk, cut):
    raw = _stream(SENDER_EVENTS)
    for data in (junk, PREAMBLE + junk, raw[:cut] + junk):
        for parser in (ReceiverParser(), SenderParser()):
            with contextlib.suppress(ProtocolError):
                parser.feed(data)


DATA1, DATA2, TS3 = (T1, "data"), (T2, "data"), (T3, "ts")


@pytest.mark.parametrize(
    "local_base, local_meta, offer, want",
    [
        (None, None, OfferEntry(H1, DATA1, None), ("data",)),
        (DATA1, None, OfferEntry(H1, DATA1, None), ()),
        (DATA2, None, OfferEntry(H1, DATA1, None), ()),  # ours is newer
        (DATA1, None, OfferEntry(H1, DATA2, None), ("data",)),  # newer overwrite wins
        (DATA2, None, OfferEntry(H1, TS3, None), ("ts",)),  # tombstone beats older data
        (TS3, None, OfferEntry(H1, DATA2, None), ()),  # older data loses to a tombstone
        (DATA1, None, OfferEntry(H1, DATA1, T2), ("meta",)),
        (DATA1, T3, OfferEntry(H1, DATA1, T2), ()),  # our .meta is newer
        (None, None, OfferEntry(H1, DATA1, T2), ("data", "meta")),
        (TS3, None, OfferEntry(H1, None, T2), ()),  # a .meta over a tombstone is void
        (DATA2, None, OfferEntry(H1, None, T1), ()),  # a .meta older than the data is void
        (None, None, OfferEntry(H1, None, T1), ("meta",)),  # orphan .meta waits for data
    ],
)
def test_timestamp_rules(local_base, local_meta, offer, want):
    assert wanted_kinds(local_base, local_meta, offer) == want
