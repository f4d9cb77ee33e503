"""Self-validating tempauth tokens (wire format version 1, see docs/auth.md).

A token is `<prefix>tk<payload>.<tag>`:

- `payload` is unpadded URL-safe base64 of a msgpack map
  `{"v": 1, "account": str, "user": str, "expires": int, "kf": bytes(8)}`;
- `tag` is unpadded URL-safe base64 of HMAC-SHA256(token key, `<prefix>tk<payload>`).

Any proxy worker holding the same secret validates a token without shared state: no
memcached, no database. `kf` is a fingerprint of the user's key, so changing a user's key in
the deployment file revokes that user's tokens. The tag is checked (in constant time) before
the payload is decoded, so nothing an attacker wrote is parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    from common.deploy import DeploymentConfig

__all__ = [
    "TOKEN_BYTES_MAX",
    "TOKEN_VERSION",
    "DeploymentTokens",
    "TokenClaims",
    "TokenCodec",
    "derive_secret",
]

TOKEN_VERSION = 1
# Real tokens are ~120 bytes; anything far bigger is garbage and is rejected unparsed.
TOKEN_BYTES_MAX = 1024
_KEY_FINGERPRINT_BYTES = 8
_TOKEN_KEY_LABEL = b"cairn tempauth token key v1"
_FINGERPRINT_LABEL = b"cairn tempauth user key fingerprint v1\x00"
_DERIVE_LABEL = b"cairn tempauth secret from hash path salt v1\x00"


def derive_secret(explicit: str, hash_path_prefix: str, hash_path_suffix: str) -> bytes:
    """The token signing secret: `explicit` if set, else one derived from the hash path salt.

    The hash path prefix/suffix are already a cluster-wide secret that every node shares, so a
    deployment works without configuring anything more; the derivation uses its own label, so
    the salt itself never leaves this function.
    """
    if explicit:
        return explicit.encode("utf-8")
    salt = hash_path_prefix.encode("utf-8") + b"\x00" + hash_path_suffix.encode("utf-8")
    return hmac.new(salt, _DERIVE_LABEL, hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
    return binascii.a2b_base64(padded.encode("ascii"), strict_mode=True)


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says: who it was issued to and until when."""

    account: str
    user: str
    expires: int
    key_fingerprint: bytes


class TokenCodec:
    """Mints and verifies tokens with one secret; holds no per-token state."""

    def __init__(self, secret: bytes, prefix: str) -> None:
        if not secret:
            raise ValueError("the tempauth token secret must not be empty")
        self._key = hmac.new(secret, _TOKEN_KEY_LABEL, hashlib.sha256).digest()
        self.token_prefix = prefix + "tk"

    def __repr__(self) -> str:
        return f"TokenCodec(prefix={self.token_prefix!r})"

    def key_fingerprint(self, account_user: str, key: str) -> bytes:
        msg = _FINGERPRINT_LABEL + account_user.encode("utf-8") + b"\x00" + key.encode("utf-8")
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:_KEY_FINGERPRINT_BYTES]

    def _tag(self, signed: str) -> str:
        return _b64encode(hmac.new(self._key, signed.encode("ascii"), hashlib.sha256).digest())

    def mint(self, claims: TokenClaims) -> str:
        assert len(claims.key_fingerprint) == _KEY_FINGERPRINT_BYTES
        body = {
            "v": TOKEN_VERSION,
            "account": claims.account,
            "user": claims.user,
            "expires": claims.expires,
            "kf": claims.key_fingerprint,
        }
        signed = self.token_prefix + _b64encode(msgpack.packb(body, use_bin_type=True))
        token = signed + "." + self._tag(signed)
        assert len(token) <= TOKEN_BYTES_MAX, "account or user name too long for a token"
        return token

    def verify(self, token: str, now: float) -> TokenClaims | None:
        """The claims of a genuine, unexpired token; None for anything else."""
        if len(token) > TOKEN_BYTES_MAX or not token.startswith(self.token_prefix):
            return None
        signed, dot, tag = token.rpartition(".")
        if not dot or not tag.isascii() or not signed.isascii():
            return None
        if not hmac.compare_digest(self._tag(signed).encode(), tag.encode()):
            return None
        claims = _decode_claims(signed[len(self.token_prefix) :])
        if claims is None or now >= claims.expires:
            return None
        return claims


def _decode_claims(payload: str) -> TokenClaims | None:
    # Only reached with a valid tag, i.e. for bytes we wrote; still check every field, the
    # way a record is validated right after it is read back.
    try:
        body = msgpack.unpackb(_b64decode(payload), raw=False, strict_map_key=True)
    except (ValueError, binascii.Error, msgpack.ExtraData, msgpack.FormatError):
        return None
    if not isinstance(body, dict) or body.get("v") != TOKEN_VERSION:
        return None
    account, user = body.get("account"), body.get("user")
    expires, kf = body.get("expires"), body.get("kf")
    if not (isinstance(account, str) and isinstance(user, str) and isinstance(kf, bytes)):
        return None
    if isinstance(expires, bool) or not isinstance(expires, int):
        return None
    return TokenClaims(account, user, expires, kf)


class DeploymentTokens:
    """Verifies tempauth tokens for any service of a deployment (the proxy, blockd, ...).

    A token is good when its tag verifies with the deployment's secret, it has not expired,
    its user is still configured and that user's key has not changed since it was issued.
    """

    def __init__(self, users: dict[str, str], secret: bytes, reseller_prefix: str) -> None:
        self._users = users  # "account:user" -> key
        self.codec = TokenCodec(secret, reseller_prefix)
        self.reseller_prefix = reseller_prefix

    @classmethod
    def from_deployment(cls, deployment: DeploymentConfig) -> DeploymentTokens:
        ta, cluster = deployment.tempauth, deployment.cluster
        secret = derive_secret(ta.secret, cluster.hash_path_prefix, cluster.hash_path_suffix)
        users = {f"{u.account}:{u.user}": u.key for u in ta.users}
        prefix = (ta.reseller_prefixes[0] if ta.reseller_prefixes else "AUTH_").strip()
        if not prefix.endswith("_"):
            prefix += "_"  # as tempauth does: "AUTH" means "AUTH_"
        return cls(users, secret, prefix)

    def verify(self, token: str, now: float) -> TokenClaims | None:
        claims = self.codec.verify(token, now)
        if claims is None:
            return None
        key = self._users.get(f"{claims.account}:{claims.user}")
        if key is None:
            return None  # removed from the deployment file since the token was issued
        fingerprint = self.codec.key_fingerprint(f"{claims.account}:{claims.user}", key)
        if not hmac.compare_digest(fingerprint, claims.key_fingerprint):
            return None  # the user's key changed: old tokens die with it
        return claims

    def storage_account(self, claims: TokenClaims) -> str:
        """The account a token's user owns, e.g. "AUTH_test" (the Swift/volume project id)."""
        return self.reseller_prefix + claims.account
