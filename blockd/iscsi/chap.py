"""CHAP with MD5 for iSCSI login (RFC 1994, RFC 7143 12.1.3), including mutual CHAP.

The target sends CHAP_A/CHAP_I/CHAP_C; the initiator answers CHAP_N/CHAP_R, and for mutual CHAP
also sends its own CHAP_I/CHAP_C, which the target answers with CHAP_N/CHAP_R.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ChapCredentials", "ChapError", "ChapTarget", "chap_response", "decode_binary"]

CHAP_MD5 = "5"
CHALLENGE_BYTES = 16
CHALLENGE_BYTES_MAX = 1024
NAME_BYTES_MAX = 255


class ChapError(ValueError):
    """Authentication failed or the CHAP exchange was malformed."""


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """A CHAP user name and secret. The secret is never logged or shown in repr."""

    user: str
    secret: str

    def __post_init__(self) -> None:
        if not self.user or len(self.user.encode()) > NAME_BYTES_MAX:
            raise ValueError("CHAP user must be 1..255 bytes")
        if not self.secret or len(self.secret.encode()) > NAME_BYTES_MAX:
            raise ValueError("CHAP secret must be 1..255 bytes")

    def __repr__(self) -> str:
        return f"ChapCredentials(user={self.user!r}, secret=<hidden>)"


def decode_binary(value: str) -> bytes:
    """A CHAP binary value: ``0x`` hex or ``0b`` base64 (RFC 7143 6.1)."""
    try:
        if value[:2] in ("0x", "0X"):
            digits = value[2:]
            if len(digits) % 2:
                digits = "0" + digits
            return binascii.unhexlify(digits)
        if value[:2] in ("0b", "0B"):
            return base64.b64decode(value[2:], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ChapError("malformed binary value") from exc
    raise ChapError("binary value must start with 0x or 0b")


def encode_binary(value: bytes) -> str:
    return "0x" + value.hex()


def chap_response(identifier: int, secret: str, challenge: bytes) -> bytes:
    """MD5(identifier byte + secret + challenge)."""
    return hashlib.md5(bytes([identifier]) + secret.encode() + challenge).digest()


class ChapTarget:
    """One CHAP exchange on the target side.

    ``lookup(user)`` returns the credentials to check an initiator's name against (None for an
    unknown user); ``mutual`` are the target's own credentials for mutual CHAP, if required.
    """

    def __init__(
        self,
        lookup: Callable[[str], ChapCredentials | None],
        mutual: ChapCredentials | None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._lookup = lookup
        self._mutual = mutual
        self._random_bytes = random_bytes
        self._identifier = -1
        self._challenge = b""
        self.user: str | None = None

    def challenge(self, algorithms: str) -> list[tuple[str, str]]:
        """Answer CHAP_A with our challenge; MD5 (5) must be among the offered algorithms."""
        if CHAP_MD5 not in algorithms.split(","):
            raise ChapError(f"no supported CHAP algorithm in {algorithms!r}")
        self._identifier = self._random_bytes(1)[0]
        self._challenge = self._random_bytes(CHALLENGE_BYTES)
        return [
            ("CHAP_A", CHAP_MD5),
            ("CHAP_I", str(self._identifier)),
            ("CHAP_C", encode_binary(self._challenge)),
        ]

    def verify(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        """Check CHAP_N/CHAP_R; for mutual CHAP, return our CHAP_N/CHAP_R answer."""
        if self._identifier < 0:
            raise ChapError("CHAP response before a challenge")
        name, response = keys.get("CHAP_N"), keys.get("CHAP_R")
        if name is None or response is None:
            raise ChapError("CHAP_N and CHAP_R are required")
        creds = self._lookup(name)
        expected = chap_response(self._identifier, creds.secret if creds else "", self._challenge)
        if creds is None or not hmac.compare_digest(decode_binary(response), expected):
            raise ChapError("CHAP authentication failed")
        self.user = name
        return self._answer_mutual(keys)

    def _answer_mutual(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        their_id, their_challenge = keys.get("CHAP_I"), keys.get("CHAP_C")
        if their_id is None and their_challenge is None:
            if self._mutual is not None:
                raise ChapError("mutual CHAP is required but the initiator did not ask for it")
            return []
        if their_id is None or their_challenge is None or self._mutual is None:
            raise ChapError("mutual CHAP requested but not configured or incomplete")
        if not their_id.isdigit() or not 0 <= int(their_id) <= 255:
            raise ChapError("bad CHAP_I")
        challenge = decode_binary(their_challenge)
        if not challenge or len(challenge) > CHALLENGE_BYTES_MAX:
            raise ChapError("bad CHAP_C length")
        if challenge == self._challenge:
            raise ChapError("initiator reflected the target's challenge")
        answer = chap_response(int(their_id), self._mutual.secret, challenge)
        return [("CHAP_N", self._mutual.user), ("CHAP_R", encode_binary(answer))]
