"""Login: security (None, CHAP, mutual CHAP), operational negotiation, failure status codes."""

from __future__ import annotations

import hashlib
import struct

import pytest

from blockd.iscsi.chap import ChapCredentials, ChapError, ChapTarget, decode_binary
from blockd.iscsi.negotiation import Negotiator, TargetLimits
from blockd.iscsi.pdu import Op, Pdu
from blockd.iscsi.text import TextError, decode_text, encode_text

from .initiator import INITIATOR, IQN, Harness, keys_of, login_pdu

ALICE = ChapCredentials("alice", "alice-secret-1")
TARGET_CREDS = ChapCredentials("tgt", "target-secret-1")


def status(pdu: Pdu) -> int:
    return (pdu.bhs[36] << 8) | pdu.bhs[37]


def md5_response(identifier: int, secret: str, challenge: bytes) -> str:
    return "0x" + hashlib.md5(bytes([identifier]) + secret.encode() + challenge).hexdigest()


def chap_login(h: Harness, secret: str, mutual_challenge: bytes | None = None) -> list[Pdu]:
    base = [("InitiatorName", INITIATOR), ("TargetName", IQN), ("AuthMethod", "CHAP,None")]
    first = h.send(login_pdu(base, csg=0, nsg=1, transit=False))[0]
    assert status(first) == 0 and keys_of(first)["AuthMethod"] == "CHAP"
    assert keys_of(first)["TargetPortalGroupTag"] == "1"
    challenge = h.send(login_pdu([("CHAP_A", "7,5")], csg=0, nsg=1, transit=False))[0]
    keys = keys_of(challenge)
    assert keys["CHAP_A"] == "5"
    answer = [
        ("CHAP_N", "alice"),
        ("CHAP_R", md5_response(int(keys["CHAP_I"]), secret, decode_binary(keys["CHAP_C"]))),
    ]
    if mutual_challenge is not None:
        answer += [("CHAP_I", "9"), ("CHAP_C", "0x" + mutual_challenge.hex())]
    return h.send(login_pdu(answer, csg=0, nsg=1))


def test_chap_login_succeeds_and_moves_on() -> None:
    h = Harness.make(chap=ALICE)
    reply = chap_login(h, ALICE.secret)[0]
    assert status(reply) == 0
    assert reply.bhs[1] & 0x80  # transit to operational stage
    final = h.send(login_pdu([("MaxBurstLength", "65536")], csg=1, nsg=3, itt=3))[0]
    assert status(final) == 0 and keys_of(final)["MaxBurstLength"] == "65536"


def test_chap_wrong_secret_is_authentication_failure() -> None:
    h = Harness.make(chap=ALICE)
    reply = chap_login(h, "wrong-secret")[0]
    assert status(reply) == 0x0201
    assert h.closed


def test_chap_required_but_initiator_offers_none() -> None:
    h = Harness.make(chap=ALICE)
    keys = [("InitiatorName", INITIATOR), ("TargetName", IQN), ("AuthMethod", "None")]
    assert status(h.send(login_pdu(keys, csg=0, nsg=1))[0]) == 0x0201


def test_chap_required_but_initiator_skips_security() -> None:
    h = Harness.make(chap=ALICE)
    keys = [("InitiatorName", INITIATOR), ("TargetName", IQN)]
    assert status(h.send(login_pdu(keys, csg=1, nsg=3))[0]) == 0x0201


def test_mutual_chap() -> None:
    h = Harness.make(chap=ALICE, mutual=TARGET_CREDS)
    mine = b"initiator-challenge-16"
    reply = chap_login(h, ALICE.secret, mutual_challenge=mine)[0]
    assert status(reply) == 0
    keys = keys_of(reply)
    assert keys["CHAP_N"] == "tgt"
    assert keys["CHAP_R"] == md5_response(9, TARGET_CREDS.secret, mine)


def test_mutual_chap_required_but_not_requested() -> None:
    h = Harness.make(chap=ALICE, mutual=TARGET_CREDS)
    assert status(chap_login(h, ALICE.secret)[0]) == 0x0201


def test_reflected_challenge_is_refused() -> None:
    creds = ChapCredentials("u", "secret-123456")
    chap = ChapTarget(lambda user: creds, creds, random_bytes=lambda n: bytes(range(n)))
    keys = dict(chap.challenge("5"))
    ours = decode_binary(keys["CHAP_C"])
    response = md5_response(int(keys["CHAP_I"]), creds.secret, ours)
    with pytest.raises(ChapError):
        chap.verify({"CHAP_N": "u", "CHAP_R": response, "CHAP_I": "1", "CHAP_C": keys["CHAP_C"]})


def test_credentials_hide_secret() -> None:
    assert "alice-secret" not in repr(ALICE)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ([("TargetName", IQN)], 0x0207),  # no InitiatorName
        ([("InitiatorName", INITIATOR)], 0x0207),  # normal session without TargetName
        ([("InitiatorName", INITIATOR), ("TargetName", "iqn.2026-01.org.x:nope")], 0x0203),
        ([("InitiatorName", INITIATOR), ("SessionType", "Bogus")], 0x0209),
    ],
)
def test_login_failure_status(keys: list[tuple[str, str]], expected: int) -> None:
    h = Harness.make()
    reply = h.send(login_pdu(keys, csg=0, nsg=1))[0]
    assert reply.opcode == Op.LOGIN_RESPONSE
    assert status(reply) == expected
    assert h.closed


def test_unsupported_version() -> None:
    h = Harness.make()
    keys = [("InitiatorName", INITIATOR), ("TargetName", IQN)]
    assert status(h.send(login_pdu(keys, csg=0, nsg=1, version=(2, 1)))[0]) == 0x0205


def test_malformed_text_is_initiator_error() -> None:
    h = Harness.make()
    pdu = login_pdu([], csg=0, nsg=1)
    broken = Pdu(pdu.bhs, b"", b"InitiatorName\x00")
    assert status(h.send(broken)[0]) == 0x0200


def test_session_reinstatement_and_unknown_tsih() -> None:
    h = Harness.make()
    first = h.login()[0]
    tsih = struct.unpack_from(">H", first.bhs, 14)[0]
    h2 = Harness(h.target, h.backend, type(h.conn)(h.target, list_targets=h.target.target_names))
    second = h2.login()[0]
    assert status(second) == 0
    assert struct.unpack_from(">H", second.bhs, 14)[0] != tsih
    h3 = Harness(h.target, h.backend, type(h.conn)(h.target, list_targets=h.target.target_names))
    keys = [("InitiatorName", INITIATOR), ("TargetName", IQN), ("AuthMethod", "None")]
    assert status(h3.send(login_pdu(keys, csg=0, nsg=3, tsih=0x7777))[0]) == 0x020A


def test_digests_negotiated_and_used() -> None:
    h = Harness.make()
    reply = h.login(extra=[])
    assert keys_of(reply[0])["HeaderDigest"] == "None"
    h2 = Harness.make()
    keys = [
        ("InitiatorName", INITIATOR),
        ("TargetName", IQN),
        ("HeaderDigest", "CRC32C,None"),
        ("DataDigest", "CRC32C"),
    ]
    final = h2.send(login_pdu(keys, csg=1, nsg=3))[0]
    assert keys_of(final)["HeaderDigest"] == "CRC32C"
    from .initiator import nop_out

    echo = h2.send(nop_out(itt=5, cmd_sn=1, data=b"abc"), digests=True)
    assert echo[0].opcode == Op.NOP_IN and echo[0].data == b"abc"


def test_negotiation_rules() -> None:
    n = Negotiator(TargetLimits(), discovery=False)
    assert n.answer("MaxBurstLength", "16777215") == ("MaxBurstLength", "1048576")
    assert n.answer("FirstBurstLength", "512") == ("FirstBurstLength", "512")
    assert n.answer("InitialR2T", "No") == ("InitialR2T", "No")
    assert n.answer("ImmediateData", "No") == ("ImmediateData", "No")
    assert n.answer("DefaultTime2Wait", "0") == ("DefaultTime2Wait", "2")
    assert n.answer("ErrorRecoveryLevel", "2") == ("ErrorRecoveryLevel", "0")
    assert n.answer("MaxOutstandingR2T", "0") == ("MaxOutstandingR2T", "Reject")
    assert n.answer("DataPDUInOrder", "Maybe") == ("DataPDUInOrder", "Reject")
    assert n.answer("HeaderDigest", "MD5") == ("HeaderDigest", "Reject")
    assert n.answer("X-com.example.Foo", "1") == ("X-com.example.Foo", "NotUnderstood")
    assert n.answer("TargetAlias", "x") == ("TargetAlias", "Reject")
    assert n.answer("OFMarkInt", "1~65535") == ("OFMarkInt", "Irrelevant")
    assert n.answer("MaxRecvDataSegmentLength", "0x2000") is None
    params = n.finish()
    assert params.initiator_recv_data_segment_bytes == 8192
    assert not params.initial_r2t and not params.immediate_data
    d = Negotiator(TargetLimits(), discovery=True)
    assert d.answer("MaxBurstLength", "4096") == ("MaxBurstLength", "Irrelevant")


def test_text_codec() -> None:
    pairs = [("A", "1"), ("B.c", "x=y")]
    assert decode_text(encode_text(pairs)) == pairs
    assert decode_text(b"A=1\x00\x00\x00") == [("A", "1")]
    for bad in (b"A=1", b"A=1\x00A=2\x00", b"=1\x00", b"no-equals\x00", b"K\xff=1\x00"):
        with pytest.raises(TextError):
            decode_text(bad)
    with pytest.raises(TextError):
        decode_text(b"A=" + b"x" * 9000 + b"\x00")


def test_discovery_chap_with_a_target_credential() -> None:
    h = Harness.make(chap=ALICE)
    keys = [("InitiatorName", INITIATOR), ("SessionType", "Discovery"), ("AuthMethod", "CHAP")]
    first = h.send(login_pdu(keys, csg=0, nsg=1, transit=False))[0]
    assert keys_of(first)["AuthMethod"] == "CHAP"
    challenge = keys_of(h.send(login_pdu([("CHAP_A", "5")], csg=0, nsg=1, transit=False))[0])
    answer = [
        ("CHAP_N", "alice"),
        (
            "CHAP_R",
            md5_response(
                int(challenge["CHAP_I"]), ALICE.secret, decode_binary(challenge["CHAP_C"])
            ),
        ),
    ]
    assert status(h.send(login_pdu(answer, csg=0, nsg=3))[0]) == 0


def test_auth_method_and_chap_a_in_one_pdu() -> None:
    h = Harness.make(chap=ALICE)
    keys = [
        ("InitiatorName", INITIATOR),
        ("TargetName", IQN),
        ("AuthMethod", "CHAP"),
        ("CHAP_A", "5"),
    ]
    reply = keys_of(h.send(login_pdu(keys, csg=0, nsg=1, transit=False))[0])
    assert reply["AuthMethod"] == "CHAP" and reply["CHAP_A"] == "5" and "CHAP_C" in reply
    answer = [
        ("CHAP_N", "alice"),
        (
            "CHAP_R",
            md5_response(int(reply["CHAP_I"]), ALICE.secret, decode_binary(reply["CHAP_C"])),
        ),
    ]
    assert status(h.send(login_pdu(answer, csg=0, nsg=1))[0]) == 0
