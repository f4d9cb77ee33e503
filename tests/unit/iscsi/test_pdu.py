"""PDU framing: whole, byte-by-byte, trailing garbage, digests, limits, and a fuzz target."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.iscsi.crc import crc32c, crc32c_table, digest_bytes
from blockd.iscsi.pdu import DigestError, Op, Pdu, PduParser, ProtocolError, build_bhs, encode_pdu

from .initiator import data_out, nop_out, scsi_command


def sample_pdus() -> list[Pdu]:
    return [
        nop_out(itt=1, cmd_sn=1, data=b"ping"),
        scsi_command(
            bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), itt=2, cmd_sn=2, edtl=512, read=True
        ),
        data_out(
            itt=3, ttt=7, data_sn=0, offset=0, data=bytes(range(256)) * 2 + b"odd", final=True
        ),
        Pdu(build_bhs(Op.SCSI_COMMAND, 0x80), ahs=b"\x00\x05\x01\x00" + b"ABCD"),
    ]


def test_crc32c_known_vectors() -> None:
    # RFC 3720 B.4: 32 bytes of zeros -> aa 36 91 8a on the wire; "123456789" -> e3069283.
    assert digest_bytes(bytes(32)) == bytes.fromhex("aa36918a")
    assert digest_bytes(b"\xff" * 32) == bytes.fromhex("43aba862")
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c_table(b"123456789") == 0xE3069283
    assert crc32c_table(bytes(range(32))) == crc32c(bytes(range(32)))


@pytest.mark.parametrize("digests", [False, True])
def test_parse_whole_and_bytewise(digests: bool) -> None:
    pdus = sample_pdus()
    wire = b"".join(encode_pdu(p, header_digest=digests, data_digest=digests) for p in pdus)
    whole = PduParser(8192)
    whole.set_digests(digests, digests)
    assert [(p.opcode, p.ahs, p.data) for p in whole.feed(wire)] == [
        (p.opcode, p.ahs, p.data) for p in pdus
    ]
    bytewise = PduParser(8192)
    bytewise.set_digests(digests, digests)
    got: list[Pdu] = []
    for i in range(len(wire)):
        got += bytewise.feed(wire[i : i + 1])
    assert [p.data for p in got] == [p.data for p in pdus]
    assert bytewise.buffered_bytes == 0


def test_trailing_garbage_is_kept_until_complete_then_rejected() -> None:
    parser = PduParser(8192)
    wire = encode_pdu(sample_pdus()[0])
    # a BHS claiming a data segment beyond MaxRecvDataSegmentLength is a protocol error
    bad = bytearray(build_bhs(Op.NOP_OUT, 0x80))
    bad[5:8] = (9000).to_bytes(3, "big")
    # a partial second PDU stays buffered and yields nothing yet
    assert len(parser.feed(wire + bytes(bad[:20]))) == 1
    assert parser.buffered_bytes == 20
    with pytest.raises(ProtocolError):
        parser.feed(bytes(bad[20:]))
    with pytest.raises(ProtocolError):  # the parser stays failed
        parser.feed(b"")


def test_digest_mismatch_is_reported() -> None:
    wire = bytearray(encode_pdu(sample_pdus()[0], header_digest=True, data_digest=True))
    wire[-1] ^= 0xFF
    parser = PduParser(8192)
    parser.set_digests(True, True)
    with pytest.raises(DigestError):
        parser.feed(bytes(wire))
    wire = bytearray(encode_pdu(sample_pdus()[0], header_digest=True))
    wire[49] ^= 0x01
    parser = PduParser(8192)
    parser.set_digests(True, False)
    with pytest.raises(DigestError):
        parser.feed(bytes(wire))


def test_padding_and_lengths_in_encoding() -> None:
    pdu = data_out(itt=1, ttt=1, data_sn=0, offset=0, data=b"abcde", final=True)
    wire = encode_pdu(pdu)
    assert len(wire) == 48 + 8
    assert int.from_bytes(wire[5:8], "big") == 5
    assert wire[-3:] == b"\x00\x00\x00"


def test_pdu_validates_construction() -> None:
    with pytest.raises(ProtocolError):
        Pdu(b"short")
    with pytest.raises(ProtocolError):
        Pdu(bytes(48), ahs=b"123")


def test_parser_limits_validated() -> None:
    with pytest.raises(ValueError):
        PduParser(100)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans(), st.integers(min_value=1, max_value=64))
def test_fuzz_parses_or_raises_protocol_error(data: bytes, digests: bool, step: int) -> None:
    """Arbitrary bytes in arbitrary chunks: PDUs or ProtocolError, nothing else."""
    parser = PduParser(512)
    parser.set_digests(digests, digests)
    try:
        for i in range(0, len(data), step):
            for pdu in parser.feed(data[i : i + step]):
                assert len(pdu.bhs) == 48
    except ProtocolError:
        pass


def _stream(sizes: list[int], digests: bool) -> tuple[list[Pdu], bytes]:
    pdus = [
        data_out(itt=i, ttt=7, data_sn=0, offset=0, data=bytes([i % 251]) * n, final=True)
        for i, n in enumerate(sizes)
    ]
    wire = b"".join(encode_pdu(p, header_digest=digests, data_digest=digests) for p in pdus)
    return pdus, wire


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0, 1, 3, 4, 4095, 5000, 70001]), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12),
    st.booleans(),
)
def test_any_chunking_gives_the_same_pdus(sizes: list[int], cuts: list[int], digests: bool) -> None:
    """PDUs split over chunks of any size (views of large chunks, small ones joined) come out
    whole and equal, with nothing left buffered."""
    pdus, wire = _stream(sizes, digests)
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    parser = PduParser(1 << 17)
    parser.set_digests(digests, digests)
    got: list[Pdu] = []
    for start, stop in itertools.pairwise(bounds):
        got += parser.feed(wire[start:stop])
    assert [(p.bhs[16:20], p.data) for p in got] == [(p.bhs[16:20], p.data) for p in pdus]
    assert all(type(p.data) is bytes for p in got)
    assert parser.buffered_bytes == 0


@pytest.mark.parametrize("flip", ["header", "data", "data_digest"])
def test_digest_mismatch_in_a_pdu_split_over_chunks(flip: str) -> None:
    _, wire = _stream([70001], True)
    broken = bytearray(wire)
    broken[{"header": 20, "data": 60000, "data_digest": len(wire) - 1}[flip]] ^= 0x01
    parser = PduParser(1 << 17)
    parser.set_digests(True, True)
    assert parser.feed(bytes(broken[:30000])) == []
    with pytest.raises(DigestError):
        parser.feed(bytes(broken[30000:]))


def test_a_trickle_of_tiny_chunks_is_held_compactly() -> None:
    _, wire = _stream([5000, 3], False)
    parser = PduParser(8192)
    got: list[Pdu] = []
    for i in range(0, len(wire), 7):
        got += parser.feed(wire[i : i + 7])
        assert len(parser._pending) <= 2  # one view of a chunk, one bytearray of small ones
    assert [len(p.data) for p in got] == [5000, 3]
